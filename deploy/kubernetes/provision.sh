#!/usr/bin/env bash
# What the manifests need beside them, for a test federation of the four provinces: a key per
# member, a roster signed by all four and a gateway certificate per member, made by
# `deltafed testnet init --docker` (members address each other as /dns4/<member>/tcp/4001 and
# /dns4/<member>/udp/4001/quic-v1, which the headless Services of the manifests resolve).
#
#   deploy/kubernetes/provision.sh OUT          # OUT/secrets.yaml and OUT/roster.yaml
#   kubectl apply -f deploy/kubernetes/namespace.yaml -f OUT/ -f deploy/kubernetes/
#
# OUT/secrets.yaml holds the private keys: OUT is made mode 0700 and nothing else is kept.
# A real federation holds the roster ceremony instead, each province making its own key
# (README.md). DELTAFED_BIN names the deltafed binary (default: `deltafed` on PATH).
set -euo pipefail
out=${1:?usage: provision.sh OUT}
bin=${DELTAFED_BIN:-deltafed}
members=(shanghai jiangsu zhejiang anhui)

umask 077
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
members_csv=$(IFS=,; echo "${members[*]}")
"$bin" testnet init --dir "$work/net" --members "$members_csv" --docker --json >/dev/null

b64() { base64 -w0 < "$1"; }

{
  for m in "${members[@]}"; do
    cat <<YAML
---
apiVersion: v1
kind: Secret
metadata:
  name: deltafed-$m-key
  namespace: deltafed
  labels:
    app.kubernetes.io/name: deltafed
    app.kubernetes.io/instance: $m
type: Opaque
data:
  node.key: $(b64 "$work/net/$m/node.key")
---
apiVersion: v1
kind: Secret
metadata:
  name: deltafed-$m-gateway-tls
  namespace: deltafed
  labels:
    app.kubernetes.io/name: deltafed
    app.kubernetes.io/instance: $m
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "$work/net/$m/gateway-cert.pem")
  tls.key: $(b64 "$work/net/$m/gateway-key.pem")
YAML
  done
} > "$out/secrets.yaml"

cat > "$out/roster.yaml" <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: deltafed-roster
  namespace: deltafed
  labels:
    app.kubernetes.io/part-of: deltafed
binaryData:
  roster.cbor: $(b64 "$work/net/roster.cbor")
YAML
echo "wrote $out/secrets.yaml (keys: keep it private) and $out/roster.yaml"
