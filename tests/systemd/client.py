#!/usr/bin/env python3
"""Helpers that tests/systemd/real-systemd.sh runs inside its namespace.

  client.py loop TSV STOPFILE MAXSECONDS
      TSV has lines URL<TAB>EXPECT...; GET each URL in turn, over a fresh
      connection each time, until STOPFILE exists (at most MAXSECONDS); a
      request succeeds when it is a 200 whose body contains every EXPECT.
      Prints "requests N failed F" and the first failures.
  client.py proxy LISTEN TARGET
      A Unix stream socket at LISTEN that forwards every connection to the
      Unix socket TARGET: a nix-daemon that the test can stop and start
      (the real one, behind it, is shared by the machine and stays up).
  client.py download URL OUT BYTES_PER_SECOND
      GET URL into OUT at about BYTES_PER_SECOND, with a 64 KiB receive
      buffer: the kernel cannot take the whole body off the server's hands
      (loopback's receive buffer otherwise grows to 32 MiB), so the server is
      still sending while the test stops it. OUT.started appears once the
      first MiB is in. Prints "HTTP STATUS BYTES".
  client.py hold SOCKET STOPFILE MAXSECONDS
      Opens a nix-daemon connection and keeps it idle until STOPFILE exists:
      the daemon's worker holds the store's database open meanwhile, so its
      -wal and -shm files exist, as on a machine where Nix is busy.
"""
import http.client
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse


def loop(tsv, stop_file, max_seconds):
    with open(tsv) as f:
        targets = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    deadline = time.monotonic() + float(max_seconds)
    done = failed = 0
    failures = []
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        url, *expect = targets[done % len(targets)]
        u = urllib.parse.urlsplit(url)
        done += 1
        try:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
            conn.request("GET", u.path)
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            conn.close()
            if resp.status != 200 or not all(e in body for e in expect):
                raise RuntimeError(f"{u.path}: HTTP {resp.status}: {body[:80]!r}")
        except Exception as e:  # every failure counts, whatever its kind
            failed += 1
            failures.append(f"{time.strftime('%H:%M:%S')} {type(e).__name__}: {e}")
    print(f"requests {done} failed {failed}")
    for f in failures[:5]:
        print(f"failure: {f}")


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def proxy(listen, target):
    if os.path.exists(listen):
        os.unlink(listen)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(listen)
    os.chmod(listen, 0o666)
    server.listen(64)
    while True:
        client, _ = server.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(target)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def download(url, out, rate):
    u = urllib.parse.urlsplit(url)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.settimeout(30)
    s.connect((u.hostname, u.port))
    s.sendall(f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}\r\nConnection: close\r\n\r\n".encode())
    started, received, data = time.monotonic(), 0, b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        if received < 1 << 20 <= received + len(chunk):
            open(out + ".started", "w").close()
        received += len(chunk)
        ahead = received / float(rate) - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    head, _, body = data.partition(b"\r\n\r\n")
    with open(out, "wb") as f:
        f.write(body)
    print(f"HTTP {head.split()[1].decode()} {len(body)}")


def hold(path, stop_file, max_seconds):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)

    def u64():
        b = b""
        while len(b) < 8:
            chunk = s.recv(8 - len(b))
            if not chunk:
                raise EOFError("nix-daemon closed the connection")
            b += chunk
        return struct.unpack("<Q", b)[0]

    # docs/protocols.md §7: magic, the daemon's version, ours (1.21: no
    # newer fields), obsolete CPU affinity and reserveSpace, then STDERR_LAST.
    s.sendall(struct.pack("<Q", 0x6E697863))
    assert u64() == 0x6478696F
    u64()
    s.sendall(struct.pack("<QQQ", (1 << 8) | 21, 0, 0))
    assert u64() == 0x616C7473
    print("holding a nix-daemon connection", flush=True)
    deadline = time.monotonic() + float(max_seconds)
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        time.sleep(0.1)
    s.close()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "loop":
        loop(*args)
    elif cmd == "proxy":
        proxy(*args)
    elif cmd == "download":
        download(*args)
    elif cmd == "hold":
        hold(*args)
    else:
        sys.exit(f"unknown command {cmd}")
