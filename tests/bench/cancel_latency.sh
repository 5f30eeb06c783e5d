#!/usr/bin/env bash
# Benchmark (not a test): how long a cancel takes from its production to
# APNs' acceptance, alone and behind a backlog of invites. 100 cancels are
# written one every 10 ms to one kcat; each one's latency runs from its
# Kafka timestamp (set by the producer as it hands the message over: kcat
# reads its input in blocks, so created_at would count kcat's own delay)
# to the stand-in's answer. The second run produces N invites first, then
# the same number of cancels.
#
# Usage: tests/bench/cancel_latency.sh [N]   (default 10000)
set -eu
N=${1:-10000}
export CALLPUSH_SRC=${CALLPUSH_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
export CALLPUSH_BUILD=${CALLPUSH_BUILD:-$CALLPUSH_SRC/build}
. "$CALLPUSH_SRC/tests/integration/lib.sh"

cancels() { # cancels FIRST: 100 cancels to kcat, one every 10 ms
    $PY -u - "$1" <<'PYEOF' |
import json, sys, time
first = int(sys.argv[1])
for i in range(100):
    d = {"type": "cancel", "call_id": "lat-%d" % (first + i),
         "_j_msgid": first + i, "device_tokens": ["%064x" % (first + i)],
         "created_at": int(time.time() * 1000)}
    print("%s|%s" % (d["call_id"], json.dumps(d)), flush=True)
    time.sleep(0.01)
PYEOF
        kcat -b "$BROKERS" -P -t call.cancel -K '|' -X linger.ms=0
}

start_kafka --topic call.invite:8 --topic call.cancel:8 \
    --topic push.feedback:1 --topic call.dlq:1
start_apns
start_worker worker
wait_assigned worker

cancels 1000000
wait_until 30 accepted_ge 100 || true

invite_lines bl 2000000 "$N" >"$T/invites"
produce_lines call.invite "$T/invites"
cancels 3000000
wait_until 120 accepted_ge $((N + 200)) || true
consume_all call.cancel >"$T/cancels.jsonl"

$PY - "$T" "$N" <<'PYEOF'
import json, sys
t, n = sys.argv[1], int(sys.argv[2])
acc, last_invite = {}, 0
for l in open(t + "/apns.jsonl"):
    r = json.loads(l)
    if r["status"] != 200:
        continue
    m = json.loads(r["body"])["_j_msgid"]
    acc[m] = r["ts_ms"]
    if 2000000 <= m < 2000000 + n:
        last_invite = max(last_invite, r["ts_ms"])
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]
produced = {}
for l in open(t + "/cancels.jsonl"):
    m = json.loads(l)
    produced[json.loads(m["payload"])["_j_msgid"]] = m["ts"]
for first, label in ((1000000, "no backlog"),
                     (3000000, "behind %d invites" % n)):
    created = {m: produced[m] for m in range(first, first + 100) if m in produced}
    lat = [acc[m] - c for m, c in created.items() if m in acc]
    line = "cancel latency %-22s n=%3d  p50 %4d ms  p99 %4d ms  max %4d ms" % (
        label + ":", len(lat), pct(lat, 50), pct(lat, 99), max(lat))
    if first == 3000000:
        ahead = sum(1 for m, c in created.items() if m in acc and acc[m] < last_invite)
        line += "  (%d of them accepted before the backlog drained)" % ahead
    print(line)
PYEOF
