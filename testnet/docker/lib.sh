# Shared by the compose testnet scripts (sourced, not run): the compose command, running deltafed
# in a member's container, copying files in and out, failure reports with the containers' logs.
# The helpers that do not depend on docker (output, JSON checks, waits that poll a condition with
# a deadline, the federation's conditions) are in testnet/lib.sh, sourced first.
#
# Settings (environment):
#   DELTAFED_IMAGE            image for every service (default deltafed:dev)
#   DELTAFED_COMPOSE_PROJECT  compose project name (default deltafed)
#   DELTAFED_WAIT             seconds for each wait that has no more specific deadline (default 90)

TESTNET_DOCKER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib.sh
source "$TESTNET_DOCKER_DIR/../lib.sh"
COMPOSE_FILE="$REPO_ROOT/testnet/docker-compose.yml"
export DELTAFED_IMAGE="${DELTAFED_IMAGE:-deltafed:dev}"
PROJECT="${DELTAFED_COMPOSE_PROJECT:-deltafed}"
WAIT="${DELTAFED_WAIT:-90}"
WAIT_POLL=0.3

# ---- failure -------------------------------------------------------------------------------

show_logs() {
  local svc id
  for svc in "${MEMBERS[@]}" ${EXTRA_LOG_SERVICES:-}; do
    id=$(compose --profile intruder ps -a -q "$svc" 2>/dev/null | head -n 1) || continue
    [ -n "$id" ] || continue
    echo "--- last lines of $svc's log (docker logs $id):"
    docker logs --tail "${LOG_LINES:-15}" "$id" 2>&1 | sed 's/^/    /'
  done
}

# ---- tools ---------------------------------------------------------------------------------

command -v docker >/dev/null 2>&1 || NO_LOGS=1 die "docker is not installed"
if docker compose version >/dev/null 2>&1; then
  COMPOSE_CMD=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE_CMD=(docker-compose)
else
  NO_LOGS=1 die "neither \`docker compose\` nor \`docker-compose\` is installed"
fi

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

# has_file SERVICE PATH: the path exists in the service's container.
has_file() { docker cp "$(cid "$1"):$2" - >/dev/null 2>&1; }

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
