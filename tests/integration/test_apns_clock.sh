#!/usr/bin/env bash
# Provider tokens over simulated hours (apns-clock runs the APNs client on
# a clock the stand-in shares through --clock-file):
# - 8 senders over 125 minutes: one token per renewal period (minutes 0,
#   50 and 100), shared by all, and APNs never says
#   TooManyProviderTokenUpdates;
# - ExpiredProviderToken: one renewal, a new connection, the push
#   delivered; a second one within 20 minutes renews nothing and fails
#   with the local clock named.
set -eu
. "$(dirname "$0")/lib.sh"

run_clock() {
    "$CALLPUSH_BUILD/apns-clock" "$APNS_URL" "$T/certs/server.crt" \
        "$T/certs/AuthKey.p8" "$KEY_ID" "$TEAM_ID" "$BUNDLE" "$T/clock" "$@"
}

: >"$T/clock"
start_apns --clock-file "$T/clock"
run_clock hour >"$T/hour.jsonl" 2>"$T/hour.err" || fail "apns-clock hour: $(cat "$T/hour.err")"
$PY - "$T" <<'PYEOF' && ok "8 senders, 125 minutes: one token per 50 minutes, no TooManyProviderTokenUpdates" || fail "tokens over the hour (see above)"
import collections, json, sys
t = sys.argv[1]
res = [json.loads(l) for l in open(t + "/hour.jsonl")]
recs = [json.loads(l) for l in open(t + "/apns.jsonl")]
errors = []
if len(res) != 8 * 126 or any(r["status"] != 200 for r in res):
    errors.append("%d results, not all 200: %s" % (
        len(res), collections.Counter(r["status"] for r in res)))
iats = sorted({r["jwt_iat"] for r in recs})
print("tokens issued at (s after the first): %s" % [i - iats[0] for i in iats])
if len(iats) != 3:
    errors.append("%d tokens, want 3 (minutes 0, 50, 100)" % len(iats))
elif not all(2990 <= b - a <= 3010 for a, b in zip(iats, iats[1:])):
    errors.append("tokens not 50 minutes apart")
too_many = [r for r in recs if r["reason"] == "TooManyProviderTokenUpdates"]
if too_many:
    errors.append("%d TooManyProviderTokenUpdates" % len(too_many))
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PYEOF
kill "$APNS_PID"
wait "$APNS_PID" 2>/dev/null || true

T0=$(printf '%064x' 90) T1=$(printf '%064x' 91) T2=$(printf '%064x' 92)
: >"$T/clock"
rm -f "$T/apns.port"
start_apns --clock-file "$T/clock" --fail "$T1=403:ExpiredProviderToken:1" \
    --fail "$T2=403:ExpiredProviderToken:1"
run_clock expired "$T0" "$T1" "$T2" >"$T/expired.jsonl" 2>"$T/expired.err" ||
    fail "apns-clock expired: $(cat "$T/expired.err")"
$PY - "$T" "$T0" "$T1" "$T2" <<'PYEOF' && ok "ExpiredProviderToken: one renewal, new connection, delivered; none again within 20 minutes" || fail "expired token (see above)"
import json, sys
t, t0, t1, t2 = sys.argv[1:]
res = {r["token"]: r for r in (json.loads(l) for l in open(t + "/expired.jsonl"))}
recs = [json.loads(l) for l in open(t + "/apns.jsonl")]
errors = []
if res[t0]["status"] != 200:
    errors.append("first push: %s" % res[t0])
if res[t1]["status"] != 200 or res[t1]["attempts"] != 2:
    errors.append("expired once: %s" % res[t1])
r1 = [r for r in recs if r["token"] == t1]
if len(r1) != 2 or r1[0]["jwt_iat"] == r1[1]["jwt_iat"] or r1[0]["conn"] == r1[1]["conn"]:
    errors.append("the resend did not carry a new token on a new connection: %s"
                  % [(r["status"], r["jwt_iat"], r["conn"]) for r in r1])
if res[t2]["status"] != 403 or res[t2]["action"] != "fix":
    errors.append("second expiry within 20 minutes: %s" % res[t2])
if "clock" not in res[t2]["reason"]:
    errors.append("the error does not name the local clock: %s" % res[t2]["reason"])
iats = {r["jwt_iat"] for r in recs}
if len(iats) != 2:
    errors.append("%d tokens signed, want 2" % len(iats))
if any(r["reason"] == "TooManyProviderTokenUpdates" for r in recs):
    errors.append("TooManyProviderTokenUpdates")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PYEOF
finish
