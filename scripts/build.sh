#!/usr/bin/env bash
# Configures and builds into DIR (default: build). Extra arguments go to
# cmake, e.g. build.sh build-asan -DCALLPUSH_SANITIZE=ON
set -eu
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$dir" -j "$(nproc)" -- --no-print-directory
