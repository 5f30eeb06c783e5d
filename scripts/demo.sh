#!/usr/bin/env bash
# The whole path on one machine: installs what is missing, builds, starts
# the embedded Kafka (librdkafka's mock cluster) and the APNs stand-in on
# 127.0.0.1, runs the worker against them, feeds it the call-flow example
# invite and cancel plus a few more events, and shows what APNs received
# and what the worker logged. Everything stops when it ends.
set -eu
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh build
bash scripts/build.sh build

export CALLPUSH_SRC=$PWD CALLPUSH_BUILD=$PWD/build
. tests/integration/lib.sh

DEAD=$(printf "%060d" 0)dead   # 64 hex digits, answered 410 by the stand-in
EX=schemas/examples
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "starting Kafka (mock cluster), the APNs stand-in and the worker"
start_kafka
start_apns --fail "$DEAD=410:Unregistered"
echo "Kafka bootstrap: $BROKERS   APNs stand-in: $APNS_URL"
start_worker worker
wait_assigned worker
echo "worker joined the group and owns its partitions"

step "producing events with kcat"
produce_one() { # produce_one TOPIC EXAMPLE [PYTHON-EXPR-TO-EDIT-d]
    $PY - "$EX/$2" "${3:-}" >"$T/ev.json" <<'PYEOF'
import json, sys, time
d = json.load(open(sys.argv[1]))
d["created_at"] = int(time.time() * 1000)
exec(sys.argv[2])
print(json.dumps(d, ensure_ascii=False, separators=(",", ":")))
PYEOF
    echo "$1 <- $(cut -c1-110 "$T/ev.json")..."
    produce "$1" "$($PY -c 'import json,sys; print(json.load(open(sys.argv[1])).get("call_id","x"))' "$T/ev.json")" "$T/ev.json"
}
produce_one call.invite valid/invite-call-flow.json
sleep 0.5
produce_one call.cancel valid/cancel-call-flow.json
produce_one call.invite valid/invite-video.json \
    "d['call_id']='call-video-1'; d['_j_msgid']=18101194842707800"
produce_one call.invite valid/invite-call-flow.json \
    "d['call_id']='call-dead-token'; d['_j_msgid']=42; d['device_tokens']=['$DEAD']"
printf '{"type":"invite","call_id":"broken"' >"$T/broken.json"
echo "call.invite <- $(cat "$T/broken.json")   (malformed)"
produce call.invite broken "$T/broken.json"

wait_until 30 log_ge worker '"msg":"event settled"' 5 || true

step "what APNs received"
$PY - "$T/apns.jsonl" <<'PYEOF'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    h = r["headers"]
    print("POST %s -> %s%s" % (h[":path"][:24] + "…", r["status"],
                               " " + r["reason"] if r["reason"] else ""))
    for k in sorted(h):
        if k.startswith("apns-") or k == "authorization":
            print("   %s: %s" % (k, h[k]))
    print("   body: " + r["body"])
PYEOF

step "the worker's log (JSON lines; librdkafka's own lines left out)"
grep -v '"msg":"kafka"' "$T/worker.log"

step "dead letters (call.dlq) and dead-token feedback (push.feedback)"
show_topic() {
    consume_all "$1" | $PY -c '
import json, sys
for l in sys.stdin:
    m = json.loads(l)
    h = m.get("headers") or []
    print("%s[%d]@%d key=%s" % (m["topic"], m["partition"], m["offset"], m["key"]))
    for i in range(0, len(h), 2):
        print("   header %s: %s" % (h[i], h[i + 1]))
    print("   value: %s" % m["payload"])
'
}
show_topic call.dlq
show_topic push.feedback
topic_ge push.feedback 1 || { echo "no dead-token feedback: demo failed" >&2; exit 1; }

step "stopping"
kill -TERM "$worker_PID"
wait "$worker_PID" && echo "worker exited 0"
