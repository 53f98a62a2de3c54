#!/usr/bin/env bash
# A Debian base image built from Debian's own package mirror, for hosts that reach it but not a
# container registry (build.sh's BASE then names it instead of docker.io's debian:bookworm-slim).
#   deploy/container/debian-base.sh [TAG] [MIRROR]     (needs debootstrap and podman; as root)
set -euo pipefail
TAG=${1:-localhost/debian-minbase:bookworm}
MIRROR=${2:-http://deb.debian.org/debian}
ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >/dev/null
tar -C "$ROOTFS" -c . | podman import - "$TAG"
