#!/usr/bin/env bash
# The promises to the people whose phones ring: a message produced three
# times rings once per device; an invite whose cancel came first is never
# pushed; invites replayed after their ring window are suppressed, counted;
# a missing or far-future created_at gives way to the Kafka timestamp.
set -eu
. "$(dirname "$0")/lib.sh"

start_kafka
start_apns
start_worker worker --summary-interval-s 1
wait_assigned worker || { fail "worker got no partitions"; finish; }

ev() { # ev TYPE CALL MSGID AGE_S TOKEN...: one "key|json" line
    $PY - "$@" <<'PYEOF'
import json, sys, time
typ, call, msgid, age = sys.argv[1:5]
d = {"type": typ, "call_id": call, "_j_msgid": int(msgid),
     "device_tokens": sys.argv[5:],
     "created_at": int(time.time() * 1000) - int(age) * 1000}
print("%s|%s" % (call, json.dumps(d)))
PYEOF
}
T1=$(printf '%064x' 11) T2=$(printf '%064x' 12) T3=$(printf '%064x' 13)

# 1. The same invite three times (a producer retrying): one push per token.
ev invite dup-call 5001 0 "$T1" "$T2" >"$T/dup"
cat "$T/dup" "$T/dup" "$T/dup" >"$T/dup3"
produce_lines call.invite "$T/dup3"

# 2. The cancel overtakes its invite (producer race).
ev cancel race-call 5011 0 "$T3" >"$T/race-cancel"
produce_lines call.cancel "$T/race-cancel"
wait_until 20 log_ge worker '"call_id":"race-call"' 2 || true
ev invite race-call 5010 0 "$T3" >"$T/race-invite"
produce_lines call.invite "$T/race-invite"

# 3. Invites replayed long after their ring window.
for i in 1 2 3; do ev invite "old-$i" "502$i" 900 "$T1"; done >"$T/old"
produce_lines call.invite "$T/old"

# 4. An invite without created_at, and one from far in the future: both are
# timed by the Kafka timestamp instead, pushed, and logged.
$PY - "$T1" >"$T/clock" <<'PYEOF'
import json, sys, time
for msgid, created in ((5031, None), (5032, int(time.time() * 1000) + 86400000)):
    d = {"type": "invite", "call_id": "clock-%d" % msgid, "_j_msgid": msgid,
         "device_tokens": [sys.argv[1]]}
    if created is not None:
        d["created_at"] = created
    print("%s|%s" % (d["call_id"], json.dumps(d)))
PYEOF
produce_lines call.invite "$T/clock"

settled() { log_ge worker '"event settled"' 10; }
wait_until 30 settled || fail "not every event settled"
sleep 1.5   # one more summary line

$PY - "$T" <<'PYEOF' && ok "duplicates, a cancelled call and late invites never rang" || fail "call semantics broken (see above)"
import collections, json, sys, time
t = sys.argv[1]
pushed = collections.Counter()
for l in open(t + "/apns.jsonl"):
    r = json.loads(l)
    if r["status"] == 200:
        b = json.loads(r["body"])
        pushed[(b["_j_msgid"], r["token"][-2:])] += 1
lines = [json.loads(l) for l in open(t + "/worker.log")]
settled = [l for l in lines if l["msg"] == "event settled"]
causes = collections.Counter((l["_j_msgid"], l["outcome"], l.get("cause"))
                             for l in settled)
errors = []
def expect(what, got, want):
    if got != want:
        errors.append("%s: got %r, want %r" % (what, got, want))
expect("invite pushed once to token 1", pushed[(5001, "0b")], 1)
expect("invite pushed once to token 2", pushed[(5001, "0c")], 1)
expect("duplicates suppressed", causes[(5001, "suppressed", "duplicate")], 2)
expect("cancel pushed", pushed[(5011, "0d")], 1)
expect("raced invite never pushed", pushed[(5010, "0d")], 0)
expect("raced invite suppressed as cancelled",
       causes[(5010, "suppressed", "cancelled")], 1)
for i in (5021, 5022, 5023):
    expect("late invite %d never pushed" % i, pushed[(i, "0b")], 0)
    expect("late invite %d suppressed as late" % i,
           causes[(i, "suppressed", "late")], 1)
expect("invite without created_at pushed", pushed[(5031, "0b")], 1)
expect("invite from the future pushed", pushed[(5032, "0b")], 1)
warned = [l["msg"] for l in lines if l["msg"].startswith("created_at ")]
expect("clock fallbacks logged", sorted(warned), [
    "created_at in the future: using the Kafka timestamp",
    "created_at missing: using the Kafka timestamp"])
exp = {json.loads(l)["headers"]["apns-expiration"] for l in open(t + "/apns.jsonl")
       if json.loads(json.loads(l)["body"])["_j_msgid"] == 5032}
if any(int(e) > time.time() + 3600 for e in exp):
    errors.append("future created_at stretched the ring window: %r" % exp)
summ = [l for l in lines if l["msg"] == "summary"][-1]
expect("late invites counted in the summary", summ["suppressed_late"], 3)
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PYEOF
finish
