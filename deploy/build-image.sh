#!/usr/bin/env bash
# Builds the deltafed container image (default tag deltafed:dev) from the project's own static
# binary: scripts/build-static.sh, then a build context staged in a temp dir for deploy/Dockerfile
# (FROM scratch: nothing is pulled, so no registry is needed).
#
#   deploy/build-image.sh [TAG]
#   DELTAFED_BIN=/path/to/static/deltafed deploy/build-image.sh   # skip the cargo build
#
# Prints the image tag on the last line of stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TAG=${1:-${DELTAFED_IMAGE:-deltafed:dev}}
fail() { echo "build-image: error: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || fail "docker is not installed"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (\`docker info\` failed); start dockerd or set DOCKER_HOST"

if [ -n "${DELTAFED_BIN:-}" ]; then
  BIN=$DELTAFED_BIN
else
  BIN=$(bash scripts/build-static.sh | tail -n 1) || fail "scripts/build-static.sh failed (see above)"
fi
[ -x "$BIN" ] || fail "no executable at $BIN"
# A dynamic binary would build fine and then fail in the container with a bare "no such file or
# directory" (the loader is missing): refuse it here instead.
if readelf -lW "$BIN" 2>/dev/null | grep -qF 'Requesting program interpreter'; then
  fail "$BIN is dynamically linked; a FROM scratch image needs the static build (scripts/build-static.sh)"
fi

CTX=$(mktemp -d "${TMPDIR:-/tmp}/deltafed-image.XXXXXX")
trap 'rm -rf "$CTX"' EXIT
cp deploy/Dockerfile "$CTX/Dockerfile"
# Symbols stay (panics still name functions); the line tables of the release profile go, which
# shrinks the image several times over.
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug -o "$CTX/deltafed" "$BIN"
else
  cp "$BIN" "$CTX/deltafed"
fi
chmod 0755 "$CTX/deltafed"
mkdir -p "$CTX/rootfs/etc" "$CTX/owned/data"
mkdir -m 1777 "$CTX/rootfs/tmp"
chmod 1777 "$CTX/rootfs/tmp" # whatever the umask
chmod 0700 "$CTX/owned/data"
printf 'root:x:0:0:root:/:/nonexistent\ndeltafed:x:10001:10001:deltafed:/data:/nonexistent\n' >"$CTX/rootfs/etc/passwd"
printf 'root:x:0:\ndeltafed:x:10001:\n' >"$CTX/rootfs/etc/group"
chmod 0644 "$CTX/rootfs/etc/passwd" "$CTX/rootfs/etc/group"

version=$("$CTX/deltafed" --version 2>/dev/null | awk '{print $NF}') || version=""
echo "build-image: docker build -t $TAG ($(du -h "$CTX/deltafed" | cut -f1) binary${version:+, deltafed $version})" >&2
start=$(date +%s)
docker build -t "$TAG" \
  --label "org.opencontainers.image.title=deltafed" \
  --label "org.opencontainers.image.version=${version:-unknown}" \
  "$CTX" >&2 || fail "docker build failed (see above)"
echo "build-image: built $TAG in $(( $(date +%s) - start ))s" >&2
echo "$TAG"
