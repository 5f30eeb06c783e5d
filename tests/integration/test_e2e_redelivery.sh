#!/usr/bin/env bash
# Offsets are committed only for settled events: a worker killed while its
# pushes are in flight loses nothing (the next worker pushes them), and
# what it had settled and committed is not pushed again.
set -eu
. "$(dirname "$0")/lib.sh"

EX=$CALLPUSH_SRC/schemas/examples
start_kafka
start_apns

events() { # events FIRST COUNT: invites with msgids FIRST.., one per line
    $PY - "$EX/valid/invite-call-flow.json" "$1" "$2" <<'PYEOF'
import json, sys, time
d = json.load(open(sys.argv[1]))
first, count = int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    d["created_at"] = int(time.time() * 1000)
    d["_j_msgid"] = first + i
    d["call_id"] = "redeliver-%d" % (first + i)
    print("%s|%s" % (d["call_id"], json.dumps(d, separators=(",", ":"))))
PYEOF
}

start_worker w1
wait_assigned w1 || { fail "worker got no partitions"; finish; }
events 1000 10 >"$T/phase1"
produce_lines call.invite "$T/phase1"
wait_until 30 accepted_ge 10 || fail "phase 1 not pushed"
# Auto-commit runs every second: give it time to commit phase 1.
sleep 3

# Freeze APNs so the next pushes stay in flight, then kill the worker: its
# offsets for them must not have been committed.
kill -STOP "$APNS_PID"
events 2000 10 >"$T/phase2"
produce_lines call.invite "$T/phase2"
sleep 2
kill -KILL "$w1_PID"
# APNs never answered them: replace the frozen stand-in with a fresh one,
# keeping what the first one accepted.
kill -KILL "$APNS_PID"
mv "$T/apns.jsonl" "$T/apns-before.jsonl"
rm -f "$T/apns.port"
start_apns

start_worker w2
wait_assigned w2 || fail "second worker got no partitions"
wait_until 60 $PY -c '
import json, sys
ids = {json.loads(json.loads(l)["body"])["_j_msgid"] for l in open(sys.argv[1])
       if json.loads(l)["status"] == 200}
sys.exit(0 if all(2000 + i in ids for i in range(10)) else 1)
' "$T/apns.jsonl" || true

cat "$T/apns-before.jsonl" "$T/apns.jsonl" >"$T/apns-all.jsonl"
$PY - "$T/apns-all.jsonl" <<'PYEOF' && ok "nothing lost, nothing settled pushed twice" || fail "redelivery wrong (see above)"
import collections, json, sys
n = collections.Counter()
ids = collections.defaultdict(set)
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["status"] != 200:
        continue
    m = json.loads(r["body"])["_j_msgid"]
    n[m] += 1
    ids[m].add(r["apns_id"])
errors = []
for i in range(10):
    if n[1000 + i] != 1:
        errors.append("settled event %d pushed %d times" % (1000 + i, n[1000 + i]))
    if n[2000 + i] < 1:
        errors.append("in-flight event %d lost" % (2000 + i))
    if len(ids[2000 + i]) > 1:
        errors.append("event %d pushed with different apns-ids" % (2000 + i))
redo = sum(1 for i in range(10) if n[2000 + i] > 1)
print("  in-flight events pushed again after the kill: %d of 10" % redo)
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PYEOF
finish
