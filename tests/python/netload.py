#!/usr/bin/env python3
"""Real-stack load for kp's namespace tests: Linux TCP and UDP sockets.

Runs inside a network namespace (`ip netns exec <ns> python3 netload.py
...`). Servers serve until killed; clients print one JSON line with what
they saw and exit non-zero when the transfer was wrong.

  serve --bind A --port P              TCP: "GET n" sends n pattern bytes,
                               "PUT n" reads n and answers its sha256
  serve-udp --bind A --port P         UDP: echoes every datagram to its sender
  get --host H --port P --bytes N [--timeout S]
  put --host H --port P --bytes N [--timeout S]
  udp --host H --port P --size S --count C [--timeout S]
"""

import argparse
import errno
import hashlib
import json
import socket
import sys
import threading
import time

CHUNK = 65536


def pattern(offset, n):
    """n bytes of the test stream starting at `offset` (position-dependent,
    so a lost or repeated segment shows)."""
    out = bytearray(n)
    for i in range(n):
        out[i] = ((offset + i) * 7 + ((offset + i) >> 16)) & 0xFF
    return bytes(out)


_BLOCK = None


def stream(n):
    """The test stream as chunks (a precomputed block keeps it fast)."""
    global _BLOCK
    if _BLOCK is None:
        # Period of the pattern: the low byte repeats every 256 bytes, the
        # high part every 65536, so 65536 * 256 covers it; use one block.
        _BLOCK = pattern(0, CHUNK)
    sent = 0
    while sent < n:
        take = min(CHUNK, n - sent)
        # Blocks differ by the (offset >> 16) term: regenerate cheaply.
        shift = (sent >> 16) & 0xFF
        block = _BLOCK if shift == 0 else _BLOCK.translate(bytes((b + shift) & 0xFF for b in range(256)))
        yield block[:take]
        sent += take


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bound(kind, bind, port):
    """A socket bound to a pod's own address (a pod has one; one process
    per address makes replies leave from the address that was asked)."""
    s = socket.socket(family(bind), kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((bind, port))
    return s


def serve_tcp(bind, port):
    s = bound(socket.SOCK_STREAM, bind, port)
    s.listen(64)

    def handle(c):
        with c:
            f = c.makefile("rb")
            line = f.readline().decode().split()
            if len(line) != 2:
                return
            verb, n = line[0], int(line[1])
            if verb == "GET":
                for chunk in stream(n):
                    c.sendall(chunk)
                c.shutdown(socket.SHUT_WR)
                f.read()
            elif verb == "PUT":
                h = hashlib.sha256()
                left = n
                while left > 0:
                    b = f.read(min(CHUNK, left))
                    if not b:
                        break
                    h.update(b)
                    left -= len(b)
                c.sendall((h.hexdigest() + "\n").encode())

    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def serve_udp(bind, port):
    s = bound(socket.SOCK_DGRAM, bind, port)
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(data, peer)


def connect(host, port, timeout):
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def get(host, port, n, timeout):
    start = time.monotonic()
    s = connect(host, port, timeout)
    peer = s.getpeername()[0]
    s.sendall(f"GET {n}\n".encode())
    want = hashlib.sha256()
    for chunk in stream(n):
        want.update(chunk)
    got = hashlib.sha256()
    received = 0
    while True:
        b = s.recv(CHUNK)
        if not b:
            break
        got.update(b)
        received += len(b)
    s.close()
    ok = received == n and got.digest() == want.digest()
    return ok, {"received": received, "peer": peer, "seconds": round(time.monotonic() - start, 3)}


def put(host, port, n, timeout):
    start = time.monotonic()
    s = connect(host, port, timeout)
    peer = s.getpeername()[0]
    s.sendall(f"PUT {n}\n".encode())
    want = hashlib.sha256()
    for chunk in stream(n):
        want.update(chunk)
        s.sendall(chunk)
    answer = s.makefile("rb").readline().decode().strip()
    s.close()
    ok = answer == want.hexdigest()
    return ok, {"sent": n, "peer": peer, "answer_ok": ok, "seconds": round(time.monotonic() - start, 3)}


def udp(host, port, size, count, timeout, retries):
    """Sends `count` datagrams of `size` bytes, each waiting for its echo;
    one not echoed within `timeout` is sent again up to `retries` times,
    as DNS clients and other UDP applications do (a datagram lost to Path
    MTU Discovery is only lost once: the kernel fragments smaller after)."""
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(timeout)
    s.connect((host, port))
    echoed, resent = 0, 0
    for i in range(count):
        msg = (i.to_bytes(4, "big") + pattern(i, size))[:size]
        for attempt in range(retries + 1):
            send(s, msg)
            if echo(s, msg):
                echoed += 1
                break
            resent += attempt < retries
    return echoed == count, {"sent": count, "echoed": echoed, "resent": resent, "size": size}


def send(s, msg):
    for attempt in range(5):
        try:
            s.send(msg)
            return
        except OSError as e:
            # A "packet too big" reported to the socket (PMTUD at work):
            # the kernel fragments smaller from now on; send again, as
            # applications do.
            if e.errno != errno.EMSGSIZE or attempt == 4:
                raise
            time.sleep(0.05)


def echo(s, msg):
    try:
        while True:
            if s.recv(65535) == msg:
                return True
    except socket.timeout:
        return False
    except OSError as e:
        # The path refused the datagram as too big (the ICMP error reaches
        # a connected socket as EMSGSIZE): lost, to be sent again.
        if e.errno != errno.EMSGSIZE:
            raise
        return False


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["serve", "serve-udp", "get", "put", "udp"])
    p.add_argument("--host")
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bytes", type=int, default=0)
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=10)
    p.add_argument("--retries", type=int, default=0)
    a = p.parse_args()
    if a.cmd == "serve":
        serve_tcp(a.bind, a.port)
    if a.cmd == "serve-udp":
        serve_udp(a.bind, a.port)
    try:
        if a.cmd == "get":
            ok, r = get(a.host, a.port, a.bytes, a.timeout)
        elif a.cmd == "put":
            ok, r = put(a.host, a.port, a.bytes, a.timeout)
        else:
            ok, r = udp(a.host, a.port, a.size, a.count, a.timeout, a.retries)
    except OSError as e:
        ok, r = False, {"error": f"{type(e).__name__}: {e}"}
    r["ok"] = ok
    print(json.dumps(r))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
