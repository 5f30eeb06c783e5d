#!/usr/bin/env bash
# The server's stream limit, as APNs sets it: one stream per connection
# until a request has succeeded, then 1000. The worker must never open
# more streams than the connection allows at the time, and must use the
# raised limit once it comes. The same run measures what the client does
# on the wire after each answer: the stand-in keeps the stream reset
# limiter of Debian's libnghttp2 (a burst of 1,000 resets), so a client
# that reset every answered stream would lose its connection.
set -eu
. "$(dirname "$0")/lib.sh"

N=3000
start_kafka --topic call.invite:4 --topic call.cancel:4 \
    --topic push.feedback:1 --topic call.dlq:1
start_apns --initial-streams 1 --max-streams 1000 --delay-ms 20 \
    --keep-reset-limit --conn-record "$T/conns.jsonl"
start_worker worker --apns-connections 2 --max-inflight 2000
wait_assigned worker || { fail "worker got no partitions"; finish; }

invite_lines limit 7200000 "$N" >"$T/events"
produce_lines call.invite "$T/events"
wait_until 60 accepted_ge "$N" || fail "not every push was accepted"
# The connection records are written when connections close.
kill "$worker_PID"
wait "$worker_PID" 2>/dev/null || true
kill "$APNS_PID"
wait "$APNS_PID" 2>/dev/null || true

$PY - "$T" "$N" <<'PYEOF' && ok "the stream limit was never exceeded, and the raised one was used" || fail "stream limit (see above)"
import json, sys
t, n = sys.argv[1], int(sys.argv[2])
recs = [json.loads(l) for l in open(t + "/apns.jsonl")]
conns = [json.loads(l) for l in open(t + "/conns.jsonl")]
errors = []
over = [r for r in recs if r["open_streams"] > r["stream_limit"]]
if over:
    errors.append("%d requests over the limit, e.g. %s" % (len(over), over[0]))
if sum(c["limit_violations"] for c in conns) != 0:
    errors.append("the stand-in counted violations: %s" % conns)
first = {}
for r in recs:
    first.setdefault(r["conn"], r)
if any(r["stream_limit"] != 1 for r in first.values()):
    errors.append("a connection's first request did not see the limit 1")
peak = max(r["open_streams"] for r in recs)
if peak < 50:
    errors.append("at most %d streams open at once: the raised limit was "
                  "not used" % peak)
print("peak open streams on one connection: %d" % peak)
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PYEOF

$PY - "$T" "$N" <<'PYEOF' && ok "no RST_STREAM after answers, no connection lost to the reset limiter" || fail "resets on the wire (see above)"
import json, sys
t, n = sys.argv[1], int(sys.argv[2])
conns = [json.loads(l) for l in open(t + "/conns.jsonl")]
errors = []
rst = sum(c["rst_stream_received"] for c in conns)
served = [c for c in conns if c["requests"] > 0]
print("connections: %d, carrying requests: %d, RST_STREAM received: %d"
      % (len(conns), len(served), rst))
if rst != 0:
    errors.append("the client sent %d RST_STREAM frames" % rst)
if any(c["goaway_sent"] for c in conns):
    errors.append("the stand-in sent GOAWAY: %s" % conns)
if len(served) > 2:
    errors.append("%d pushes took %d connections, want at most 2"
                  % (n, len(served)))
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PYEOF
finish
