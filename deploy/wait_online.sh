# Sourced by the rehearsals (deploy/rehearse.sh, deploy/container/rehearse.sh).
# wait_online SITES COMMAND...: until COMMAND (a `flwr supernode list ... --format json`, run
# wherever the flwr CLI is) reports SITES SuperNodes online; exits 1 after 60 s.
wait_online() {
    local sites=$1 online=0
    shift
    for _ in $(seq 120); do
        online=$("$@" 2>/dev/null | python3 -c \
            'import json, sys; t = sys.stdin.read(); print(sum(n.get("status") == "online" for n in json.loads(t[t.index("{"):])["nodes"]))' \
            2>/dev/null || echo 0)
        [ "$online" -ge "$sites" ] && break
        sleep 0.5
    done
    echo "   $online of $sites SuperNodes online"
    [ "$online" -ge "$sites" ] || { echo "not every SuperNode came online; see logs/" >&2; exit 1; }
}
