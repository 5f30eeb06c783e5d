#!/usr/bin/env bash
# Retries: a device whose pushes fail with 503 three times and then succeed
# gets the push on the fourth try, after growing back-off pauses, with the
# same apns-id every time. A push still failing when its call is cancelled
# is never sent again.
set -eu
. "$(dirname "$0")/lib.sh"

FLAKY=$(printf '%064x' 81) DOWN=$(printf '%064x' 82)
start_kafka
start_apns --fail "$FLAKY=503:ServiceUnavailable:3" \
    --fail "$DOWN=503:ServiceUnavailable"
start_worker worker --cancel-expiration-s 5
wait_assigned worker || { fail "worker got no partitions"; finish; }

ev() { # ev TYPE CALL MSGID TOKEN
    $PY - "$@" <<'PYEOF'
import json, sys, time
typ, call, msgid, token = sys.argv[1:]
d = {"type": typ, "call_id": call, "_j_msgid": int(msgid),
     "device_tokens": [token], "created_at": int(time.time() * 1000),
     "ring_timeout_s": 60}
print("%s|%s" % (call, json.dumps(d)))
PYEOF
}
ev invite flaky-call 7500001 "$FLAKY" >"$T/flaky"
produce_lines call.invite "$T/flaky"
wait_until 30 accepted_ge 1 || fail "the flaky device never got its push"

$PY - "$T" "$FLAKY" <<'PYEOF' && ok "503 three times, then delivered on the fourth try with back-off" || fail "retry (see above)"
import json, sys
t, tok = sys.argv[1], sys.argv[2]
recs = [json.loads(l) for l in open(t + "/apns.jsonl") if json.loads(l)["token"] == tok]
errors = []
statuses = [r["status"] for r in recs]
if statuses != [503, 503, 503, 200]:
    errors.append("statuses %s, want 503 503 503 200" % statuses)
if len({r["apns_id"] for r in recs}) != 1:
    errors.append("the apns-id changed between tries")
collapse = {r["headers"].get("apns-collapse-id") for r in recs}
if len(collapse) != 1:
    errors.append("the collapse id changed between tries: %s" % collapse)
gaps = [b["ts_ms"] - a["ts_ms"] for a, b in zip(recs, recs[1:])]
print("pauses between tries (ms): %s" % gaps)
# Back-off base 200 ms, doubling, each pause at least half its step.
if len(gaps) == 3 and not (gaps[0] >= 90 and gaps[1] >= 190 and gaps[2] >= 390):
    errors.append("pauses too short for back-off")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PYEOF

# down_tried_ge N: the stand-in has seen N requests for DOWN.
down_tried_ge() {
    [ "$(grep -c "\"token\":\"$DOWN\"" "$T/apns.jsonl")" -ge "$1" ]
}
ev invite down-call 7500002 "$DOWN" >"$T/down"
produce_lines call.invite "$T/down"
wait_until 20 down_tried_ge 3 || fail "the failing invite was not retried"
ev cancel down-call 7500003 "$DOWN" >"$T/down-cancel"
produce_lines call.cancel "$T/down-cancel"
wait_until 20 grep -q '"event settled".*"_j_msgid":7500002' "$T/worker.log" ||
    fail "the invite never settled"
# Long enough for two more back-off steps, had the retries gone on.
sleep 4

$PY - "$T" "$DOWN" <<'PYEOF' && ok "no retry of the invite after its call's cancel" || fail "cancel during back-off (see above)"
import json, sys
t, tok = sys.argv[1], sys.argv[2]
recs = [json.loads(l) for l in open(t + "/apns.jsonl")]
recs = [r for r in recs if r["token"] == tok]
invite_id = recs[0]["apns_id"]
cancel = [r for r in recs if r["apns_id"] != invite_id]
errors = []
if not cancel:
    errors.append("the cancel was never sent")
else:
    after = [r for r in recs if r["apns_id"] == invite_id
             and r["ts_ms"] > cancel[0]["ts_ms"]]
    # One attempt may have been on the wire when the cancel arrived.
    if len(after) > 1:
        errors.append("%d invite tries after the cancel" % len(after))
    print("invite tries: %d, after the cancel: %d" % (
        sum(r["apns_id"] == invite_id for r in recs), len(after)))
settled = [json.loads(l) for l in open(t + "/worker.log")
           if '"event settled"' in l and '"_j_msgid":7500002' in l]
if not settled or settled[0].get("cause") != "cancelled":
    errors.append("invite settled as %s, want suppressed/cancelled"
                  % (settled[0] if settled else None))
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PYEOF
finish
