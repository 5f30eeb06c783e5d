#!/usr/bin/env bash
#
# The published schema and the worker must agree on every example: each
# file in schemas/examples/valid must pass both, each file in
# schemas/examples/invalid must fail both. The schema is checked with Python
# jsonschema (Draft 2020-12), the worker with "callpush validate".
#
# Environment: CALLPUSH_BUILD is the build directory holding callpush
# (default: build), CALLPUSH_SRC the repository (default: the one holding
# this script).

set -u

src=${CALLPUSH_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${CALLPUSH_BUILD:-$src/build}
callpush=$build/callpush
schema=$src/schemas/call-event.schema.json
examples=$src/schemas/examples
python=/usr/bin/python3

if [ ! -x "$callpush" ]; then
    echo "no callpush binary at $callpush" >&2
    exit 2
fi

# Fewer examples than this means the folders were emptied or misnamed, and
# a run that checks nothing must not pass.
min_valid=6
min_invalid=15

# One line per example, "valid PATH" or "invalid PATH", as the schema sees
# it. The JSON parser is kept strict (no NaN or Infinity, UTF-8 only) so
# that a file the worker cannot parse is not valid to the schema either.
schema_verdicts=$("$python" - "$schema" "$examples" <<'EOF'
import glob
import json
import os
import sys

from jsonschema import Draft202012Validator

schema_path, examples = sys.argv[1], sys.argv[2]
with open(schema_path, "rb") as f:
    schema = json.loads(f.read().decode("utf-8"))
Draft202012Validator.check_schema(schema)
validator = Draft202012Validator(schema)


def no_constants(name):
    raise ValueError("not JSON: " + name)


for folder in ("valid", "invalid"):
    for path in sorted(glob.glob(os.path.join(examples, folder, "*.json"))):
        with open(path, "rb") as f:
            data = f.read()
        try:
            doc = json.loads(data.decode("utf-8"), parse_constant=no_constants)
        except ValueError:
            print("invalid", path)
            continue
        print("valid" if validator.is_valid(doc) else "invalid", path)
EOF
)
status=$?
if [ $status -ne 0 ]; then
    echo "FAIL: the schema itself is not valid Draft 2020-12, or Python failed"
    echo "0 passed, 1 failed"
    exit 1
fi

declare -A schema_says
while read -r verdict path; do
    schema_says[$path]=$verdict
done <<<"$schema_verdicts"

passed=0
failed=0
nvalid=0
ninvalid=0

for want in valid invalid; do
    for path in "$examples/$want"/*.json; do
        [ -e "$path" ] || continue
        if [ "$want" = valid ]; then
            nvalid=$((nvalid + 1))
        else
            ninvalid=$((ninvalid + 1))
        fi
        name=${path#"$src"/}
        ok=1

        if [ "${schema_says[$path]:-missing}" != "$want" ]; then
            echo "FAIL $name: schema says ${schema_says[$path]:-nothing}," \
                "folder says $want"
            ok=0
        fi

        # The worker's verdict: its exit status and its line must agree.
        out=$("$callpush" validate "$path" 2>&1)
        rc=$?
        case "$want:$rc:$out" in
        "valid:0:$path: ok ("*) ;;
        "invalid:1:$path: rejected: "*) ;;
        *)
            echo "FAIL $name: worker exit $rc, said: $out"
            ok=0
            ;;
        esac

        if [ $ok -eq 1 ]; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
    done
done

if [ $nvalid -lt $min_valid ] || [ $ninvalid -lt $min_invalid ]; then
    echo "FAIL: only $nvalid valid and $ninvalid invalid examples" \
        "(want at least $min_valid and $min_invalid)"
    failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
