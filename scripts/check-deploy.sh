#!/usr/bin/env bash
# Offline checks of deploy/, run by scripts/test.sh:
#  1. The Kubernetes manifests (deploy/kubernetes/*.yaml) and what provision.sh makes beside
#     them, against the Kubernetes API schemas, strictly (unknown fields refused), with
#     kubernetes-validate (PyPI; scripts/python-deps.sh installs it).
#  2. The four province files are one file but for the member's name.
#  3. Each province's deltafed.toml (its ConfigMap) is a config the node accepts, and the init
#     container's command makes a data dir from the provisioned Secret and roster, twice over.
#  4. The systemd unit with `systemd-analyze verify`, and its exposure with
#     `systemd-analyze security` (at most DELTAFED_SYSTEMD_EXPOSURE, default 2.0), when
#     systemd-analyze is installed; without it this part is skipped, saying so.
# DELTAFED_BIN names the deltafed binary (default: the debug build in CARGO_TARGET_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
bin=${DELTAFED_BIN:-$target/debug/deltafed}
# The oldest Kubernetes still supported upstream when this was written, and the newest the
# installed kubernetes-validate knows (its default).
k8s_versions=(${DELTAFED_K8S_VERSIONS:-1.30.0 default})
members=(shanghai jiangsu zhejiang anhui)
PY=${PYTHON:-python3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "-- kubernetes: the province files are alike"
for m in "${members[@]}"; do
  if ! diff -u <(sed "s/shanghai/$m/g" deploy/kubernetes/shanghai.yaml) "deploy/kubernetes/$m.yaml"; then
    echo "error: deploy/kubernetes/$m.yaml is not shanghai.yaml with $m for shanghai; regenerate it:" >&2
    echo "  sed 's/shanghai/$m/g' deploy/kubernetes/shanghai.yaml > deploy/kubernetes/$m.yaml" >&2
    exit 1
  fi
done

[ -x "$bin" ] || { echo "error: $bin is not built; run cargo build -p deltafed (or set DELTAFED_BIN)" >&2; exit 1; }
DELTAFED_BIN="$bin" bash deploy/kubernetes/provision.sh "$work/provisioned" >/dev/null

echo "-- kubernetes: manifests against the API schemas (kubernetes-validate --strict, ${k8s_versions[*]})"
command -v kubernetes-validate >/dev/null 2>&1 || "$PY" -c 'import kubernetes_validate' 2>/dev/null \
  || { echo "error: kubernetes-validate is missing; run scripts/python-deps.sh" >&2; exit 1; }
for v in "${k8s_versions[@]}"; do
  version=()
  [ "$v" = default ] || version=(-k "$v")
  "$PY" -m kubernetes_validate --strict --quiet "${version[@]}" deploy/kubernetes/*.yaml "$work"/provisioned/*.yaml
done
echo "   $(ls deploy/kubernetes/*.yaml "$work"/provisioned/*.yaml | wc -l) files valid"

echo "-- kubernetes: each member's config and the init container's command"
for m in "${members[@]}"; do
  "$PY" - "deploy/kubernetes/$m.yaml" "$work/$m.toml" <<'PYTHON'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "ConfigMap"]
open(sys.argv[2], "w").write(docs[0]["data"]["deltafed.toml"])
PYTHON
  "$PY" - "$work/provisioned/secrets.yaml" "$m" "$work/$m.key" <<'PYTHON'
import base64, os, sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["metadata"]["name"] == f"deltafed-{sys.argv[2]}-key":
        fd = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT, 0o440)
        os.write(fd, base64.b64decode(d["data"]["node.key"]))
PYTHON
  "$PY" - "$work/provisioned/roster.yaml" "$work/roster.cbor" <<'PYTHON'
import base64, sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
open(sys.argv[2], "wb").write(base64.b64decode(d["binaryData"]["roster.cbor"]))
PYTHON
  # The same arguments as the init container's, twice: a restart changes nothing.
  for _ in 1 2; do
    "$bin" init --member "$m" --key "$work/$m.key" --roster "$work/roster.cbor" --config "$work/$m.toml" \
      --data-dir "$work/pvc-$m/node" --json >/dev/null
  done
  cmp -s "$work/$m.toml" "$work/pvc-$m/node/deltafed.toml" || { echo "error: $m: the config was not copied" >&2; exit 1; }
  [ "$(stat -c %a "$work/pvc-$m/node/node.key")" = 600 ] || { echo "error: $m: node.key is not 0600" >&2; exit 1; }
done
echo "   ${#members[@]} members: configs accepted, data dirs made"

echo "-- systemd: deploy/deltafed.service"
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "   systemd-analyze is not installed (Debian's systemd package): skipped verify and security"
  exit 0
fi
# verify checks that ExecStart's binary exists: point it at the one just built.
mkdir -p "$work/systemd"
sed "s#^ExecStart=/usr/local/bin/deltafed #ExecStart=$(realpath "$bin") #" deploy/deltafed.service \
  > "$work/systemd/deltafed.service"
systemd-analyze verify "$work/systemd/deltafed.service"
echo "   systemd-analyze verify: passed"
max=${DELTAFED_SYSTEMD_EXPOSURE:-2.0}
report=$(systemd-analyze security --offline=true --no-pager "$work/systemd/deltafed.service" 2>&1)
score=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for deltafed.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || { printf '%s\n' "$report" >&2; echo "error: systemd-analyze security printed no score" >&2; exit 1; }
echo "   systemd-analyze security: exposure $score (at most $max)"
if awk -v s="$score" -v m="$max" 'BEGIN { exit !(s > m) }'; then
  printf '%s\n' "$report" | grep '✗' >&2 || true
  echo "error: the unit's exposure $score is above $max: the hardening regressed (above, what is not set)" >&2
  exit 1
fi
