#!/usr/bin/env bash
# Makes the Python packages of the independent checkers (scripts/check-vectors.py,
# scripts/verify-export.py) importable: cbor2, PyNaCl and blake3; and kubernetes-validate (with
# PyYAML), which scripts/check-deploy.sh checks the Kubernetes manifests with. Installs them with
# pip only when one is missing (pip itself from apt-get when the interpreter has none). PYTHON
# names the interpreter (default python3).
set -euo pipefail
PY=${PYTHON:-python3}
PACKAGES=(cbor2 pynacl blake3 kubernetes-validate pyyaml)
importable() { "$PY" -c 'import cbor2, nacl.signing, blake3, kubernetes_validate, yaml' 2>/dev/null; }

importable && exit 0
echo "installing ${PACKAGES[*]} (pip)"
if ! "$PY" -m pip --version >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || { echo "error: $PY has no pip; install pip and run this again" >&2; exit 1; }
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
fi
err=$(mktemp)
trap 'rm -f "$err"' EXIT
if ! "$PY" -m pip install --quiet "${PACKAGES[@]}" 2>"$err"; then
  # An interpreter managed by the system (PEP 668) refuses installs into it: install for this
  # user instead, which leaves the system's packages alone.
  if grep -q externally-managed "$err"; then
    "$PY" -m pip install --quiet --user --break-system-packages "${PACKAGES[@]}"
  else
    cat "$err" >&2
    exit 1
  fi
fi
importable || { echo "error: ${PACKAGES[*]} were installed but $PY cannot import them" >&2; exit 1; }
