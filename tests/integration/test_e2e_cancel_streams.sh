#!/usr/bin/env bash
# Cancels are never queued behind invites waiting for an HTTP/2 stream:
# with APNs allowing two streams and answering slowly, 200 invites fill
# every stream of their connection, and a cancel produced after them still
# goes out at once, on a connection of its own.
set -eu
. "$(dirname "$0")/lib.sh"

start_kafka
start_apns --max-streams 2 --delay-ms 500
start_worker worker
wait_assigned worker || { fail "worker got no partitions"; finish; }

invite_lines streams 500 200 >"$T/invites"
produce_lines call.invite "$T/invites"
wait_until 20 accepted_ge 4 || fail "invites not flowing"
$PY >"$T/cancel" <<'PYEOF'
import json, time
d = {"type": "cancel", "call_id": "another-call", "_j_msgid": 9,
     "device_tokens": ["%064x" % 9], "created_at": int(time.time() * 1000)}
print("another-call|%s" % json.dumps(d))
PYEOF
produce_lines call.cancel "$T/cancel"
wait_until 30 log_ge worker '"_j_msgid":9,' 1 || fail "cancel not settled"

$PY - "$T/apns.jsonl" <<'PYEOF' && ok "the cancel overtook 200 invites waiting for streams" || fail "cancel stuck behind invites (see above)"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["status"] == 200]
cancel = [r for r in recs if json.loads(r["body"])["_j_msgid"] == 9]
invites = [r for r in recs if json.loads(r["body"])["_j_msgid"] != 9]
if not cancel:
    print("  the cancel was never accepted")
    sys.exit(1)
before = sum(1 for r in invites if r["ts_ms"] < cancel[0]["ts_ms"])
conns = {r["conn"] for r in invites}
print("  invites accepted before the cancel: %d of 200" % before)
sys.exit(0 if before < 100 and cancel[0]["conn"] not in conns else 1)
PYEOF
finish
