#!/usr/bin/env python3
"""Writes the committed seed corpora (fuzz/corpus/<target>/seed-*) from the
real fixtures: narinfos made by `nix copy --to file://`, a real nix-daemon's
replies, NAR URLs and Range headers as a Nix client sends them, key files
made by `nix-store --generate-binary-cache-key`.

Run once by hand (needs Nix, the daemon and the fixtures; see
scripts/setup-nix); the output is committed, so the fuzz runs need none of it:

    NIX_SERVE_SD_FIXTURES=/tmp/nix-serve-sd-fixtures-0 fuzz/seeds.py
"""

import glob
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.environ.get("NIX_SERVE_SD_FIXTURES", "/tmp/nix-serve-sd-fixtures-0")
SOCKET = os.environ.get("NIX_DAEMON_SOCKET_PATH", "/nix/var/nix/daemon-socket/socket")
# The path the daemon_wire target asks about (fuzz/src/peer.rs PATH): the
# fixture text-with-ref with its first hash character changed.
REAL_HASH = "3lxbs2f1w3h7ky7wqzlksspqh9d7saam"
FAKE_HASH = "0" + REAL_HASH[1:]


def fixture(name):
    for line in open(os.path.join(FIX, "paths.tsv")):
        key, path = line.rstrip("\n").split("\t")
        if key == name:
            return path
    raise SystemExit(f"no fixture {name} in {FIX}/paths.tsv")


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def narinfos():
    cache = tempfile.mkdtemp(prefix="nsd-seed-cache-")
    paths = [fixture(n) for n in ("text-with-ref", "hello-exe", "link-rel", "empty-dir", "multi-output.out")]
    subprocess.run(
        ["nix", "--extra-experimental-features", "nix-command", "copy", "--to",
         f"file://{cache}?compression=none&secret-key={FIX}/keys/secret", *paths],
        check=True)
    for f in sorted(glob.glob(os.path.join(cache, "*.narinfo"))):
        write("narinfo", os.path.basename(f), open(f, "rb").read())
    shutil.rmtree(cache)


def keys():
    d = tempfile.mkdtemp(prefix="nsd-seed-keys-")
    subprocess.run(["nix-store", "--generate-binary-cache-key", "fuzz-seed-1",
                    f"{d}/secret", f"{d}/public"], check=True)
    write("keys", "secret", open(f"{d}/secret", "rb").read())
    write("keys", "public", open(f"{d}/public", "rb").read())
    shutil.rmtree(d)


def u64(v):
    return struct.pack("<Q", v)


def s(b):
    return u64(len(b)) + b + b"\0" * ((8 - len(b) % 8) % 8)


def recv_quiet(sock, quiet=0.3):
    """Everything the daemon sends until it has been silent for `quiet` s."""
    sock.settimeout(quiet)
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return out
        if not chunk:
            return out
        out += chunk


def daemon_session(requests):
    """The daemon's replies to our handshake (as src/store/daemon/connection.rs
    sends it to a 1.34 daemon) and then to `requests`, in one byte string."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(SOCKET)
    sock.sendall(u64(0x6E697863) + u64(0x126))
    got = b""
    time.sleep(0.1)
    got += recv_quiet(sock, 0.2)[:16]  # magic and version come first
    sock.sendall(u64(0) + u64(0))  # CPU affinity, reserve space
    got += recv_quiet(sock)
    for r in requests:
        sock.sendall(r)
        got += recv_quiet(sock)
    sock.close()
    return got.replace(REAL_HASH.encode(), FAKE_HASH.encode())


def program(ops, replies):
    """A daemon_wire input: ops, then `replies` as literal runs (peer.rs)."""
    out = bytes([len(ops)]) + bytes(ops)
    for i in range(0, len(replies), 128):
        run = replies[i:i + 128]
        out += bytes([len(run) - 1]) + run
    return out


def daemon():
    path = fixture("text-with-ref").encode()
    hash_part = REAL_HASH.encode()
    check, by_hash, nar = 0, 1, 4
    write("daemon_wire", "handshake", program([check], daemon_session([])))
    write("daemon_wire", "by-hash",
          program([by_hash], daemon_session([u64(29) + s(hash_part), u64(26) + s(path)])))
    # ByHash, then the NAR (size selector 0 = 232 bytes, offset selector 0):
    # QueryPathInfo again, then NarFromPath.
    write("daemon_wire", "by-hash-then-nar",
          program([by_hash, nar, 0, 0],
                  daemon_session([u64(29) + s(hash_part), u64(26) + s(path),
                                  u64(26) + s(path), u64(38) + s(path)])))
    write("daemon_wire", "unknown-hash",
          program([by_hash], daemon_session([u64(29) + s(b"1" * 32)])))
    write("daemon_wire", "error-reply",
          program([2], daemon_session([u64(26) + s(b"/nix/store/" + b"1" * 32 + b"-x")])))


def http():
    # Range headers as Nix's curl sends them when resuming, and their cousins.
    for i, (total, h) in enumerate([(232, b"bytes=100-"), (10 << 20, b"bytes=0-1023"),
                                    (96, b"bytes=-10"), (96, b"bytes=96-"), (0, b"bytes=0-")]):
        write("range", str(i), u64(total) + h)
    ni = fixture("text-with-ref").split("/")[-1].split("-")[0]
    nh = "0zmk9qhb3pq81ny8kc27m7iaa386wpmbbfjwy5sz0h6g3ai1mn5q"
    for i, t in enumerate([f"/{ni}.narinfo", f"/nar/{ni}-{nh}.nar", f"/nar/{ni}.nar",
                           f"/nar/{nh}.nar?hash={ni}", "/nix-cache-info",
                           f"http://cache.example/{ni}.narinfo"]):
        write("routes", str(i), bytes([i % 2]) + t.encode())




def request_heads():
    """Request heads exactly as a Nix client sends them (captured from
    `nix path-info --store http://…` against a listener that answers 404),
    plus a few hand-made ones at the parser's edges."""
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    heads = []

    def serve():
        srv.settimeout(10)
        try:
            while len(heads) < 3:
                c, _ = srv.accept()
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                heads.append(data)
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                c.close()
        except socket.timeout:
            pass

    t = threading.Thread(target=serve)
    t.start()
    subprocess.run(["nix", "--extra-experimental-features", "nix-command", "path-info",
                    "--store", f"http://127.0.0.1:{port}", fixture("text-with-ref")],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t.join()
    srv.close()
    for i, h in enumerate(heads):
        write("request_head", f"nix-{i}", h)
    for i, h in enumerate([
            b"GET /nar/x.nar HTTP/1.1\r\nHost: c\r\nRange: bytes=100-\r\n\r\n",
            b"HEAD /x.narinfo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\nHost: c\n\n",
            b"GET / HTTP/1.9\r\nHost: c\r\nContent-Length: 0\r\n\r\n"]):
        write("request_head", f"edge-{i}", h)


def trees():
    # nar_tree decodes its input with `arbitrary`; any bytes make some tree.
    # These few make a directory with files, a symlink and a nested one.
    for i, data in enumerate([bytes(range(256)), bytes(range(255, -1, -1)) * 2,
                              bytes([2, 5] + [i * 37 % 256 for i in range(400)])]):
        write("nar_tree", str(i), data)


def nars():
    # nar_listing parses its input as a NAR: Nix's own NARs of small fixtures
    # (a tree with nested and empty directories, symlinks, an executable).
    for name in ("tree", "empty-dir", "link-rel", "hello-exe", "text-with-ref", "dep-mid"):
        nar = subprocess.run(["nix-store", "--dump", fixture(name)], check=True,
                             stdout=subprocess.PIPE).stdout
        write("nar_listing", name, nar)


if __name__ == "__main__":
    narinfos()
    keys()
    daemon()
    http()
    trees()
    request_heads()
    nars()
