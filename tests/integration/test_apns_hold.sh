#!/usr/bin/env bash
# A stream that never answers: the stand-in holds every request for one
# device. The push to it must give up at the request deadline, alone;
# pushes behind it, and a cancel above all, go through at once.
set -eu
. "$(dirname "$0")/lib.sh"

HELD=$(printf '%064x' 77)
start_kafka
start_apns --fail "$HELD=hold"
# One connection, so that everything shares it with the held stream.
start_worker worker --apns-connections 1 --apns-timeout-ms 3000
wait_assigned worker || { fail "worker got no partitions"; finish; }

$PY - "$HELD" >"$T/held" <<'PYEOF'
import json, sys, time
d = {"type": "invite", "call_id": "held-call", "_j_msgid": 7300001,
     "device_tokens": [sys.argv[1]], "created_at": int(time.time() * 1000),
     "ring_timeout_s": 8}
print("held-call|" + json.dumps(d))
PYEOF
produce_lines call.invite "$T/held"
date +%s%3N >"$T/held.t0"
sleep 0.5
invite_lines after 7300100 20 >"$T/after"
produce_lines call.invite "$T/after"
cancel_line other-call 7300200 >"$T/cancel"
produce_lines call.cancel "$T/cancel"
wait_until 20 accepted_ge 21 || fail "pushes behind the held stream waited"
# The held invite gives up when its ring window ends (8 s).
wait_until 20 log_ge worker '"call_id":"held-call"' 1 || true
wait_until 20 grep -q '"event settled".*"_j_msgid":7300001' "$T/worker.log" || true

$PY - "$T" "$HELD" <<'PYEOF' && ok "a held stream delays nothing, and times out at its deadline" || fail "held stream (see above)"
import json, sys
t, held = sys.argv[1], sys.argv[2]
recs = [json.loads(l) for l in open(t + "/apns.jsonl")]
t0 = int(open(t + "/held.t0").read())
errors = []
cancel = [r for r in recs if r["token"] == "%064x" % 7300200 and r["status"] == 200]
if not cancel:
    errors.append("the cancel was not accepted")
else:
    created = json.loads(open(t + "/cancel").read().split("|", 1)[1])["created_at"]
    wait = cancel[0]["ts_ms"] - created
    print("cancel accepted %d ms after it was produced" % wait)
    if wait > 1000:
        errors.append("the cancel waited %d ms" % wait)
held_recs = [r for r in recs if r["token"] == held]
if not held_recs:
    errors.append("the held request was never recorded as closed")
else:
    first = held_recs[0]
    gone = first["ts_ms"] - t0
    print("held stream closed %d ms after the invite was produced" % gone)
    if not first["held"] or first["status"] != 0:
        errors.append("first held record: %s" % first)
    if not 2500 <= gone <= 5000:
        errors.append("held stream closed after %d ms, want about 3000" % gone)
after = [r for r in recs if r["status"] == 200 and r["token"] != held]
if len(after) < 21:
    errors.append("only %d other pushes accepted" % len(after))
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PYEOF
check "the worker named the deadline" log_ge worker 'no answer from APNs within 3000 ms' 1
finish
