#!/usr/bin/env bash
# Cancels are read and pushed ahead of invites: with 10,000 invites queued
# behind a slow APNs, a cancel produced afterwards is pushed before the
# backlog drains, and its own invite, still queued, is never pushed.
set -eu
. "$(dirname "$0")/lib.sh"

start_kafka
start_apns --delay-ms 50    # with 100 in flight: about 2,000 pushes/s
start_worker worker --max-inflight 100
wait_assigned worker || { fail "worker got no partitions"; finish; }

invite_lines backlog 100000 10000 >"$T/invites"
produce_lines call.invite "$T/invites"
wait_until 30 accepted_ge 200 || fail "the backlog did not start draining"

# The call of invite 9000, still queued: cancel it now.
$PY >"$T/cancel" <<'PYEOF'
import json, time
d = {"type": "cancel", "call_id": "backlog-9000", "_j_msgid": 900000,
     "device_tokens": ["%064x" % 109000], "created_at": int(time.time() * 1000)}
print("%s|%s" % (d["call_id"], json.dumps(d)))
PYEOF
produce_lines call.cancel "$T/cancel"
drained() { accepted_ge 10000; }
wait_until 120 drained || true

$PY - "$T/apns.jsonl" <<'PYEOF' && ok "the cancel overtook the backlog; its invite never rang" || fail "cancel priority broken (see above)"
import json, sys
cancel_ts, invite_ts, seen = None, [], set()
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["status"] != 200:
        continue
    m = json.loads(r["body"])["_j_msgid"]
    seen.add(m)
    if m == 900000:
        cancel_ts = r["ts_ms"]
    else:
        invite_ts.append(r["ts_ms"])
errors = []
if cancel_ts is None:
    errors.append("cancel never pushed")
elif cancel_ts >= max(invite_ts):
    errors.append("cancel pushed after the backlog drained")
else:
    behind = sum(1 for ts in invite_ts if ts > cancel_ts)
    print("  invites still queued when the cancel was accepted: %d" % behind)
if 109000 in seen:
    errors.append("the cancelled call's invite was pushed")
if len(seen - {900000}) != 9999:
    errors.append("%d invites pushed, want 9999" % len(seen - {900000}))
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PYEOF
finish
