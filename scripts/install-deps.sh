#!/usr/bin/env bash
# Installs the Debian 12 packages callpush needs, skipping apt entirely
# when they are all present. Usage: install-deps.sh [build|test]
#   build: what building and running the worker and its demo need
#   test:  that, plus what the test suite needs (the default)
set -eu

# Keep in step with deploy/Dockerfile, which installs the build list in its
# first stage (a test compares the two).
BUILD_PKGS="build-essential cmake pkg-config librdkafka-dev
libcjson-dev libssl-dev libnghttp2-dev libmicrohttpd-dev libcmocka-dev kcat
openssl python3 python3-jsonschema"
TEST_PKGS="nghttp2-client curl clang llvm libclang-rt-14-dev
python3-prometheus-client yamllint"

want=$BUILD_PKGS
if [ "${1:-test}" = test ]; then
    want="$want $TEST_PKGS"
fi

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
        grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi
echo "installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
