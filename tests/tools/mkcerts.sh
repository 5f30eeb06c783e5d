#!/bin/sh
# Makes the keys and certificates that the APNs stand-in and its clients
# use in tests, in DIR:
#   server.crt, server.key   self-signed P-256 certificate for localhost and
#                            127.0.0.1 (clients pass server.crt as their CA)
#   AuthKey.p8               ES256 provider key, PKCS#8 PEM like Apple's
#   AuthKey.pub.pem          its public key, for apns-standin --auth-key
# Files that already exist are kept, so tests can share one DIR.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"
cd "$dir"

# Each file is written under a temporary name and renamed, so a run that
# dies half-way leaves no truncated file for the next run to trust.
if [ ! -f server.crt ] || [ ! -f server.key ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout server.key.tmp -out server.crt.tmp -days 3650 \
        -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
    chmod 600 server.key.tmp
    mv server.key.tmp server.key
    mv server.crt.tmp server.crt
fi

if [ ! -f AuthKey.p8 ]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out AuthKey.p8.tmp
    chmod 600 AuthKey.p8.tmp
    mv AuthKey.p8.tmp AuthKey.p8
fi

if [ ! -f AuthKey.pub.pem ]; then
    openssl pkey -in AuthKey.p8 -pubout -out AuthKey.pub.pem.tmp
    mv AuthKey.pub.pem.tmp AuthKey.pub.pem
fi
