#!/usr/bin/env bash
# Brings the four-province federation up under docker compose, from nothing: the static release
# build and the image (deploy/build-image.sh), keys and roster (the compose `init` service: `deltafed
# testnet init --docker` into the `federation` volume), the four nodes, then waits until every node
# reports the other three connected. Run again on a running or stopped federation, it rebuilds the
# image if the code changed and (re)starts the nodes with the keys they have.
#
#   testnet/docker/up.sh                    # or: make testnet-up
#   DELTAFED_SKIP_BUILD=1 testnet/docker/up.sh   # use the image DELTAFED_IMAGE as it is
source "$(dirname "$0")/lib.sh"
require_engine

step "1. The image ($DELTAFED_IMAGE)"
t=$(now_ms)
if [ "${DELTAFED_SKIP_BUILD:-0}" = 1 ]; then
  docker image inspect "$DELTAFED_IMAGE" >/dev/null 2>&1 \
    || die "DELTAFED_SKIP_BUILD=1, but there is no image $DELTAFED_IMAGE; run without it to build one"
  note "DELTAFED_SKIP_BUILD=1: using $DELTAFED_IMAGE as it is"
else
  NO_LOGS=1
  bash "$REPO_ROOT/deploy/build-image.sh" "$DELTAFED_IMAGE" >/dev/null || die "deploy/build-image.sh failed (see above)"
  NO_LOGS=0
fi
IMAGE_S=$(secs_since "$t")
note "image $DELTAFED_IMAGE ready ($(docker image inspect -f '{{.Size}}' "$DELTAFED_IMAGE" | awk '{printf "%.1f MB", $1/1e6}')) after $IMAGE_S"

step "2. Keys, roster and the four nodes (compose project $PROJECT)"
t=$(now_ms)
# `init` never overwrites a key, so it runs only on a fresh volume; a volume that already holds a
# federation keeps its keys and only the nodes are (re)started.
initialized=0
if docker volume inspect "${PROJECT}_federation" >/dev/null 2>&1; then
  if compose run --rm --no-deps -T init roster show /data/shanghai/roster.cbor >/dev/null 2>&1; then
    initialized=1
  else
    NO_LOGS=1 die "the volume ${PROJECT}_federation exists but holds no federation (an earlier init failed?); remove it with make testnet-down and run this again"
  fi
fi
if [ "$initialized" = 1 ]; then
  note "the volume ${PROJECT}_federation already holds the federation's keys; starting the nodes"
  echo "\$ testnet/docker/compose.sh up -d --no-deps ${MEMBERS[*]}"
  compose up -d --no-deps "${MEMBERS[@]}" || die "compose up failed (see above)"
else
  echo "\$ testnet/docker/compose.sh up -d     # init (deltafed testnet init --docker), then the four nodes"
  compose up -d || die "compose up failed (see above)"
  init_id=$(compose ps -a -q init)
  [ "$(docker inspect -f '{{.State.ExitCode}}' "$init_id")" = 0 ] \
    || die "the init service failed" "$(docker logs "$init_id" 2>&1)"
  docker logs "$init_id" 2>&1 | sed 's/^/   init: /'
fi

load_cids
note "waiting until every node lists the other three as connected (at most ${WAIT}s)..."
wait_for "$WAIT" "all four nodes to connect to each other" all_connected
note "all connected $(secs_since "$t") after compose up:"
printf '%s' "$LAST" | sed 's/^/     /'
for m in "${MEMBERS[@]}"; do
  ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$(cid "$m")")
  note "$m: container $(cid "$m" | cut -c1-12), address ${ip% }"
done
run zhejiang status

echo
echo "The federation is up. Try:"
echo "  testnet/docker/compose.sh exec zhejiang /deltafed status"
echo "  make testnet-scenario   make testnet-faults   make testnet-down"
finish
