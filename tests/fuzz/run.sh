#!/usr/bin/env bash
# Builds the libFuzzer target for event decoding and payload building
# (tests/fuzz/fuzz_event.c) with clang, runs every checked-in hostile event
# through it once, then fuzzes for SECONDS (default 60; 0 runs only the
# hostile events) starting from the seed corpus.
#
# Nothing is written into the repository: the binary, the working corpus,
# the log and any failing input live in a temporary directory, which is
# kept and named when something fails (or always, with FUZZ_KEEP=1).
# Exit status: 0 clean, 1 a crash, leak, timeout or out-of-memory, 2 a
# usage or build error.
#
# usage: tests/fuzz/run.sh [SECONDS]
set -eu
cd "$(dirname "$0")/../.."

usage() {
    echo "usage: tests/fuzz/run.sh [SECONDS]" >&2
    exit 2
}

secs=${1:-60}
case $secs in
'' | *[!0-9]*) usage ;;
esac
[ $# -le 1 ] || usage

cc=${FUZZ_CC:-clang}
keep=${FUZZ_KEEP:-0}
work=$(mktemp -d --suffix=-callpush-fuzz)
bin=$work/fuzz-event

cleanup() {
    if [ "$keep" = 0 ]; then
        rm -rf "$work"
    else
        echo "fuzz: working directory kept: $work"
    fi
}
trap cleanup EXIT

# The same warnings as the product build, so that the target stays as clean
# as the code it drives. UndefinedBehaviorSanitizer must stop at the first
# report, or libFuzzer would count it as a pass.
warn="-Wall -Wextra -Wshadow -Wformat=2 -Wvla -Wstrict-prototypes
      -Wmissing-prototypes -Wno-unused-parameter -Werror"
echo "fuzz: building $bin with $cc"
# shellcheck disable=SC2086
if ! "$cc" -std=c11 -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    $warn -Iworker \
    tests/fuzz/fuzz_event.c worker/event.c worker/payload.c worker/buf.c \
    worker/util.c -lcjson -lcrypto -o "$bin"; then
    echo "fuzz: build failed" >&2
    exit 2
fi

mkdir "$work/artifacts" "$work/corpus" "$work/bad-events"
cp tests/fuzz/corpus/* "$work/corpus/"
cp tests/fuzz/bad-events/* "$work/bad-events/"

# Leaks are checked after every input (libFuzzer's default under
# AddressSanitizer); any sanitizer report ends the run with a non-zero exit.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
common=(-timeout=5 -rss_limit_mb=2048 -artifact_prefix="$work/artifacts/")

# Shows what went wrong and where the input that did it is kept.
report_failure() {
    local log=$1 what=$2 f inputs=()

    keep=1
    echo "fuzz: FAILED: $what; the end of $log:"
    grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse) ' "$log" |
        tail -n 40 | cut -c1-300

    # libFuzzer writes the input to the artifacts directory when it was
    # fuzzing; a file given by name is the last one it started to run.
    for f in "$work"/artifacts/*; do
        if [ -e "$f" ]; then
            inputs+=("$f")
        fi
    done
    if [ ${#inputs[@]} = 0 ]; then
        f=$(grep '^Running: ' "$log" | tail -n 1 | cut -c10-)
        if [ -n "$f" ]; then
            inputs+=("tests/fuzz/bad-events/${f##*/}")
        fi
    fi
    for f in "${inputs[@]}"; do
        echo "fuzz: failing input: $f ($(wc -c <"$f") bytes); first 256:"
        od -A x -t x1z -v -N 256 "$f"
        echo "fuzz: reproduce with: $bin $f"
    done
}

nbad=$(find "$work/bad-events" -type f | wc -l)
echo "== fuzz: $nbad known hostile events, once each"
if ! "$bin" "${common[@]}" "$work"/bad-events/* \
    >"$work/bad-events.log" 2>&1; then
    report_failure "$work/bad-events.log" "a known hostile event"
    exit 1
fi
echo "fuzz: $(grep -c '^Executed ' "$work/bad-events.log") inputs passed"

if [ "$secs" = 0 ]; then
    exit 0
fi

# New inputs go into the first directory only; the copy of the hostile
# events is read as further seeds.
echo "== fuzz: $secs seconds from $(find "$work/corpus" -type f | wc -l) seeds"
if ! "$bin" "${common[@]}" -max_total_time="$secs" -max_len=70000 \
    -print_final_stats=1 "$work/corpus" "$work/bad-events" \
    >"$work/fuzz.log" 2>&1; then
    report_failure "$work/fuzz.log" "fuzzing found a failing input"
    exit 1
fi
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^Done |^stat::' "$work/fuzz.log"
echo "fuzz: corpus grew to $(find "$work/corpus" -type f | wc -l) inputs"
