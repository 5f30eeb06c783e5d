#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is
# missing, checks formatting, builds twice (plain, and with AddressSanitizer
# and UndefinedBehaviorSanitizer) and runs every test in both builds.
set -eu
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test

echo "== format"
if command -v clang-format >/dev/null; then
    bad=$(clang-format --dry-run worker/*.[ch] tests/unit/*.c tests/tools/*.c 2>&1 | grep -c 'warning:' || true)
    if [ "$bad" -ne 0 ]; then
        clang-format --dry-run worker/*.[ch] tests/unit/*.c tests/tools/*.c 2>&1 | head -20
        echo "clang-format: $bad places differ from .clang-format"
        exit 1
    fi
    echo "formatting matches .clang-format"
fi

echo "== build"
bash scripts/build.sh build
echo "== test"
(cd build && ctest --output-on-failure -j 2)

echo "== build with ASan + UBSan"
bash scripts/build.sh build-asan -DCALLPUSH_SANITIZE=ON
echo "== test with ASan + UBSan"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --output-on-failure -j 2)
echo "== fuzz (bounded)"
bash tests/fuzz/run.sh 60
echo "== all tests passed: formatting, plain build, ASan + UBSan build"
