#!/usr/bin/env bash
# What the container rehearsal needs on a Debian host: podman (with runc) and podman-compose.
# A host that refuses to raise resource limits, or runs a cgroup v1/v2 hybrid (some CI
# sandboxes), also gets a containers.conf with lower default limits and runc as the runtime.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q podman runc
fi
command -v podman-compose >/dev/null || python3 -m pip install --quiet podman-compose==1.6.0
if [ ! -f /etc/containers/containers.conf ]; then
    $SUDO mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = ["nofile=1024:4096", "nproc=4096:4096"]\n\n[engine]\nruntime = "runc"\n' \
        | $SUDO tee /etc/containers/containers.conf >/dev/null
fi
podman --version
podman-compose --version
