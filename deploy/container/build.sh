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
CONTEXT=$(mktemp -d)
trap 'rm -rf "$CONTEXT"' EXIT
echo "collecting the wheelhouse (constraints.txt, CPU torch 2.13.0) ..."
python -m pip wheel --quiet -w "$CONTEXT/wheels" -c "$ROOT/constraints.txt" torch==2.13.0 "$ROOT"
cp "$HERE/Containerfile" "$CONTEXT/"
echo "building $TAG on $BASE with $(basename "$ENGINE") ..."
"$ENGINE" build --build-arg "BASE=$BASE" -t "$TAG" -f "$CONTEXT/Containerfile" "$CONTEXT"
