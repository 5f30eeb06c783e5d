#!/usr/bin/python3
"""A local HTTP CONNECT proxy for tests.

It listens on 127.0.0.1 only, writes its port to --port-file, and for each
client reads one request head. A CONNECT to a host on 127.0.0.1 (or
"localhost") is answered 200 and then relayed byte for byte both ways until
either side closes; anything else is refused with the status a real proxy
would use (405 for other methods, 403 for other hosts, 407 when
--auth USER:PASS is set and the client's Proxy-Authorization does not
match). Every request head is appended to --log as one JSON line:
{"method", "target", "auth" (decoded, or null), "status"}.
"""
import argparse
import base64
import json
import socket
import sys
import threading

HEAD_MAX = 8192
ALLOWED_HOSTS = ("127.0.0.1", "localhost")


def relay(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(1024)
        if not chunk:
            return None
        data += chunk
        if len(data) > HEAD_MAX:
            return None
    return data.split(b"\r\n\r\n", 1)[0].decode("latin-1")


def answer(conn, status, text):
    conn.sendall(("HTTP/1.1 %d %s\r\nContent-Length: 0\r\n\r\n"
                  % (status, text)).encode())


def serve(conn, args, log, lock):
    head = read_head(conn)
    if head is None:
        conn.close()
        return
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    method = parts[0] if parts else ""
    target = parts[1] if len(parts) > 1 else ""
    auth = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "proxy-authorization":
            scheme, _, cred = value.strip().partition(" ")
            if scheme.lower() == "basic":
                try:
                    auth = base64.b64decode(cred).decode()
                except ValueError:
                    auth = "<undecodable>"
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    if method != "CONNECT":
        status = 405
    elif args.auth is not None and auth != args.auth:
        status = 407
    elif host not in ALLOWED_HOSTS or not port.isdigit():
        status = 403
    else:
        status = 200
    with lock:
        log.write(json.dumps({"method": method, "target": target,
                              "auth": auth, "status": status}) + "\n")
        log.flush()
    if status != 200:
        answer(conn, status, "Refused")
        conn.close()
        return
    try:
        upstream = socket.create_connection(("127.0.0.1", int(port)))
    except OSError:
        answer(conn, 502, "Bad Gateway")
        conn.close()
        return
    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    threading.Thread(target=relay, args=(conn, upstream), daemon=True).start()
    threading.Thread(target=relay, args=(upstream, conn), daemon=True).start()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port-file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--auth", help="USER:PASS the client must send")
    args = p.parse_args()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    log = open(args.log, "a")
    lock = threading.Lock()
    with open(args.port_file + ".tmp", "w") as f:
        f.write("%d\n" % lsock.getsockname()[1])
    import os
    os.rename(args.port_file + ".tmp", args.port_file)
    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=serve, args=(conn, args, log, lock),
                         daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
