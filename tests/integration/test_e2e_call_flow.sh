#!/usr/bin/env bash
# The example invite and cancel of the call flow, end to end: produced to
# Kafka with kcat, pushed by the worker, received by the APNs stand-in with
# the headers and the payload the iOS app expects, field for field.
set -eu
. "$(dirname "$0")/lib.sh"

EX=$CALLPUSH_SRC/schemas/examples
start_kafka
start_apns
start_worker worker
wait_assigned worker || { fail "worker got no partitions"; finish; }

fresh "$EX/valid/invite-call-flow.json" >"$T/invite.json"
fresh "$EX/valid/cancel-call-flow.json" >"$T/cancel.json"
CALL_ID=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["call_id"])' "$T/invite.json")
produce call.invite "$CALL_ID" "$T/invite.json"
wait_until 30 accepted_ge 1 || fail "invite not pushed"
produce call.cancel "$CALL_ID" "$T/cancel.json"
wait_until 30 accepted_ge 2 || fail "cancel not pushed"

# The same invite again (a producer retry): handled already, not pushed.
produce call.invite "$CALL_ID" "$T/invite.json"
wait_until 30 log_ge worker '"cause":"duplicate"' 1 ||
    fail "repeated invite not suppressed"

$PY - "$T" "$EX" "$BUNDLE" <<'PYEOF' && ok "stand-in received the call-flow pushes field for field" || fail "call-flow pushes differ (see above)"
import hashlib, json, sys

t, ex, bundle = sys.argv[1:4]
recs = [json.loads(l) for l in open(t + "/apns.jsonl")]
errors = []

def expect(what, got, want):
    if got != want:
        errors.append("%s: got %r, want %r" % (what, got, want))

def apns_id(msgid, token):
    d = bytearray(hashlib.sha256(("%s\n%s" % (msgid, token.lower())).encode()).digest()[:16])
    d[6] = (d[6] & 0x0F) | 0x80
    d[8] = (d[8] & 0x3F) | 0x80
    h = d.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])

expect("requests", len(recs), 2)
for name, kind, rec in (("invite", "invite", recs[0]), ("cancel", "cancel", recs[1])):
    ev = json.load(open("%s/%s.json" % (t, kind)))
    want_body = json.load(open("%s/payload/%s-call-flow.json" % (ex, kind)))
    token = ev["device_tokens"][0]
    h = rec["headers"]
    expect(name + " status", rec["status"], 200)
    expect(name + " :method", h.get(":method"), "POST")
    expect(name + " :path", h.get(":path"), "/3/device/" + token)
    expect(name + " apns-push-type", h.get("apns-push-type"), "alert")
    expect(name + " apns-topic", h.get("apns-topic"), bundle)
    expect(name + " apns-priority", h.get("apns-priority"), "10")
    expect(name + " apns-collapse-id", h.get("apns-collapse-id"), ev["call_id"])
    expect(name + " apns-id", h.get("apns-id"), apns_id(ev["_j_msgid"], token))
    if kind == "invite":
        want_exp = (ev["created_at"] + ev.get("ring_timeout_s", 60) * 1000) // 1000
    else:
        want_exp = ev["created_at"] // 1000 + 300
    expect(name + " apns-expiration", h.get("apns-expiration"), str(want_exp))
    body = json.loads(rec["body"])
    expect(name + " payload", body, want_body)
    # Exact digits on the wire, not a rounded double.
    if str(ev["_j_msgid"]) not in rec["body"]:
        errors.append(name + ": _j_msgid digits not in the body")
# One provider token, signed once and reused by every request.
expect("one JWT for all requests", len({r["jwt_iat"] for r in recs}), 1)
expect("invite _j_msgid", json.loads(recs[0]["body"])["_j_msgid"], 18101194842707757)
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PYEOF

# The worker's log: JSON lines, the outcome of each event, no whole token.
TOKEN=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["device_tokens"][0])' "$T/invite.json")
wait_until 10 log_ge worker '"outcome":"pushed"' 4
check "every log line is a JSON object" $PY -c '
import json, sys
for l in open(sys.argv[1]):
    assert isinstance(json.loads(l), dict), l
' "$T/worker.log"
check "three events settled: two pushed, one duplicate" \
    test "$(log_count worker '"msg":"event settled"')" -eq 3
check "push lines carry status, apns-id and source" $PY -c '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
pushes = [l for l in lines if l["msg"] == "push"]
assert len(pushes) == 2, pushes
for p in pushes:
    for k in ("call_id", "_j_msgid", "type", "topic", "partition", "offset",
              "token", "status", "apns_id", "outcome"):
        assert k in p, (k, p)
    assert p["status"] == 200 and p["outcome"] == "pushed", p
assert pushes[0]["_j_msgid"] == 18101194842707757, pushes[0]
' "$T/worker.log"
check "no whole device token in the log" test "$(log_count worker "$TOKEN")" -eq 0
check "no provider token in the log" test "$(log_count worker 'eyJ')" -eq 0

kill -TERM "$worker_PID"
check "worker exits 0 on SIGTERM" wait "$worker_PID"
finish
