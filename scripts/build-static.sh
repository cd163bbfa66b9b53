#!/usr/bin/env bash
# Builds a fully static release binary of deltafed (glibc and libstdc++ linked in) for the
# `FROM scratch` container image, checks that it really is static, and prints its path on the
# last line of stdout.
#
# Why the extra -L flag: librocksdb-sys (through the cc crate) asks for `dylib=stdc++`, so even
# with +crt-static the linker is told -Bdynamic -lstdc++ and quietly picks libstdc++.so.6: the
# build succeeds and the binary still needs a dynamic loader. A search folder that holds only a
# `libstdc++.a` link, searched first, makes that same -lstdc++ resolve to the static archive.
#
# The flags are the same on every run (the folder's path depends only on CARGO_TARGET_DIR), so a
# warm cache is reused; --target keeps build scripts and proc macros dynamic (they run on the
# build machine) and puts the output in $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release.
# No --locked (as in demo.sh): scripts/test.sh's `cargo clippy --locked` already guards Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/deltafed-target}"
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR="$ROOT/$CARGO_TARGET_DIR" ;; esac
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
TARGET=x86_64-unknown-linux-gnu

fail() { echo "build-static: error: $*" >&2; exit 1; }

[ "$(uname -m)" = x86_64 ] || fail "this script builds for $TARGET and must run on an x86_64 Linux machine (this is $(uname -m))"
bash scripts/prereqs.sh >&2 || fail "scripts/prereqs.sh failed (see above)"
for tool in file readelf; do
  command -v "$tool" >/dev/null 2>&1 || fail "\`$tool\` is needed to check the binary; install it (Debian: apt-get install file binutils)"
done
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  rustup target add "$TARGET" >&2
fi

CXX_BIN=${CXX:-c++}
STDCXX_A=$("$CXX_BIN" -print-file-name=libstdc++.a)
[ -f "$STDCXX_A" ] || fail "no static libstdc++ ($CXX_BIN -print-file-name=libstdc++.a printed '$STDCXX_A'); install it (Debian: apt-get install libstdc++-12-dev, or the one matching your g++)"
[ -f "$(cc -print-file-name=libc.a)" ] || fail "no static glibc (libc.a); install it (Debian: apt-get install libc6-dev)"
STDCXX_DIR="$CARGO_TARGET_DIR/static-libstdcxx"
mkdir -p "$STDCXX_DIR"
ln -sfn "$STDCXX_A" "$STDCXX_DIR/libstdc++.a"

export RUSTFLAGS="-C target-feature=+crt-static -L native=$STDCXX_DIR"
# shellcheck source=scripts/rocksdb-env.sh
. "$ROOT/scripts/rocksdb-env.sh"
echo "build-static: RUSTFLAGS='$RUSTFLAGS' cargo build --release --target $TARGET -p deltafed" >&2
start=$(date +%s)
cargo build --release --target "$TARGET" -p deltafed >&2 || fail "cargo build failed (see above)"
echo "build-static: cargo build took $(( $(date +%s) - start ))s" >&2

BIN="$CARGO_TARGET_DIR/$TARGET/release/deltafed"
[ -x "$BIN" ] || fail "the build produced no $BIN"

# Static means: no program interpreter, no shared library needed. `file` says "statically
# linked" (or "static-pie linked" for a static PIE, rustc's default here); readelf is the
# authority; ldd agrees by saying "not a dynamic executable" / "statically linked".
desc=$(file -b "$BIN")
needed=$(readelf -dW "$BIN" 2>/dev/null | grep -F '(NEEDED)' || true)
interp=$(readelf -lW "$BIN" 2>/dev/null | grep -F 'Requesting program interpreter' || true)
if [ -n "$needed" ] || [ -n "$interp" ] || ! grep -qE 'statically linked|static-pie linked' <<<"$desc"; then
  {
    echo "build-static: error: $BIN is NOT statically linked; a FROM scratch image cannot run it"
    echo "  file: $desc"
    [ -z "$interp" ] || echo "  $interp"
    [ -z "$needed" ] || printf '  %s\n' "$needed"
    echo "  ldd: $(ldd "$BIN" 2>&1 | tr '\n' ' ')"
    echo "  (a NEEDED libstdc++.so.6 means the libstdc++.a link in $STDCXX_DIR was not used)"
  } >&2
  exit 1
fi
echo "build-static: static: $desc" >&2
echo "build-static: ldd: $(ldd "$BIN" 2>&1 | head -n 1 | sed 's/^[[:space:]]*//')" >&2
echo "$BIN"
