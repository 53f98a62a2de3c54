#!/usr/bin/env bash
# Rehearse deploy/README.md on one machine: its commands, in its order, for a coordinator and
# SITES hospitals (default 3) on loopback, each long-running process supervised by this script
# and stopped at the end (or on any failure). Run from a fedsynth checkout with fedsynth
# installed (`make install`, then `PATH=.venv/bin:$PATH deploy/rehearse.sh /tmp/rehearsal`).
#
# Each step prints "== <runbook section>" and the commands it runs; every process logs to
# WORKDIR/logs. Exit 0 only if the run trained, was audited and every process stopped.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

WORK=${1:?usage: deploy/rehearse.sh WORKDIR [SITES]}
SITES=${2:-3}
[ "$SITES" -ge 2 ] || { echo "SITES is $SITES: give at least 2 (a SecAgg+ round sums two or more sites)" >&2; exit 2; }
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
cd "$WORK"
mkdir -p logs state
export FLWR_HOME="$WORK/flwr-home"   # the flwr CLI's connections and the runs' FAB cache
export FLWR_TELEMETRY_ENABLED=0      # the runbook's first line: no usage events to Flower's servers

PIDS=()
stop_all() {
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    # Flower starts the SuperLink's SuperExec (and the apps it runs) in sessions of their own;
    # every process of this rehearsal inherited FLWR_HOME, so stop whatever still carries it.
    env -u FLWR_HOME python3 -m fedsynth.deploy.processes stop "FLWR_HOME=$FLWR_HOME"
}
trap stop_all EXIT
supervise() {  # supervise NAME COMMAND...: start it in its own process group, logging to logs/NAME.log
    local name=$1
    shift
    setsid "$@" >"logs/$name.log" 2>&1 &
    PIDS+=("$!")
    echo "   started $name (pid $!): $*"
}
step() { echo "== $(date +%T) $*"; }
run() { echo "   \$ $*"; "$@"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {  # wait_port PORT NAME: until something accepts connections there
    for _ in $(seq 150); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), timeout=1).close()" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "$2 did not listen on 127.0.0.1:$1; see logs/$2.log" >&2
    return 1
}

LINK_PORT=$(free_port)   # the runbook's 9093: the SuperLink, loopback only
FLEET_PORT=$(free_port)  # the runbook's 9092: the gateway, the sites' only way in
NODES=()
for i in $(seq 0 $((SITES - 1))); do NODES+=("site-$i"); done

step "0. each hospital's data (here: the bundled WHAS500, cut in $SITES parts) and site.toml"
run fedsynth dataset export whas500 -o whas500.csv --force
python3 "$HERE/split_sites.py" whas500.csv whas500.schema.toml "$SITES" \
    "$(printf 'target_epsilon = 3.0\nevaluation_horizons = [365.0, 730.0]\nrequire_secure_aggregation = true')"

step "1. credentials (coordinator, once)"
run fedsynth deploy certs certs/ --host 127.0.0.1 $(printf -- '--node %s ' "${NODES[@]}")

start_coordinator() {  # the SuperLink, then the gateway in front of it (section 2)
    supervise superlink flower-superlink \
        --ssl-certfile certs/server.pem --ssl-keyfile certs/server.key --ssl-ca-certfile certs/ca.crt \
        --enable-supernode-auth --disable-runtime-dependency-installation \
        --database state/superlink.db --host 127.0.0.1 --port "$LINK_PORT"
    LINK_PID=$!
    wait_port "$LINK_PORT" superlink
    supervise gateway fedsynth deploy gateway certs/ --listen "127.0.0.1:$FLEET_PORT" --superlink "127.0.0.1:$LINK_PORT"
    GATEWAY_PID=$!
    wait_port "$FLEET_PORT" gateway
}
# shellcheck source=deploy/wait_online.sh
source "$HERE/wait_online.sh"

step "2. SuperLink and Fleet gateway (coordinator)"
start_coordinator
mkdir -p "$FLWR_HOME"
cat >"$FLWR_HOME/config.toml" <<EOF
[superlink]
default = "hospitals"

[superlink.hospitals]
address = "127.0.0.1:$LINK_PORT"
root-certificates = "$WORK/certs/ca.crt"
EOF
for node in "${NODES[@]}"; do
    run flwr supernode register "certs/nodes/$node.pub" hospitals --name "$node"
done
run flwr supernode list hospitals

step "3. SuperNode (each hospital): check, then start it with its warm SuperExec"
for node in "${NODES[@]}"; do
    run fedsynth site check "$node" --superlink "127.0.0.1:$FLEET_PORT" \
        --root-certificates certs/ca.crt --auth-key "certs/nodes/$node.key"
    runtime_port=$(free_port)
    supervise "supernode-$node" python3 -m fedsynth.deploy.prompt_supernode --isolation process \
        --host 127.0.0.1 --port "$runtime_port" \
        --superlink "127.0.0.1:$FLEET_PORT" --root-certificates certs/ca.crt \
        --auth-supernode-private-key "certs/nodes/$node.key" --node-config "site-dir='$WORK/$node'"
    # No wait: the SuperExec retries until its SuperNode's Runtime API answers.
    supervise "superexec-$node" python3 -m fedsynth.deploy.warm_superexec \
        --runtime-api-address "127.0.0.1:$runtime_port" --insecure
done
wait_online "$SITES" flwr supernode list hospitals --format json

step "4. the run (coordinator)"
cat >federation.toml <<EOF
[federation]
engine = "deployment"
rounds = 3
min_sites = $SITES
round_timeout = 120
run_dir = "$WORK/runs/rehearsal"
schema = "$WORK/site-0/schema.toml"

[secure_aggregation]   # every site's site.toml requires it
enabled = true
EOF
run fedsynth deploy app app   # the Flower app `flwr run` submits: the installed fedsynth's ServerApp and ClientApp
TRAIN=(flwr run app hospitals --stream --run-config "federation-config=\"$WORK/federation.toml\"")
echo "   \$ ${TRAIN[*]}  (in the background: the coordinator crashes mid-run below)"
"${TRAIN[@]}" >logs/run-train-crashed.log 2>&1 &
FIRST_SUBMISSION=$!
for _ in $(seq 600); do
    grep -qs '"round": 1,' runs/rehearsal/budget.jsonl && break
    sleep 0.5
done
grep -qs '"round": 1,' runs/rehearsal/budget.jsonl || { echo "round 1 never closed; see logs/" >&2; exit 1; }
echo "   watching it (runbook section 4):"
run flwr ls hospitals
run fedsynth budget runs/rehearsal

step "recover from a coordinator crash, renewing the SuperLink's certificate on the way back"
# The coordinator's host dies after round 1: SuperLink, gateway, and the SuperLink's SuperExec
# and ServerApp (its descendants, in sessions of their own) are killed without warning.
descendants() { local child; for child in $(pgrep -P "$1"); do echo "$child"; descendants "$child"; done; }
CRASHED=$(for pid in "$LINK_PID" "$GATEWAY_PID"; do echo "$pid"; descendants "$pid"; done)
kill -KILL $CRASHED 2>/dev/null || true
for _ in $(seq 50); do kill -0 "$FIRST_SUBMISSION" 2>/dev/null || break; sleep 0.2; done
kill "$FIRST_SUBMISSION" 2>/dev/null || true  # the flwr CLI's stream has nothing left to read
echo "   killed the coordinator's processes:" $CRASHED
run fedsynth deploy renew-server certs/   # while it is down, the yearly certificate renewal
start_coordinator
wait_online "$SITES" flwr supernode list hospitals --format json  # as the SuperLink records them; the runs below need them to reconnect on the new certificate
# Submitted again with the same run_dir, the run resumes from its last checkpoint.
run "${TRAIN[@]}" >logs/run-train.log 2>&1
run fedsynth budget runs/rehearsal
test -f runs/rehearsal/model/manifest.json || { echo "no published model; see logs/run-train.log" >&2; exit 1; }

step "5. audit and evaluate the published model (coordinator)"
run flwr run app hospitals --stream \
    --run-config "federation-config=\"$WORK/federation.toml\" task=\"audit\" seed=0 expected-sites=$SITES" \
    >logs/run-audit.log 2>&1
test -f runs/rehearsal/audit.json || { echo "no audit.json; see logs/run-audit.log" >&2; exit 1; }
run flwr run app hospitals --stream \
    --run-config "federation-config=\"$WORK/federation.toml\" task=\"evaluate\" expected-sites=$SITES horizons=\"[365, 730]\"" \
    >logs/run-evaluate.log 2>&1
test -f runs/rehearsal/evaluation.json || { echo "no evaluation.json; see logs/run-evaluate.log" >&2; exit 1; }
for node in "${NODES[@]}"; do run fedsynth site status "$node"; done

step "tear down"
stop_all
trap - EXIT
for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then echo "process $pid did not stop" >&2; exit 1; fi
done
echo "rehearsal complete: $WORK/runs/rehearsal"
