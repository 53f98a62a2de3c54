#!/usr/bin/env bash
# Build fedsynth's container image from this checkout: a wheelhouse of the pinned packages
# (constraints.txt, the CPU torch), then the Containerfile. Run with fedsynth's venv on PATH
# (`make install`); uses podman, or docker where podman is absent.
#   deploy/container/build.sh [TAG] [BASE_IMAGE]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TAG=${1:-localhost/fedsynth:latest}
BASE=${2:-docker.io/library/debian:bookworm-slim}
ENGINE=$(command -v podman || command -v docker || { echo "neither podman nor docker is installed" >&2; exit 2; })
# The wheelhouse is built for this Python, and the image's is Debian bookworm's 3.11.
python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || { echo "run build.sh with Python 3.11 first on PATH (the image's); fedsynth's venv is one" >&2; exit 2; }
# torch's CPU build: from its own index unless TORCH_INDEX is empty (pip's configuration has it).
TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
CONTEXT=$(mktemp -d)
trap 'rm -rf "$CONTEXT"' EXIT
echo "collecting the wheelhouse (constraints.txt, CPU torch 2.13.0) ..."
python -m pip wheel --quiet -w "$CONTEXT/wheels" ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} \
    -c "$ROOT/constraints.txt" torch==2.13.0 "$ROOT"
cp "$HERE/Containerfile" "$CONTEXT/"
echo "building $TAG on $BASE with $(basename "$ENGINE") ..."
"$ENGINE" build --build-arg "BASE=$BASE" -t "$TAG" -f "$CONTEXT/Containerfile" "$CONTEXT"
