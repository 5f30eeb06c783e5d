#!/usr/bin/env bash
# Two workers share the topics; one is killed with SIGKILL mid-stream while
# invites and cancels flow. Across both workers' logs every event ends in a
# final outcome; no invite is pushed after its call's cancel; and the only
# events handled twice are the ones the killed worker had in flight (its
# pushes or their commits), each pushed again with the same apns-id and
# collapse id.
set -eu
. "$(dirname "$0")/lib.sh"

INFLIGHT=40
start_kafka
start_apns --delay-ms 100   # keeps a window of pushes in flight
start_worker w1 --max-inflight "$INFLIGHT"
start_worker w2 --max-inflight "$INFLIGHT"
wait_assigned w1 || { fail "w1 got no partitions"; finish; }
wait_assigned w2 || { fail "w2 got no partitions"; finish; }

# 600 calls: an invite each, and a cancel for every third, produced while
# the invites are still queued.
$PY - "$T" <<'PYEOF'
import json, sys, time
t = sys.argv[1]
now = int(time.time() * 1000)
with open(t + "/invites", "w") as inv, open(t + "/cancels", "w") as can:
    for i in range(600):
        call = "killed-%d" % i
        d = {"type": "invite", "call_id": call, "_j_msgid": 30000 + i,
             "device_tokens": ["%064x" % (30000 + i)], "created_at": now,
             "ring_timeout_s": 120}
        inv.write("%s|%s\n" % (call, json.dumps(d)))
        if i % 3 == 0:
            d.update(type="cancel", _j_msgid=60000 + i, reason="hangup")
            d.pop("ring_timeout_s")
            can.write("%s|%s\n" % (call, json.dumps(d)))
PYEOF
produce_lines call.invite "$T/invites"
wait_until 30 accepted_ge 100 || fail "nothing pushed"
produce_lines call.cancel "$T/cancels"
wait_until 30 accepted_ge 250 || true
kill -KILL "$w1_PID"

# 600 invites + 200 cancels, each with an outcome somewhere.
all_settled() {
    $PY - "$T" <<'PYEOF'
import json, sys
t = sys.argv[1]
ids = set()
for w in ("w1", "w2"):
    for l in open("%s/%s.log" % (t, w), errors="replace"):
        try:
            j = json.loads(l)
        except ValueError:
            continue   # the last line of a killed worker may be cut
        if j.get("msg") == "event settled":
            ids.add(j["_j_msgid"])
sys.exit(0 if len(ids) >= 800 else 1)
PYEOF
}
wait_until 120 all_settled || fail "not every event settled"

$PY - "$T" "$INFLIGHT" <<'PYEOF' && ok "one outcome per event, bar the killed worker's in-flight window" || fail "the kill lost, repeated or misordered events (see above)"
import calendar, collections, json, sys, time
t, inflight = sys.argv[1], int(sys.argv[2])
outcomes = collections.defaultdict(list)
for w in ("w1", "w2"):
    for l in open("%s/%s.log" % (t, w), errors="replace"):
        try:
            j = json.loads(l)
        except ValueError:
            continue
        if j.get("msg") == "event settled":
            ts = calendar.timegm(time.strptime(j["ts"][:19], "%Y-%m-%dT%H:%M:%S"))
            ts = ts * 1000 + int(j["ts"][20:23])
            outcomes[j["_j_msgid"]].append((w, j["outcome"], j.get("cause"), ts))
acc = collections.defaultdict(list)
for l in open(t + "/apns.jsonl"):
    r = json.loads(l)
    if r["status"] == 200:
        b = json.loads(r["body"])
        acc[b["_j_msgid"]].append(r)
errors = []
want = set(range(30000, 30600)) | {60000 + i for i in range(0, 600, 3)}
missing = want - set(outcomes)
if missing:
    errors.append("no outcome for %d events" % len(missing))
twice = {m: o for m, o in outcomes.items() if len(o) > 1}
# The killed worker's window: what it settled in its last half second (its
# commit runs every 50 ms, then travels) and what it had in flight.
last_w1 = max(ts for o in outcomes.values() for w, _, _, ts in o if w == "w1")
window = last_w1 - 500
for m, o in twice.items():
    w1 = [ts for w, _, _, ts in o if w == "w1"]
    if not w1:
        # The survivor reading its own events again (a commit refused
        # during the rebalance) may only find them duplicates.
        if [x[1:3] for x in o[1:]] != [("suppressed", "duplicate")] * (len(o) - 1):
            errors.append("%d handled twice without the kill: %r" % (m, o))
    elif min(w1) < window:
        errors.append("%d settled by w1 long before the kill, handled again"
                      % m)
dups = {m: rs for m, rs in acc.items() if len(rs) > 1}
for m, rs in dups.items():
    if len({r["apns_id"] for r in rs}) != 1 or \
       len({r["headers"].get("apns-collapse-id") for r in rs}) != 1:
        errors.append("%d pushed twice with different ids" % m)
    if min(r["ts_ms"] for r in rs) < window:
        errors.append("%d pushed twice, the first time long before the kill"
                      % m)
for i in range(0, 600, 3):
    inv, can = acc.get(30000 + i, []), acc.get(60000 + i, [])
    if inv and can and max(r["ts_ms"] for r in inv) > min(r["ts_ms"] for r in can):
        errors.append("invite of killed-%d pushed after its cancel" % i)
print("  handled twice: %d events; pushed twice: %d (same apns-id and collapse id)"
      % (len(twice), len(dups)))
for e in errors[:20]:
    print("  " + e)
sys.exit(1 if errors else 0)
PYEOF
finish
