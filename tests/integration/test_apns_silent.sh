#!/usr/bin/env bash
# Connections that died silently while quiet (as when a NAT forgets them),
# with the default PING interval of a minute: the first pushes after the
# quiet spell carry a PING, and when it gets no answer within 2 s the
# connections are replaced and the pushes resent. An invite and a cancel
# so arrive in seconds, not after a request deadline or the PING interval.
set -eu
. "$(dirname "$0")/lib.sh"

start_kafka
start_apns
start_worker worker
wait_assigned worker || { fail "worker got no partitions"; finish; }

invite_lines warm 7950000 1 >"$T/warm"
cancel_line warm-x 7950001 >>"$T/warm"
produce_lines call.invite "$T/warm"
wait_until 20 accepted_ge 2 || fail "the first pushes were not accepted"
# Quiet for longer than the 5 s after which a request brings a PING.
sleep 6
kill -USR1 "$APNS_PID"

invite_lines after 7950100 1 >"$T/after"
cancel_line after-x 7950101 >>"$T/after"
t0=$(date +%s%3N)
produce_lines call.invite "$T/after"
wait_until 20 accepted_ge 4 || fail "the pushes after the silence were not accepted"
$PY - "$T" "$t0" <<'PYEOF' && ok "an invite and a cancel went through within 4 s of the silence" || fail "silent connections (see above)"
import json, sys
t, t0 = sys.argv[1], int(sys.argv[2])
ok = [json.loads(l) for l in open(t + "/apns.jsonl")]
ok = [r for r in ok if r["status"] == 200][2:]
waits = [r["ts_ms"] - t0 for r in ok]
print("accepted after (ms): %s" % waits)
sys.exit(0 if len(waits) == 2 and max(waits) < 4000 else 1)
PYEOF
check "the worker named the unanswered PING" log_ge worker 'no answer to PING within 2000 ms' 1
finish
