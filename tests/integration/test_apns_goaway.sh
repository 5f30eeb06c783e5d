#!/usr/bin/env bash
# GOAWAY with pushes in flight: the stand-in answers 50 streams of a
# connection and refuses the rest with GOAWAY. Every push must still be
# accepted, each exactly once, the refused ones resent on a new connection.
set -eu
. "$(dirname "$0")/lib.sh"

start_kafka
# The delay keeps all 100 requests in flight when the GOAWAY goes out.
start_apns --goaway-after 50 --delay-ms 300 --conn-record "$T/conns.jsonl"
start_worker worker --apns-connections 1 --max-inflight 1000 \
    --summary-interval-s 1
wait_assigned worker || { fail "worker got no partitions"; finish; }

invite_lines goaway 7100000 100 >"$T/events"
produce_lines call.invite "$T/events"
wait_until 30 accepted_ge 100 || fail "not every push was accepted"
wait_until 10 log_ge worker '"event settled"' 100 || true
sleep 1

$PY - "$T" <<'PYEOF' && ok "100 pushes across a GOAWAY: each accepted exactly once" || fail "GOAWAY lost or duplicated pushes (see above)"
import collections, json, sys
t = sys.argv[1]
recs = [json.loads(l) for l in open(t + "/apns.jsonl")]
ok = collections.Counter(r["apns_id"] for r in recs if r["status"] == 200)
refused = [r for r in recs if r["refused"]]
errors = []
if len(ok) != 100:
    errors.append("%d distinct pushes accepted, want 100" % len(ok))
dups = [i for i, n in ok.items() if n != 1]
if dups:
    errors.append("accepted more than once: %s" % dups[:5])
if not refused:
    errors.append("the stand-in refused no stream: the GOAWAY was not tested")
conns = {r["conn"] for r in recs if r["status"] == 200}
if len(conns) < 2:
    errors.append("all accepted on %s: the refused ones were not resent "
                  "on a new connection" % conns)
# Every refused request is accepted later, on another connection.
for r in refused:
    later = [x for x in recs if x["apns_id"] == r["apns_id"]
             and x["status"] == 200]
    if not later or later[0]["conn"] == r["conn"]:
        errors.append("refused %s not resent elsewhere" % r["apns_id"])
        break
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PYEOF
check "the worker logged the GOAWAY" log_ge worker 'GOAWAY' 1
# The summary line counts the GOAWAY and the resent requests.
summary_counts() {
    grep '"msg":"summary"' "$T/worker.log" | tail -n 1 |
        grep '"apns_goaways":[1-9]' | grep -q '"apns_resent":[1-9]'
}
check "the summary counts GOAWAYs and resent requests" wait_until 5 summary_counts
check "every event settled as pushed" log_ge worker '"outcome":"pushed"' 100
finish
