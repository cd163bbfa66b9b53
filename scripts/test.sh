#!/usr/bin/env bash
# The whole test suite, as CI runs it: prerequisites, formatting, lints, the protocol crate's
# dependency boundary, then every test (unit, protocol vectors, CLI, multi-node integration), then
# the independent Python checks of the vectors and of the provenance export verifier. Then the
# benchmark suite in quick mode, and, when a Docker engine answers, the compose testnet
# (testnet/docker/all.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse one build cache across clones (CI builds in a fresh clone each time).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/deltafed-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

suite_start=$(date +%s)
bash scripts/prereqs.sh

start=$(date +%s)
echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== protocol crate stays pure (no tokio, libp2p or rocksdb)"
if cargo tree -p deltafed-protocol -e normal --prefix none --locked | grep -E '^(tokio|libp2p|rocksdb|librocksdb-sys) ' ; then
  echo "error: deltafed-protocol depends on an I/O crate (listed above)" >&2
  exit 1
fi

echo "== cargo test"
cargo test --workspace --locked

# The same bytes checked again without the Rust code: the vectors against docs/protocol.md, and
# the auditor's export verifier against tampered exports (cbor2, PyNaCl, blake3; pip when missing).
echo "== protocol vectors and export verifier, independently (python3 scripts/check-vectors.py, test-verify-export.py)"
bash scripts/python-deps.sh
python3 scripts/check-vectors.py
python3 scripts/test-verify-export.py

# The deployment files, offline: Kubernetes manifests against the API schemas, the members'
# configs through the init container's command, the systemd unit through systemd-analyze.
echo "== deploy/: Kubernetes manifests and the systemd unit (scripts/check-deploy.sh)"
bash scripts/check-deploy.sh

# Fuzzing, a fixed short budget per target from the committed corpus (fuzz/README.md for longer
# runs; DELTAFED_FUZZ_SECONDS sets the budget, 0 skips). Its own target dir and lock file.
echo "== fuzzing, ${DELTAFED_FUZZ_SECONDS:-20}s per target (scripts/fuzz.sh)"
bash scripts/fuzz.sh

# The quick benchmarks and the compose testnet need the static release build. Cold, it compiles
# RocksDB's C++ a second time (measured on a fresh 2-core machine: ~40 min, against ~30 min for
# everything above). When the build cache is cold and what is left of CI's time budget
# (DELTAFED_CI_MINUTES, default 90) would not cover it, say so and stop here rather than be cut
# off: the tests above have all run; `make bench` and `make testnet-docker` run the rest.
elapsed=$(( $(date +%s) - suite_start ))
budget=$(( ${DELTAFED_CI_MINUTES:-90} * 60 ))
# The release build links the debug build's RocksDB (scripts/rocksdb-env.sh), so what is left to
# build cold is the Rust code in release mode: about a third of the time spent so far.
if [ ! -x "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/deltafed" ] \
  && [ $(( elapsed * 14 / 10 )) -gt $(( budget * 95 / 100 )) ]; then
  echo "== skipped the quick benchmarks and the compose testnet: the static release build is not cached,"
  echo "   and building it cold (~0.4x the $(( elapsed / 60 )) min spent so far) would overrun the ${DELTAFED_CI_MINUTES:-90} min budget."
  echo "   Every test above passed. Run \`make bench\` and \`make testnet-docker\` (or this script again) to run them."
  echo "== done in $(( $(date +%s) - start ))s"
  exit 0
fi

echo "== benchmarks, quick mode (release build; figures are not asserted, the code paths are)"
bench_start=$(date +%s)
bash scripts/bench.sh --quick --out "$CARGO_TARGET_DIR/bench-quick.json"
echo "== benchmarks done in $(( $(date +%s) - bench_start ))s"

echo "== docker compose testnet: up, scenario, faults, down (testnet/docker/all.sh)"
# Runs whenever a Docker engine answers. The compose project and the image tag are named after
# this work tree, so neither a developer's federation nor a run from another clone on the same
# machine is touched; the image is removed afterwards. The static release build reuses the cache.
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  docker_start=$(date +%s)
  tree_id=$(pwd -P | sha256sum | cut -c1-8)
  docker_rc=0
  DELTAFED_COMPOSE_PROJECT="${DELTAFED_COMPOSE_PROJECT:-deltafed-ci-$tree_id}" \
    DELTAFED_IMAGE="${DELTAFED_IMAGE:-deltafed:ci-$tree_id}" bash testnet/docker/all.sh || docker_rc=$?
  [ -n "${DELTAFED_IMAGE:-}" ] || docker image rm "deltafed:ci-$tree_id" >/dev/null 2>&1 || true
  echo "== docker compose testnet done in $(( $(date +%s) - docker_start ))s"
  [ "$docker_rc" = 0 ] || exit "$docker_rc"
else
  echo "docker: no engine answers; skipped the compose scenarios"
fi

echo "== done in $(( $(date +%s) - start ))s"
