#!/usr/bin/env bash
# The worker refuses to start when the invite and cancel topics have
# different partition counts: a call's invite and cancel would then land on
# different partition numbers, and cancels could no longer stop invites.
set -eu
. "$(dirname "$0")/lib.sh"

start_kafka --topic call.invite:4 --topic call.cancel:2 \
    --topic push.feedback:1 --topic call.dlq:1
bash "$CALLPUSH_SRC/tests/tools/mkcerts.sh" "$T/certs" >/dev/null
APNS_URL=https://127.0.0.1:1
rc=0
env $(worker_env) timeout 30 "$CALLPUSH_BUILD/callpush" >"$T/w.log" \
    2>"$T/w.err" || rc=$?
check "exits non-zero (rc $rc)" test "$rc" -ne 0 -a "$rc" -ne 124
check "names both topics and their counts" \
    grep -q 'call.invite has 4 partitions and the cancel topic call.cancel has 2' "$T/w.err"

# One topic for both types needs no such check.
rm -f "$T/bootstrap"
start_worker single --cancel-topic call.invite
check "one topic for both types starts" wait_assigned single
finish
