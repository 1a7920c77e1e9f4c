#!/usr/bin/env bash
# Builds the eligd runtime image on this machine, without pulling anything, and tags it
# eligd:local: the binary (cargo build --profile production, or --binary PATH) and the libraries it
# links go into a scratch image (deploy/image/rootfs.sh, deploy/image/Dockerfile.runtime),
# the same runtime stage deploy/Dockerfile ends with. Needs a running Docker engine
# (DOCKER_HOST is honoured).
#
# Usage: deploy/build-local-image.sh [--binary PATH] [--tag NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
binary="" tag="eligd:local"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --tag) tag=${2:?--tag needs a name}; shift 2 ;;
    *) echo "build-local-image.sh: unknown argument $1 (--binary PATH, --tag NAME)" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  cargo build --profile production --locked --bin eligd
  binary=target/production/eligd
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
deploy/image/rootfs.sh "$binary" "$context/rootfs"
docker build --quiet -f deploy/image/Dockerfile.runtime -t "$tag" "$context" >/dev/null
echo "built $tag ($(du -sh "$context/rootfs" | cut -f1) root filesystem)"
