#!/usr/bin/env bash
# The whole compose testnet run, as CI runs it: down (leftovers of an interrupted run), up from
# nothing, the scenario, every fault, and down again, which always runs, also after a failure.
# Prints how long each stage took. Exit status: that of the first stage that failed.
#
#   testnet/docker/all.sh          # or: make testnet-docker
set -uo pipefail
cd "$(dirname "$0")" || exit 1

now_ms() { date +%s%3N; }
secs() { local ms=$(( $(now_ms) - $1 )); printf '%d.%ds' $(( ms / 1000 )) $(( ms % 1000 / 100 )); }
summary=()
start=$(now_ms)

stage() {
  local name=$1 t rc=0
  shift
  echo
  echo "==== testnet: $name"
  t=$(now_ms)
  "$@" || rc=$?
  summary+=("$name $(secs "$t") $([ "$rc" = 0 ] && echo OK || echo "FAILED (exit status $rc)")")
  return "$rc"
}

down_at_exit() {
  local rc=$? s
  trap - EXIT INT TERM
  stage down bash ./down.sh || rc=${rc/#0/1}
  echo
  echo "==== testnet: summary"
  for s in "${summary[@]}"; do echo "   $s"; done
  echo "   total $(secs "$start")"
  exit "$rc"
}

stage "down (leftovers)" bash ./down.sh || exit 1
trap down_at_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
stage up bash ./up.sh || exit 1
stage scenario bash ./scenario.sh || exit 1
stage faults bash ./faults.sh || exit 1
