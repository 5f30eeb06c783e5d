#!/usr/bin/env bash
# A connection that goes silent while idle, without closing: the stand-in
# stops answering on every open connection (SIGUSR1). The worker's PING
# finds out and replaces it, so the next push goes through at once rather
# than after a request deadline on a dead connection.
set -eu
. "$(dirname "$0")/lib.sh"

start_kafka
start_apns --conn-record "$T/conns.jsonl"
# The deadline is long on purpose: only the PING can find the dead
# connection in the time the test allows.
start_worker worker --apns-connections 1 --apns-ping-interval-ms 500 \
    --apns-timeout-ms 20000
wait_assigned worker || { fail "worker got no partitions"; finish; }

invite_lines before 7400000 1 >"$T/before"
produce_lines call.invite "$T/before"
wait_until 20 accepted_ge 1 || fail "the first push was not accepted"
first_conn=$($PY -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["conn"])' "$T/apns.jsonl")

kill -USR1 "$APNS_PID"
wait_until 10 log_ge worker 'no answer to PING' 1 ||
    fail "the silent connection was not detected"
check "the silent connection was reported replaced" \
    log_ge worker '"apns connection closed"' 1

invite_lines after 7400100 1 >"$T/after"
t0=$(date +%s%3N)
produce_lines call.invite "$T/after"
wait_until 20 accepted_ge 2 || fail "the push after the silence was not accepted"
$PY - "$T" "$t0" "$first_conn" <<'PYEOF' && ok "the next push went through on a new connection at once" || fail "after the silence (see above)"
import json, sys
t, t0, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = [json.loads(l) for l in open(t + "/apns.jsonl")]
ok = [r for r in ok if r["status"] == 200]
errors = []
if len(ok) < 2:
    errors.append("only %d accepted" % len(ok))
else:
    wait = ok[1]["ts_ms"] - t0
    print("accepted %d ms after it was produced" % wait)
    if wait > 3000:
        errors.append("took %d ms" % wait)
    if ok[1]["conn"] == first:
        errors.append("went over the silenced connection %d" % first)
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PYEOF
finish
