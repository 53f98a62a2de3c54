#!/usr/bin/env bash
# What the container rehearsal needs on a Debian host: podman (with runc) and podman-compose (in
# a venv of its own, /opt/podman-compose). --restricted-host also writes a containers.conf for
# hosts that refuse to raise resource limits or run a cgroup v1/v2 hybrid (some CI sandboxes):
# default ulimits below the host's and runc as the runtime. A normal host needs neither.
#   deploy/container/install-engine.sh [--restricted-host]
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q podman runc python3-venv
fi
if ! command -v podman-compose >/dev/null; then
    $SUDO python3 -m venv /opt/podman-compose
    $SUDO /opt/podman-compose/bin/pip install --quiet podman-compose==1.6.0
    $SUDO ln -sf /opt/podman-compose/bin/podman-compose /usr/local/bin/podman-compose
fi
if [ "${1:-}" = --restricted-host ]; then
    $SUDO mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = ["nofile=1024:4096", "nproc=4096:4096"]\n\n[engine]\nruntime = "runc"\n' \
        | $SUDO tee /etc/containers/containers.conf >/dev/null
fi
podman --version
podman-compose --version
