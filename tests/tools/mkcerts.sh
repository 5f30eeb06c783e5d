#!/bin/sh
# Makes the keys and certificates that the APNs stand-in and its clients
# use in tests, in DIR:
#   server.crt, server.key   self-signed P-256 certificate for localhost and
#                            127.0.0.1 (clients pass server.crt as their CA)
#   AuthKey.p8               ES256 provider key, PKCS#8 PEM like Apple's
#   AuthKey.pub.pem          its public key, for apns-standin --auth-key
#   client-ca.crt            self-signed CA for client certificates, for
#                            apns-standin --client-ca
#   client.crt, client.key   client certificate (CN callpush-client) signed
#                            by it, and its unencrypted key
#   client-enc.key           the same key, encrypted with the passphrase
#                            in client.pass
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

# The client CA's key is only needed to sign the client certificate: it is
# kept beside the CA so a later run can sign again if client.crt is gone.
if [ ! -f client-ca.crt ] || [ ! -f client-ca.key ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout client-ca.key.tmp -out client-ca.crt.tmp -days 3650 \
        -subj /CN=callpush-test-client-ca 2>/dev/null
    chmod 600 client-ca.key.tmp
    mv client-ca.key.tmp client-ca.key
    mv client-ca.crt.tmp client-ca.crt
fi

if [ ! -f client.key ]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out client.key.tmp
    chmod 600 client.key.tmp
    mv client.key.tmp client.key
fi

if [ ! -f client.crt ]; then
    openssl req -new -key client.key -subj /CN=callpush-client \
        -out client.csr.tmp
    openssl x509 -req -in client.csr.tmp -CA client-ca.crt \
        -CAkey client-ca.key -CAcreateserial -CAserial client-ca.srl \
        -days 3650 -out client.crt.tmp 2>/dev/null
    rm -f client.csr.tmp
    mv client.crt.tmp client.crt
fi

if [ ! -f client.pass ]; then
    printf 'callpush-test-passphrase\n' >client.pass.tmp
    chmod 600 client.pass.tmp
    mv client.pass.tmp client.pass
fi

if [ ! -f client-enc.key ]; then
    openssl pkey -in client.key -aes-256-cbc \
        -passout "file:client.pass" -out client-enc.key.tmp
    chmod 600 client-enc.key.tmp
    mv client-enc.key.tmp client-enc.key
fi
