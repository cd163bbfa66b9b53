#!/usr/bin/env bash
# Installs what building deltafed needs on a fresh Debian/Ubuntu machine, only when missing:
# libclang (rocksdb's bindgen), a C++ compiler (the bundled RocksDB), curl (the demo's gateway
# calls), PostgreSQL and Chromium (their tests), iproute2 (the emulated link), promtool when it
# can (the metrics test), and the Rust toolchain's rustfmt and clippy
# components.
set -euo pipefail

need_apt=()
# libclang itself (libclang.so / libclang-NN.so), not libclang-cpp, which some images ship alone
# and which bindgen cannot use.
have_libclang=false
for pattern in '/usr/lib/llvm-*/lib/libclang.so*' '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' \
  '/usr/lib/*-linux-gnu/libclang.so*' '/usr/lib/*-linux-gnu/libclang-[0-9]*.so*'; do
  # One pattern matching is enough (`ls` over all of them failed whenever any one matched nothing).
  if compgen -G "$pattern" >/dev/null; then have_libclang=true; break; fi
done
$have_libclang || need_apt+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
# The demo calls the application gateway the way an application would.
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# A real PostgreSQL server for the database-source tests (the harness starts its own cluster).
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
# A real browser for the dashboard tests (headless, driven over WebDriver).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
# The emulated inter-province link (testnet/src/link.rs): network namespaces and tbf.
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v tc >/dev/null 2>&1 || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt-get)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Optional: `promtool check metrics` (Debian's prometheus package) checks the node's /metrics
# output in testnet/tests/metrics.rs. A machine that cannot install it still builds and tests;
# that test then says it skipped promtool. (systemd-analyze, for scripts/check-deploy.sh, comes
# with systemd and is not installed here: that script says when it is missing.)
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing prometheus (apt-get), for promtool"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; then
    echo "warning: could not install prometheus; testnet/tests/metrics.rs will skip promtool check metrics" >&2
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed; install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
