# Shared by the federation scripts whatever runs the nodes (sourced, not run): output, failure
# reports, running deltafed as a member, JSON checks, and waits that poll a condition with a
# deadline. A runner sourced after it says how a member's deltafed is reached:
#
#   dx MEMBER ARGS...        runs deltafed as MEMBER (required)
#   show_cmd MEMBER ARGS...  prints the command line shown before it runs (default: [MEMBER] $ deltafed ARGS)
#   show_logs                prints the nodes' last log lines; called when the script fails
#   wait_hook                called between the attempts of every wait (e.g. nodes still alive?)
#
# testnet/local.sh runs `deltafed` processes on this machine, testnet/docker/lib.sh runs them in
# the compose federation's containers (`docker exec`).
#
# Settings (environment): POLL, the pause between a wait's attempts (default WAIT_POLL, which a
# runner sets; 0.3 s otherwise).

set -Eeuo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MEMBERS=(shanghai jiangsu zhejiang anhui)
SCRIPT_NAME=${SCRIPT_NAME:-$(basename "$0" .sh)}
WAIT_POLL=0.3

now_ms() { date +%s%3N; }
SCRIPT_START_MS=$(now_ms)
secs_since() { local ms=$(( $(now_ms) - $1 )); printf '%d.%ds' $(( ms / 1000 )) $(( ms % 1000 / 100 )); }

step() { printf '\n== %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }

# ---- failure -------------------------------------------------------------------------------

FAILED=0
die() {
  FAILED=1
  {
    echo
    echo "$SCRIPT_NAME: FAILED: $1"
    [ -z "${2:-}" ] || printf '%s\n' "${2%$'\n'}" | sed 's/^/    /'
    if [ "${NO_LOGS:-0}" != 1 ] && declare -F show_logs >/dev/null; then show_logs || true; fi
  } >&2
  exit 1
}

on_err() {
  local rc=$1 line=$2 cmd=$3
  # In a subshell the failure reaches the main shell as an exit status; report it only there.
  [ "$BASHPID" = "$$" ] || return 0
  [ "$FAILED" = 0 ] || return 0
  die "line $line of $(basename "${BASH_SOURCE[1]:-$0}"): \`$cmd\` exited with status $rc"
}
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR

finish() { echo; echo "$SCRIPT_NAME: OK ($(secs_since "$SCRIPT_START_MS"))"; }

# ---- tools ---------------------------------------------------------------------------------

command -v python3 >/dev/null 2>&1 || NO_LOGS=1 die "python3 is needed (it reads the JSON deltafed prints); install it and run this again"
# The interpreter itself, not a version manager's shim (a shim costs ~0.1 s a call, every poll).
PYTHON=$(python3 -c 'import sys; print(sys.executable)') && [ -x "$PYTHON" ] || PYTHON=python3

# Shell-quotes arguments for display only where needed.
fmt_args() {
  local out="" a
  for a in "$@"; do
    if [[ -n $a && ! $a =~ [^[:alnum:]_./:@,=+%-] ]]; then out+=" $a"; else out+=" '${a//\'/\'\\\'\'}'"; fi
  done
  printf '%s' "${out# }"
}

# show_cmd MEMBER ARGS...: the line printed before deltafed runs as MEMBER (a runner may redefine it).
show_cmd() { local svc=$1; shift; echo "[$svc] \$ deltafed $(fmt_args "$@")"; }

# run MEMBER ARGS...: shows and runs deltafed as MEMBER; fails the script when it fails.
run() {
  local svc=$1; shift
  show_cmd "$svc" "$@"
  local rc=0
  dx "$svc" "$@" || rc=$?
  [ "$rc" = 0 ] || die "[$svc] \`deltafed $(fmt_args "$@")\` exited with status $rc"
}

# run_json VAR MEMBER ARGS...: like run with --json; the document is kept in VAR and shown.
run_json() {
  local __var=$1 svc=$2; shift 2
  show_cmd "$svc" "$@" --json
  local __out __rc=0
  __out=$(dx "$svc" "$@" --json 2>&1) || __rc=$?
  [ "$__rc" = 0 ] || die "[$svc] \`deltafed $(fmt_args "$@") --json\` exited with status $__rc" "$__out"
  printf '%s\n' "$__out"
  printf -v "$__var" '%s' "$__out"
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
# pause between attempts (default WAIT_POLL). With NO_DIE=1 it returns 1 at the deadline instead.
LAST=""
wait_for() {
  local limit=$1 desc=$2; shift 2
  local deadline=$(( $(now_ms) + limit * 1000 ))
  LAST=""
  until "$@"; do
    if declare -F wait_hook >/dev/null; then wait_hook; fi
    if (( $(now_ms) >= deadline )); then
      [ "${NO_DIE:-0}" = 0 ] || return 1
      die "timed out after ${limit}s waiting for $desc" "${LAST:-}"
    fi
    sleep "${POLL:-$WAIT_POLL}"
  done
}

# connected_of MEMBER: MEMBER's `status --json` `connected`, sorted (a JSON list).
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

# catalog_has MEMBER PUBLISHER DATASET VERSION [CONTENT_HASH]
catalog_has() {
  local cat hash_cond=""
  [ -z "${5:-}" ] || hash_cond=" and c['content_hash'] == '$5'"
  cat=$(dx "$1" catalog --json 2>&1) || { LAST="$1: $cat"; return 1; }
  json "any(c['publisher'] == '$2' and c['dataset'] == '$3' and c['version'] == $4$hash_cond for c in d)" "$cat" >/dev/null \
    || { LAST="$1's catalog has no $2/$3@$4${5:+ with hash $5}: $cat"; return 1; }
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
