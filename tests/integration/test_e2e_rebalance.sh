#!/usr/bin/env bash
# A second worker joining while pushes are in flight: the first lets them
# settle and commits before giving partitions up, so no event is pushed
# twice and every event is pushed exactly once across the two workers.
set -eu
. "$(dirname "$0")/lib.sh"

start_kafka
start_apns --delay-ms 3000   # keeps every push in flight for 3 s
start_worker w1
wait_assigned w1 || { fail "first worker got no partitions"; finish; }

$PY - "$CALLPUSH_SRC/schemas/examples/valid/invite-call-flow.json" \
    >"$T/events" <<'PYEOF'
import json, sys, time
d = json.load(open(sys.argv[1]))
for i in range(40):
    d["created_at"] = int(time.time() * 1000)
    d["ring_timeout_s"] = 120
    d["_j_msgid"] = 7000 + i
    d["call_id"] = "rebalance-%d" % i
    d["device_tokens"] = ["%064x" % (7000 + i)]
    print("%s|%s" % (d["call_id"], json.dumps(d, separators=(",", ":"))))
PYEOF
produce_lines call.invite "$T/events"
wait_until 20 log_ge w1 '"offset"' 1 || true
start_worker w2
wait_assigned w2 || fail "second worker got no partitions"

settled() {
    [ $(($(log_count w1 '"event settled"') + $(log_count w2 '"event settled"'))) -ge 40 ]
}
wait_until 60 settled || fail "not every event settled"

$PY - "$T" <<'PYEOF' && ok "no push twice, every event pushed once" || fail "rebalance duplicated or lost events (see above)"
import collections, json, sys
t = sys.argv[1]
acc = collections.Counter(json.loads(l)["apns_id"] for l in open(t + "/apns.jsonl")
                          if json.loads(l)["status"] == 200)
settled = collections.Counter()
again = collections.Counter()
for w in ("w1", "w2"):
    for l in open("%s/%s.log" % (t, w)):
        j = json.loads(l)
        if j["msg"] != "event settled":
            continue
        if j["outcome"] == "pushed":
            settled[j["_j_msgid"]] += 1
        else:
            again[(j["outcome"], j.get("cause"))] += 1
errors = []
if len(acc) != 40 or max(acc.values()) != 1:
    errors.append("stand-in: %d distinct apns-ids, %d pushed more than once"
                  % (len(acc), sum(1 for v in acc.values() if v > 1)))
if sorted(settled) != list(range(7000, 7040)) or max(settled.values()) != 1:
    errors.append("pushed: %d events, twice: %s" % (
        len(settled), sorted(k for k, v in settled.items() if v > 1)))
# An event read again (when a commit during the rebalance is refused, as
# librdkafka's mock cluster does) may only come back as a duplicate.
if set(again) - {("suppressed", "duplicate")}:
    errors.append("read again with another outcome: %r" % dict(again))
print("  events read again and suppressed as duplicates: %d" % sum(again.values()))
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PYEOF
check "the first worker revoked after its pushes settled" \
    grep -q '"partitions revoked"' "$T/w1.log"
finish
