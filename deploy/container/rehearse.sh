#!/usr/bin/env bash
# The runbook in containers: a coordinator (coordinator.compose.yaml) and SITES hospitals
# (site.compose.yaml, default 3) on one host, every fedsynth and flwr command run inside the
# image; credentials, enrolment, each site's pre-flight, a 2-round run under SecAgg+, each
# site's status, then everything torn down. Needs podman, podman-compose and the image
# (deploy/container/build.sh); deploy/container/install-engine.sh installs the first two.
#   deploy/container/rehearse.sh WORKDIR [SITES] [IMAGE]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${1:?usage: deploy/container/rehearse.sh WORKDIR [SITES] [IMAGE]}
SITES=${2:-3}
export FEDSYNTH_IMAGE=${3:-localhost/fedsynth:latest}
[ "$SITES" -ge 2 ] || { echo "SITES is $SITES: give at least 2 (a SecAgg+ round sums two or more sites)" >&2; exit 2; }
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
cd "$WORK"
export COORDINATOR_DIR="$WORK/coordinator"
mkdir -p "$COORDINATOR_DIR/state" "$COORDINATOR_DIR/flwr-home" logs
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
LINK_PORT=$(free_port)
FLEET_PORT=$(free_port)
export LINK_PORT FLEET_PORT
export FLEET_LISTEN="127.0.0.1:$FLEET_PORT"  # a real coordinator listens on 0.0.0.0:9092
SUPERLINK="127.0.0.1:$FLEET_PORT"
PROJECT="fedsynth-$$"

step() { echo "== $(date +%T) $*"; }
run() { echo "   \$ $*"; "$@"; }
coordinator() { podman-compose -p "$PROJECT-coordinator" -f "$HERE/coordinator.compose.yaml" "$@"; }
site() {  # site NAME COMPOSE-ARGS...: the compose project of one hospital
    local name=$1
    shift
    SITE_DIR="$WORK/$name" SITE_CREDENTIALS="$WORK/credentials-$name" RUNTIME_PORT=$(cat "$WORK/$name.port") \
        SUPERLINK="$SUPERLINK" podman-compose -p "$PROJECT-$name" -f "$HERE/site.compose.yaml" "$@"
}
in_image() {
    podman run --rm -i --network host --user "$FEDSYNTH_UID:$FEDSYNTH_GID" -v "$WORK:/work" -w /work "$FEDSYNTH_IMAGE" "$@"
}
# shellcheck source=deploy/wait_online.sh
source "$HERE/../wait_online.sh"
NODES=()
for i in $(seq 0 $((SITES - 1))); do NODES+=("site-$i"); done
tear_down() {  # each container's output kept in logs/, then every project down
    for name in $(podman ps -a --filter "name=$PROJECT" --format '{{.Names}}'); do
        podman logs "$name" >"logs/$name.log" 2>&1 || true
    done
    for node in "${NODES[@]}"; do
        if [ -f "$WORK/$node.port" ]; then site "$node" down -t 5 >>logs/compose.log 2>&1 || true; fi
    done
    coordinator down -t 5 >>logs/compose.log 2>&1 || true
}
trap tear_down EXIT
# The containers run as uid FEDSYNTH_UID (default 10001, the image's user) and own what they write.
if [ "$(id -u)" != 0 ]; then
    FEDSYNTH_UID=$(id -u)
    FEDSYNTH_GID=$(id -g)
    echo "   (not root: the containers run as uid $FEDSYNTH_UID)"
fi
export FEDSYNTH_UID=${FEDSYNTH_UID:-10001} FEDSYNTH_GID=${FEDSYNTH_GID:-10001}
own() { [ "$(id -u)" != 0 ] || chown -R "$FEDSYNTH_UID:$FEDSYNTH_GID" "$@"; }
own "$WORK"

step "0. each hospital's data (the bundled WHAS500, cut in $SITES parts) and site.toml"
run in_image fedsynth dataset export whas500 -o whas500.csv --force
python3 "$HERE/../split_sites.py" whas500.csv whas500.schema.toml "$SITES" \
    "$(printf 'target_epsilon = 3.0\nrequire_secure_aggregation = true')"

step "1. credentials (coordinator, once): the SuperLink's go to its container, the CA key stays out"
run in_image fedsynth deploy certs credentials --host 127.0.0.1 $(printf -- '--node %s ' "${NODES[@]}")
mkdir -p coordinator/certs coordinator/enrol
cp credentials/ca.crt credentials/server.pem credentials/server.key coordinator/certs/
cp credentials/nodes/*.pub coordinator/enrol/   # public keys, to register
for node in "${NODES[@]}"; do  # what each hospital receives: the CA certificate and its node key
    mkdir -p "credentials-$node"
    cp credentials/ca.crt "credentials-$node/ca.crt"
    cp "credentials/nodes/$node.key" "credentials-$node/node.key"
    free_port >"$node.port"
done
cp site-0/schema.toml coordinator/schema.toml
printf '[superlink]\ndefault = "hospitals"\n\n[superlink.hospitals]\naddress = "127.0.0.1:%s"\nroot-certificates = "/srv/fedsynth/certs/ca.crt"\n' \
    "$LINK_PORT" >coordinator/flwr-home/config.toml
printf '[federation]\nengine = "deployment"\nrounds = 2\nmin_sites = %s\nround_timeout = 120\nrun_dir = "/srv/fedsynth/runs/containers"\nschema = "/srv/fedsynth/schema.toml"\n\n[secure_aggregation]\nenabled = true\n' \
    "$SITES" >coordinator/federation.toml
own "$WORK"  # what this script wrote, for the containers

step "2. SuperLink and Fleet gateway (coordinator)"
run coordinator up -d >>logs/compose.log 2>&1
for _ in $(seq 120); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $FLEET_PORT), timeout=1).close()" 2>/dev/null && break
    sleep 0.5
done
for node in "${NODES[@]}"; do
    run coordinator exec -T superlink flwr supernode register "enrol/$node.pub" hospitals --name "$node"
done

step "3. SuperNode (each hospital): pre-flight, then its SuperNode and warm SuperExec"
for node in "${NODES[@]}"; do
    run site "$node" run --rm -T supernode fedsynth site check site --superlink "$SUPERLINK" \
        --root-certificates credentials/ca.crt --auth-key credentials/node.key
    run site "$node" up -d >>logs/compose.log 2>&1
done
wait_online "$SITES" coordinator exec -T superlink flwr supernode list hospitals --format json

step "4. the run (coordinator), under secure aggregation"
run coordinator exec -T superlink fedsynth deploy app app
run coordinator exec -T superlink flwr run app hospitals --stream \
    --run-config 'federation-config="/srv/fedsynth/federation.toml"' >logs/run-train.log 2>&1
run coordinator exec -T superlink fedsynth budget runs/containers
test -f coordinator/runs/containers/model/manifest.json || { echo "no published model; see logs/run-train.log" >&2; exit 1; }
grep -q "Secure aggregation completed" logs/run-train.log || { echo "no SecAgg+ round; see logs/run-train.log" >&2; exit 1; }
for node in "${NODES[@]}"; do run site "$node" exec -T supernode fedsynth site status site; done

step "tear down"
tear_down
trap - EXIT
left=$(podman ps -a --filter "name=$PROJECT" --format '{{.Names}}')
[ -z "$left" ] || { echo "containers left behind: $left" >&2; exit 1; }
echo "container rehearsal complete: $WORK/coordinator/runs/containers"
