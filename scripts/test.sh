#!/usr/bin/env bash
# The whole test suite, as CI runs it: prerequisites, formatting, lints, the protocol crate's
# dependency boundary, then every test (unit, protocol vectors, CLI, multi-node integration).
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse one build cache across clones (CI builds in a fresh clone each time).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/deltafed-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

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

echo "== done in $(( $(date +%s) - start ))s"
