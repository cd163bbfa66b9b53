#!/usr/bin/env bash
# Fuzzing with a fixed short budget, as CI runs it: builds every target in fuzz/ (cargo-fuzz,
# libFuzzer + AddressSanitizer), then runs each for DELTAFED_FUZZ_SECONDS (default 20) starting
# from the committed corpus in fuzz/corpus/<target>/. Exits non-zero when a target crashes or a
# property fails, after printing the failure and the path of the input that caused it (under
# fuzz/artifacts/<target>/). Longer runs by hand, minimizing, reproducing: fuzz/README.md.
#
#   DELTAFED_FUZZ_SECONDS=60 scripts/fuzz.sh           # a minute per target
#   DELTAFED_FUZZ_TARGETS="roster csv_import" scripts/fuzz.sh
#   DELTAFED_FUZZ_SECONDS=0 scripts/fuzz.sh            # skip (says so)
#
# What it needs: cargo (stable is enough: RUSTC_BOOTSTRAP=1 lets it take the sanitizer flags
# cargo-fuzz passes), cargo-fuzz (installed from crates.io when missing), and RocksDB, which the
# node targets link: when the main debug build ($CARGO_TARGET_DIR, default
# /var/tmp/deltafed-target) has compiled it, its archive is linked instead of compiling the C++
# again (as scripts/rocksdb-env.sh does for release builds). The fuzz build has its own target
# dir, DELTAFED_FUZZ_TARGET_DIR (default /var/tmp/deltafed-fuzz-target); a cold build takes a
# while (libp2p and the rest, instrumented), later ones seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SECONDS_EACH=${DELTAFED_FUZZ_SECONDS:-20}
ALL_TARGETS="signed_objects roster wire_messages rpc_frames admin_lines csv_import jsonl_import projection keyindex"
TARGETS=${DELTAFED_FUZZ_TARGETS:-$ALL_TARGETS}
FUZZ_TARGET_DIR=${DELTAFED_FUZZ_TARGET_DIR:-/var/tmp/deltafed-fuzz-target}
MAIN_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/deltafed-target}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')

fail() { echo "fuzz: error: $*" >&2; exit 1; }

case $SECONDS_EACH in '' | *[!0-9]*) fail "DELTAFED_FUZZ_SECONDS must be a whole number of seconds, not '$SECONDS_EACH'" ;; esac
if [ "$SECONDS_EACH" = 0 ]; then
  echo "fuzz: DELTAFED_FUZZ_SECONDS=0: skipped"
  exit 0
fi
for t in $TARGETS; do
  case " $ALL_TARGETS " in *" $t "*) ;; *) fail "unknown target '$t' (targets: $ALL_TARGETS)" ;; esac
done

# cargo-fuzz passes -Z flags (the sanitizer, coverage instrumentation); stable takes them with this.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# Link the RocksDB the main debug build compiled, rather than compiling it again (~15 min).
if [ -z "${ROCKSDB_LIB_DIR:-}" ] && [ -z "${DELTAFED_ROCKSDB_REBUILD:-}" ]; then
  # shellcheck disable=SC2012 # newest first; paths have no spaces
  lib=$(ls -t "$MAIN_TARGET_DIR"/debug/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -n 1 || true)
  if [ -n "$lib" ]; then
    export ROCKSDB_LIB_DIR ROCKSDB_STATIC=1
    ROCKSDB_LIB_DIR=$(dirname "$lib")
    echo "fuzz: linking RocksDB from $lib"
  fi
fi

export CARGO_TARGET_DIR=$FUZZ_TARGET_DIR
build_start=$(date +%s)
echo "== fuzz: cargo fuzz build (target dir $FUZZ_TARGET_DIR)"
cargo fuzz build --fuzz-dir fuzz --target-dir "$FUZZ_TARGET_DIR" --codegen-units 16 || fail "cargo fuzz build failed (see above)"
echo "fuzz: built in $(( $(date +%s) - build_start ))s"
BIN_DIR="$FUZZ_TARGET_DIR/$TRIPLE/release"

# Scratch space for the targets that import files (fsync is free on tmpfs) and for the inputs a
# run adds to the corpus: the committed corpus is only read.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then shm=/dev/shm; else shm=${TMPDIR:-/tmp}; fi
work=$(mktemp -d "$shm/deltafed-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tmp"

status=0
summary=()
for t in $TARGETS; do
  bin="$BIN_DIR/$t"
  [ -x "$bin" ] || fail "no fuzz target binary $bin"
  mkdir -p "$work/corpus/$t" "$ROOT/fuzz/artifacts/$t" "$ROOT/fuzz/corpus/$t"
  log="$work/$t.log"
  echo "== fuzz: $t for ${SECONDS_EACH}s"
  rc=0
  # shellcheck disable=SC2086 # DELTAFED_FUZZ_ARGS is a list of libFuzzer flags
  TMPDIR="$work/tmp" "$bin" "$work/corpus/$t" "$ROOT/fuzz/corpus/$t" \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$ROOT/fuzz/artifacts/$t/" ${DELTAFED_FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  if [ "$rc" != 0 ]; then
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    echo "fuzz: $t FAILED (exit $rc) after ${runs:-?} runs; the end of its log:"
    tail -n 60 "$log" | sed 's/^/  | /'
    if [ -n "$artifact" ]; then
      echo "fuzz: $t: the input is $artifact"
      echo "fuzz: reproduce: $bin $artifact"
    fi
    summary+=("$t: FAILED, ${runs:-?} runs${artifact:+, input $artifact}")
    status=1
  else
    echo "fuzz: $t: ok, ${runs:-?} runs in ${SECONDS_EACH}s"
    summary+=("$t: ok, ${runs:-?} runs")
  fi
done

echo "== fuzz: summary (${SECONDS_EACH}s per target)"
printf '  %s\n' "${summary[@]}"
exit "$status"
