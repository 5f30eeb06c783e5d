#!/usr/bin/env bash
# A connection lost with requests in flight: the stand-in answers late
# (1.5 s) and goes silent (SIGUSR1) while ten requests wait for their
# answers on it. The worker's PING finds the dead connection, and the ten
# go again on a new one; the ten answered before are not sent again.
set -eu
. "$(dirname "$0")/lib.sh"

start_kafka
start_apns --delay-ms 1500
start_worker worker --apns-connections 1 --apns-ping-interval-ms 500 \
    --apns-timeout-ms 20000
wait_assigned worker || { fail "worker got no partitions"; finish; }

invite_lines answered 7900000 10 >"$T/a"
produce_lines call.invite "$T/a"
wait_until 20 accepted_ge 10 || fail "the first ten were not accepted"
invite_lines lost 7900100 10 >"$T/b"
produce_lines call.invite "$T/b"
# Their answers are due 1.5 s after they arrive: silence the stand-in
# while they wait.
sleep 0.9
kill -USR1 "$APNS_PID"
wait_until 20 accepted_ge 20 || fail "the lost ten were not resent"
wait_until 10 log_ge worker '"event settled"' 20 || true
sleep 1

$PY - "$T" <<'PYEOF' && ok "unanswered requests resent once on a new connection, answered ones not at all" || fail "connection lost (see above)"
import collections, json, sys
t = sys.argv[1]
recs = [json.loads(l) for l in open(t + "/apns.jsonl")]
ok = [r for r in recs if r["status"] == 200]
per_id = collections.Counter(r["apns_id"] for r in ok)
tokens = lambda first: {"%064x" % (first + i) for i in range(10)}
errors = []
if len(per_id) != 20 or any(n != 1 for n in per_id.values()):
    errors.append("accepted: %d distinct, counts %s" % (
        len(per_id), collections.Counter(per_id.values())))
a = [r for r in recs if r["token"] in tokens(7900000)]
if len(a) != 10:
    errors.append("the answered ten were sent %d times in all" % len(a))
b_ok = [r for r in ok if r["token"] in tokens(7900100)]
a_conns = {r["conn"] for r in a}
if any(r["conn"] in a_conns for r in b_ok):
    errors.append("a lost request was accepted on the silenced connection")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PYEOF
check "the worker logged the lost connection and what it resent" \
    grep -q '"apns connection closed".*no answer to PING.*"resent":10' "$T/worker.log"
finish
