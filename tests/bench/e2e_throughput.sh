#!/usr/bin/env bash
# Benchmark (not a test): pushes per second end to end, Kafka to the APNs
# stand-in. Produces N invites with distinct calls into the mock cluster
# first, then starts one worker and times the stand-in's acceptances from
# the first to the last.
#
# Usage: tests/bench/e2e_throughput.sh [N] [CONNECTIONS]   (default 50000 1)
set -eu
N=${1:-50000}
CONNS=${2:-1}
export CALLPUSH_SRC=${CALLPUSH_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
export CALLPUSH_BUILD=${CALLPUSH_BUILD:-$CALLPUSH_SRC/build}
. "$CALLPUSH_SRC/tests/integration/lib.sh"

# Keep every partition under the mock cluster's ~100,000-message cap.
start_kafka --topic call.invite:16 --topic call.cancel:16 \
    --topic push.feedback:1 --topic call.dlq:1
start_apns
$PY - "$CALLPUSH_SRC/schemas/examples/valid/invite-call-flow.json" "$N" \
    >"$T/events" <<'PYEOF'
import json, sys, time
d = json.load(open(sys.argv[1]))
d["created_at"] = int(time.time() * 1000) + 600000  # rings long enough
d["ring_timeout_s"] = 600
for i in range(int(sys.argv[2])):
    d["_j_msgid"] = 5000000000000000 + i
    d["call_id"] = "bench-%d" % i
    d["device_tokens"] = ["%064x" % (i + 1)]
    print("%s|%s" % (d["call_id"], json.dumps(d, separators=(",", ":"))))
PYEOF
produce_lines call.invite "$T/events"
start_worker worker --apns-connections "$CONNS" --log-level warn \
    --max-inflight 2000
wait_until 600 lines_ge "$T/apns.jsonl" "$N" || true
$PY - "$T/apns.jsonl" "$N" "$CONNS" <<'PYEOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
ok = [r for r in recs if r["status"] == 200]
ts = sorted(r["ts_ms"] for r in ok)
conns = len({r["conn"] for r in recs})
span = (ts[-1] - ts[0]) / 1000 if len(ts) > 1 else float("nan")
print("pushes accepted: %d of %s" % (len(ok), sys.argv[2]))
print("APNs connections requested %s, opened %d" % (sys.argv[3], conns))
print("first to last acceptance: %.2f s" % span)
print("end-to-end throughput: %.0f pushes/s" % (len(ok) / span))
PYEOF
