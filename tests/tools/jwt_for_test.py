#!/usr/bin/python3
"""Prints an APNs provider token (ES256 JWT) for tests.

usage: jwt_for_test.py KEY.p8 KEYID TEAMID IAT [--der]

The openssl CLI signs; it produces a DER ECDSA signature, which is turned
into the raw 64-byte r||s form that JWS requires. With --der the DER form
is kept, to check that a server refuses it. Python standard library only.
"""

import base64
import json
import subprocess
import sys


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def der_length(der, pos):
    """Reads a DER length at pos; returns (length, position after it)."""
    first = der[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    count = first & 0x7F
    return int.from_bytes(der[pos:pos + count], "big"), pos + count


def der_integer(der, pos):
    """Reads a DER INTEGER at pos; returns (value bytes, next position)."""
    if der[pos] != 0x02:
        raise ValueError("expected an INTEGER in the signature")
    length, pos = der_length(der, pos + 1)
    return der[pos:pos + length], pos + length


def der_to_raw(der):
    """ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } -> r||s."""
    if der[0] != 0x30:
        raise ValueError("expected a SEQUENCE in the signature")
    _, pos = der_length(der, 1)
    r, pos = der_integer(der, pos)
    s, _ = der_integer(der, pos)

    # DER integers are signed and minimal: drop a leading zero byte, then
    # left-pad each to the 32 bytes of a P-256 scalar.
    r = r.lstrip(b"\x00").rjust(32, b"\x00")
    s = s.lstrip(b"\x00").rjust(32, b"\x00")
    if len(r) != 32 or len(s) != 32:
        raise ValueError("signature integers longer than 32 bytes")
    return r + s


def main(argv):
    args = [a for a in argv[1:] if a != "--der"]
    der_wanted = len(args) != len(argv) - 1
    if len(args) != 4:
        sys.stderr.write(__doc__)
        return 2
    key, key_id, team_id, iat = args

    header = {"alg": "ES256", "kid": key_id}
    claims = {"iss": team_id, "iat": int(iat)}
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    der = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", key],
        input=signing_input.encode("ascii"),
        stdout=subprocess.PIPE,
        check=True,
    ).stdout
    sig = der if der_wanted else der_to_raw(der)
    print(signing_input + "." + b64url(sig))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
