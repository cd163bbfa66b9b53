# Shared by the compose testnet scripts (sourced, not run): the compose command, running deltafed
# in a member's container, JSON checks, waits that poll a condition with a deadline, failure
# reports with the containers' logs.
#
# Settings (environment):
#   DELTAFED_IMAGE            image for every service (default deltafed:dev)
#   DELTAFED_COMPOSE_PROJECT  compose project name (default deltafed)
#   DELTAFED_WAIT             seconds for each wait that has no more specific deadline (default 90)

set -Eeuo pipefail

TESTNET_DOCKER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$TESTNET_DOCKER_DIR/../.." && pwd)
COMPOSE_FILE="$REPO_ROOT/testnet/docker-compose.yml"
export DELTAFED_IMAGE="${DELTAFED_IMAGE:-deltafed:dev}"
PROJECT="${DELTAFED_COMPOSE_PROJECT:-deltafed}"
WAIT="${DELTAFED_WAIT:-90}"
MEMBERS=(shanghai jiangsu zhejiang anhui)
SCRIPT_NAME=$(basename "$0" .sh)

now_ms() { date +%s%3N; }
SCRIPT_START_MS=$(now_ms)
secs_since() { local ms=$(( $(now_ms) - $1 )); printf '%d.%ds' $(( ms / 1000 )) $(( ms % 1000 / 100 )); }

step() { printf '\n== %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }

# ---- failure -------------------------------------------------------------------------------

FAILED=0
show_logs() {
  local svc id
  for svc in "${MEMBERS[@]}" ${EXTRA_LOG_SERVICES:-}; do
    id=$(compose --profile intruder ps -a -q "$svc" 2>/dev/null | head -n 1) || continue
    [ -n "$id" ] || continue
    echo "--- last lines of $svc's log (docker logs $id):"
    docker logs --tail "${LOG_LINES:-15}" "$id" 2>&1 | sed 's/^/    /'
  done
}

die() {
  FAILED=1
  {
    echo
    echo "$SCRIPT_NAME: FAILED: $1"
    [ -z "${2:-}" ] || printf '%s\n' "${2%$'\n'}" | sed 's/^/    /'
    [ "${NO_LOGS:-0}" = 1 ] || show_logs
  } >&2
  exit 1
}

on_err() {
  local rc=$1 line=$2 cmd=$3
  [ "$BASHPID" = "$$" ] || return 0
  [ "$FAILED" = 0 ] || return 0
  die "line $line of $(basename "${BASH_SOURCE[1]:-$0}"): \`$cmd\` exited with status $rc"
}
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR

# ---- tools ---------------------------------------------------------------------------------

command -v docker >/dev/null 2>&1 || die "docker is not installed"
if docker compose version >/dev/null 2>&1; then
  COMPOSE_CMD=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE_CMD=(docker-compose)
else
  NO_LOGS=1 die "neither \`docker compose\` nor \`docker-compose\` is installed"
fi
command -v python3 >/dev/null 2>&1 || NO_LOGS=1 die "python3 is needed (it reads the JSON deltafed prints)"
PYTHON=$(python3 -c 'import sys; print(sys.executable)')

compose() { "${COMPOSE_CMD[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" "$@"; }

require_engine() {
  docker info >/dev/null 2>&1 || NO_LOGS=1 die "no Docker engine answers (\`docker info\` failed); start dockerd or set DOCKER_HOST"
}

# ---- containers ----------------------------------------------------------------------------

# load_cids [SERVICE...]: looks up the services' container ids once (default: the four members),
# in the main shell so the cache is shared; ids survive stop, start and kill.
declare -A CID=()
load_cids() {
  local svc id
  [ $# -gt 0 ] || set -- "${MEMBERS[@]}"
  for svc in "$@"; do
    id=$(compose --profile intruder ps -a -q "$svc" 2>"${TMPDIR:-/tmp}/deltafed-ps.$$") || true
    id=$(head -n 1 <<<"$id")
    if [ -z "$id" ]; then
      local err
      err=$(cat "${TMPDIR:-/tmp}/deltafed-ps.$$" 2>/dev/null)
      rm -f "${TMPDIR:-/tmp}/deltafed-ps.$$"
      die "no container for $svc in compose project $PROJECT; bring the federation up first (make testnet-up)" "$err"
    fi
    CID[$svc]=$id
  done
  rm -f "${TMPDIR:-/tmp}/deltafed-ps.$$"
}
# cid SERVICE: the container id looked up by load_cids.
cid() {
  [ -n "${CID[$1]:-}" ] || { echo "internal error: no container id loaded for $1" >&2; return 1; }
  printf '%s' "${CID[$1]}"
}
forget_cids() { CID=(); }

container_state() { docker inspect -f '{{.State.Status}}' "$1" 2>/dev/null || echo missing; }

# The compose network the members are on (PROJECT_yrd, looked up rather than guessed).
network_name() {
  local n
  n=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{"\n"}}{{end}}' "$(cid zhejiang)" | grep -E '_yrd$' | head -n 1)
  [ -n "$n" ] || die "zhejiang's container is on no *_yrd network"
  printf '%s' "$n"
}

# dx SERVICE ARGS...: deltafed in the service's container (docker exec: the same as
# `docker compose exec -T SERVICE /deltafed ARGS...`, without compose's start-up cost per call).
dx() { local svc=$1; shift; docker exec "$(cid "$svc")" /deltafed "$@"; }

# Shell-quotes arguments for display only where needed.
fmt_args() {
  local out="" a
  for a in "$@"; do
    if [[ -n $a && ! $a =~ [^[:alnum:]_./:@,=+%-] ]]; then out+=" $a"; else out+=" '${a//\'/\'\\\'\'}'"; fi
  done
  printf '%s' "${out# }"
}

# run SERVICE ARGS...: shows and runs deltafed in SERVICE; fails the script when it fails.
run() {
  local svc=$1; shift
  echo "[$svc] \$ deltafed $(fmt_args "$@")"
  local rc=0
  dx "$svc" "$@" || rc=$?
  [ "$rc" = 0 ] || die "[$svc] \`deltafed $(fmt_args "$@")\` exited with status $rc"
}

# run_json VAR SERVICE ARGS...: like run with --json; the document is kept in VAR and shown.
run_json() {
  local __var=$1 svc=$2; shift 2
  echo "[$svc] \$ deltafed $(fmt_args "$@") --json"
  local __out __rc=0
  __out=$(dx "$svc" "$@" --json 2>&1) || __rc=$?
  [ "$__rc" = 0 ] || die "[$svc] \`deltafed $(fmt_args "$@") --json\` exited with status $__rc" "$__out"
  printf '%s\n' "$__out"
  printf -v "$__var" '%s' "$__out"
}

# put_file SERVICE HOST_FILE DEST_DIR [NAME]: copies a file into a container, owned by the
# container user (uid 10001) and readable: a tar stream keeps the owner it names, whatever the
# host file's owner and mode (there is no shell in the image to chown it afterwards).
put_file() {
  local svc=$1 src=$2 dest=$3 name=${4:-$(basename "$2")} tmp
  tmp=$(mktemp -d)
  cp "$src" "$tmp/$name"
  tar -C "$tmp" -c --owner=10001 --group=10001 --numeric-owner --mode=0644 -f - "$name" | docker cp - "$(cid "$svc"):$dest"
  rm -rf "$tmp"
}

# get_file SERVICE PATH HOST_FILE: copies a file out of a container.
get_file() {
  local svc=$1 path=$2 out=$3 tmp
  tmp=$(mktemp -d)
  docker cp "$(cid "$svc"):$path" - | tar -C "$tmp" -xf -
  mv "$tmp/$(basename "$path")" "$out"
  rm -rf "$tmp"
}

# json PY_EXPR JSON: evaluates a Python expression over the parsed document `d`; prints the result
# (JSON for lists and dicts). Exit status 1 when the expression is false or None.
json() {
  "$PYTHON" -c '
import json, sys
d = json.loads(sys.argv[2])
r = eval(sys.argv[1])
if r is None or r is False:
    sys.exit(1)
print(json.dumps(r) if isinstance(r, (list, dict)) else r)' "$1" "$2"
}

# ---- waiting -------------------------------------------------------------------------------

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds, at most SECONDS.
# COMMAND may set LAST to describe what it saw; it is shown when the deadline passes. POLL is the
# pause between attempts (default 0.3 s). With NO_DIE=1 it returns 1 at the deadline instead.
LAST=""
wait_for() {
  local limit=$1 desc=$2; shift 2
  local deadline=$(( $(now_ms) + limit * 1000 ))
  LAST=""
  until "$@"; do
    if (( $(now_ms) >= deadline )); then
      [ "${NO_DIE:-0}" = 0 ] || return 1
      die "timed out after ${limit}s waiting for $desc" "${LAST:-}"
    fi
    sleep "${POLL:-0.3}"
  done
}

# connected_ok MEMBER WANT...: MEMBER's `status --json` lists every WANT as connected.
# connected_ok MEMBER --without X: ... and does not list X.
connected_of() {
  local st
  st=$(dx "$1" status --json 2>&1) || { LAST+="$1: ${st:-status failed}"$'\n'; return 1; }
  json 'sorted(d["connected"])' "$st"
}

# all_connected [MEMBER...]: each of the MEMBERs (default: all four) lists the others as connected.
all_connected() {
  local set=("$@") m have ok=0
  [ ${#set[@]} -gt 0 ] || set=("${MEMBERS[@]}")
  LAST=""
  for m in "${set[@]}"; do
    have=$(connected_of "$m") || { ok=1; continue; }
    LAST+="$m connected: $have"$'\n'
    "$PYTHON" -c '
import json, sys
have = set(json.loads(sys.argv[1])); want = set(sys.argv[3:]) - {sys.argv[2]}
sys.exit(0 if want <= have else 1)' "$have" "$m" "${set[@]}" || ok=1
  done
  return $ok
}

# nobody_connected_to X: no member other than X lists X, and X lists nobody.
nobody_connected_to() {
  local x=$1 m have ok=0
  LAST=""
  for m in "${MEMBERS[@]}"; do
    have=$(connected_of "$m") || { ok=1; continue; }
    LAST+="$m connected: $have"$'\n'
    if [ "$m" = "$x" ]; then
      [ "$have" = "[]" ] || ok=1
    else
      json "'$x' not in d" "$have" >/dev/null || ok=1
    fi
  done
  return $ok
}

# catalog_has MEMBER PUBLISHER DATASET VERSION
catalog_has() {
  local cat
  cat=$(dx "$1" catalog --json 2>&1) || { LAST="$1: $cat"; return 1; }
  json "any(c['publisher'] == '$2' and c['dataset'] == '$3' and c['version'] == $4 for c in d)" "$cat" >/dev/null \
    || { LAST="$1's catalog has no $2/$3@$4: $cat"; return 1; }
}

# all_have MEMBERS_CSV PUBLISHER DATASET VERSION
all_have() {
  local m ok=0 last=""
  for m in ${1//,/ }; do
    catalog_has "$m" "$2" "$3" "$4" || { ok=1; last+="$LAST"$'\n'; }
  done
  LAST=$last
  return $ok
}

# grant_state MEMBER GRANT_ID true|false: MEMBER's `grants --json` has GRANT_ID with revoked == that.
grant_state() {
  local gs
  gs=$(dx "$1" grants --json 2>&1) || { LAST="$1: $gs"; return 1; }
  json "any(g['grant_id'] == '$2' and g['revoked'] == ('$3' == 'true') for g in d)" "$gs" >/dev/null \
    || { LAST="$1's grants: $gs"; return 1; }
}

# request_state MEMBER REQUEST_ID STATE
request_state() {
  local rs
  rs=$(dx "$1" requests --json 2>&1) || { LAST="$1: $rs"; return 1; }
  json "any(r['request_id'] == '$2' and r['state'] == '$3' for r in d)" "$rs" >/dev/null \
    || { LAST="$1's requests: $rs"; return 1; }
}

# Every node up and connected to the other three, else a pointer to `make testnet-up`.
require_federation() {
  local m
  load_cids
  for m in "${MEMBERS[@]}"; do
    [ "$(container_state "$(cid "$m")")" = running ] \
      || die "$m's container is not running; bring the federation up with make testnet-up"
  done
  wait_for "$WAIT" "all four members to be connected to each other" all_connected
}

finish() { echo; echo "$SCRIPT_NAME: OK ($(secs_since "$SCRIPT_START_MS"))"; }
