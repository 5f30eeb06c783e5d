#!/usr/bin/env bash
# What the worker does with each kind of APNs answer, end to end: a dead
# token is reported once on the feedback topic and not retried; a request
# error is dead-lettered without a retry; a server error is retried with
# back-off until the push's deadline, then the invite is suppressed as
# expired and the cancel dead-lettered.
set -eu
. "$(dirname "$0")/lib.sh"

tok() { printf '%060x%04x' 0 "$1"; }
GONE=$(tok 1) BAD=$(tok 2) TOPIC=$(tok 3) DOWN=$(tok 4) DOWN2=$(tok 5)
start_kafka
start_apns --fail "$GONE=410:Unregistered" --fail "$BAD=400:BadDeviceToken" \
    --fail "$TOPIC=400:BadTopic" --fail "$DOWN=503:ServiceUnavailable" \
    --fail "$DOWN2=500:InternalServerError"
# Short deadlines so that giving up happens within the test.
start_worker worker --cancel-expiration-s 4
wait_assigned worker || { fail "worker got no partitions"; finish; }

event() { # event TYPE MSGID TOKEN [RING]: one event line "key|json"
    $PY - "$@" <<'PYEOF'
import json, sys, time
typ, msgid, token = sys.argv[1:4]
d = {"type": typ, "call_id": "answers-" + msgid, "_j_msgid": int(msgid),
     "device_tokens": [token], "created_at": int(time.time() * 1000),
     "_j_uid": "user-" + msgid}
if len(sys.argv) > 4:
    d["ring_timeout_s"] = int(sys.argv[4])
print("%s|%s" % (d["call_id"], json.dumps(d)))
PYEOF
}
{
    event invite 1 "$GONE"
    event invite 2 "$BAD"
    event invite 3 "$TOPIC"
    event invite 4 "$DOWN" 4
    event cancel 5 "$DOWN2"
} >"$T/events"
produce_lines call.invite "$T/events"
wait_until 40 log_ge worker '"event settled"' 5 || fail "not every event settled"
wait_until 10 topic_ge push.feedback 2 || true

$PY - "$T" "$GONE" "$BAD" "$TOPIC" "$DOWN" "$DOWN2" <<'PYEOF' && ok "each answer handled as Apple documents" || fail "answers mishandled (see above)"
import collections, json, sys
t, gone, bad, topic, down, down2 = sys.argv[1:]
recs = [json.loads(l) for l in open(t + "/apns.jsonl")]
tries = collections.Counter(r["token"] for r in recs)
settled = {json.loads(l)["_j_msgid"]: json.loads(l) for l in open(t + "/worker.log")
           if json.loads(l)["msg"] == "event settled"}
errors = []
def expect(what, got, want):
    if got != want:
        errors.append("%s: got %r, want %r" % (what, got, want))
expect("410 tried once", tries[gone], 1)
expect("BadDeviceToken tried once", tries[bad], 1)
expect("BadTopic tried once", tries[topic], 1)
if tries[down] < 3:
    errors.append("503 retried only %d times" % tries[down])
if tries[down2] < 3:
    errors.append("500 retried only %d times" % tries[down2])
ids = {r["apns_id"] for r in recs if r["token"] == down}
expect("retries keep one apns-id", len(ids), 1)
times = sorted(r["ts_ms"] for r in recs if r["token"] == down)
gaps = [b - a for a, b in zip(times, times[1:])]
if gaps and gaps[-1] <= gaps[0]:
    errors.append("no back-off between retries: %r" % gaps)
if times and times[-1] - times[0] > 4500:
    errors.append("invite retried past its 4 s ring window")
expect("410 outcome", settled[1]["outcome"], "dead_token")
expect("BadDeviceToken outcome", settled[2]["outcome"], "dead_token")
expect("BadTopic outcome", settled[3]["outcome"], "dead_lettered")
expect("503 invite outcome", (settled[4]["outcome"], settled[4].get("cause")),
       ("suppressed", "expired"))
expect("500 cancel outcome", settled[5]["outcome"], "dead_lettered")
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PYEOF

consume_all push.feedback >"$T/feedback.jsonl"
$PY - "$T/feedback.jsonl" "$GONE" "$BAD" <<'PYEOF' && ok "one feedback message per dead token, with every field" || fail "feedback wrong (see above)"
import json, sys
msgs = [json.loads(l) for l in open(sys.argv[1])]
gone, bad = sys.argv[2:4]
errors = []
if sorted(m["key"] for m in msgs) != sorted([gone, bad]):
    errors.append("keys: %r" % [m["key"] for m in msgs])
for m in msgs:
    v = json.loads(m["payload"])
    want = {"device_token", "reason", "status", "timestamp", "apns_topic",
            "environment", "_j_uid", "call_id", "_j_msgid"}
    if set(v) != want:
        errors.append("fields: %r" % sorted(v))
    if v["device_token"] == gone:
        if (v["status"], v["reason"]) != (410, "Unregistered") or not v["timestamp"]:
            errors.append("410 message: %r" % v)
    elif (v["status"], v["reason"], v["timestamp"]) != (400, "BadDeviceToken", None):
        errors.append("400 message: %r" % v)
    if v["_j_uid"] != "user-%d" % v["_j_msgid"]:
        errors.append("_j_uid not carried: %r" % v)
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PYEOF
check "the feedback message validates against its schema" $PY -c '
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
for l in open(sys.argv[2]):
    jsonschema.Draft202012Validator(schema).validate(json.loads(json.loads(l)["payload"]))
' "$CALLPUSH_SRC/schemas/token-feedback.schema.json" "$T/feedback.jsonl"
check "the request error is logged loudly" grep -q '"level":"error","msg":"APNs rejected the request"' "$T/worker.log"
finish
