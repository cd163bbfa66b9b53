#!/usr/bin/env bash
# `make bench`: builds in release mode and runs the benchmark suite, which prints one table (each
# figure with the baseline measured in the same run, the ratio, the target and whether it is
# met) and writes it as JSON (default bench-results/bench.json; --out FILE to change).
# `--quick` uses small sizes (CI runs it so the suite never rots); `--only bulk,queries,...`
# runs some rows. The release build is the same static build as the container image, so one
# build cache serves both.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/deltafed-target}"
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR" ;; esac
BIN=$(bash scripts/build-static.sh | tail -n 1)
# The flags and RocksDB build build-static.sh uses, so nothing is rebuilt for the bench binary's
# dependencies.
# shellcheck source=scripts/rocksdb-env.sh
. scripts/rocksdb-env.sh
RUSTFLAGS="-C target-feature=+crt-static -L native=$CARGO_TARGET_DIR/static-libstdcxx" \
  cargo build --release --target x86_64-unknown-linux-gnu -p deltafed-testnet --bin deltafed-bench >&2
DELTAFED_BIN="$BIN" exec "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/deltafed-bench" "$@"
