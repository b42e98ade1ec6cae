"""The soak (bench/soak): mixed load for a long time against the real server,
socket-activated by systemd-socket-activate, on a nix-daemon of its own that
is restarted every minute, with an idle exit and re-activation every two
minutes. Every reply is checked against Nix's own answers, taken before the
load starts:

  narinfo   `nix path-info --json` (NarHash, NarSize, References, Deriver,
            CA) and the Sig line of the narinfo `nix copy --to file://`
            writes with the same key (Ed25519 signatures are deterministic);
  NAR       `nix-store --dump` of the path, kept in a file: whole downloads
            by sha256 and length, Range replies byte for byte.

A reply that is 200/206 with wrong bytes, a wrong length or a wrong header is
a verification failure (there must be none). Refused or reset connections,
timeouts and 5xx are counted as errors by kind: they are what a client retries.
"""

import argparse
import base64
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client  # noqa: E402
import procs  # noqa: E402

NIX = ["nix", "--extra-experimental-features", "nix-command"]
NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"
READ = 1 << 16


def nix32(raw):
    """Nix's base-32 (`docs/protocols.md` §1): least significant 5 bits last."""
    n = len(raw) * 8 // 5 + (1 if len(raw) * 8 % 5 else 0)
    out = []
    for k in range(n - 1, -1, -1):
        b = k * 5
        i, j = b // 8, b % 8
        c = raw[i] >> j
        if i + 1 < len(raw):
            c |= raw[i + 1] << (8 - j)
        out.append(NIX32[c & 0x1F])
    return "".join(out)


class Failure(Exception):
    """A reply that disagrees with Nix."""


class Path:
    """One fixture store path and what Nix says about it."""

    def __init__(self, info, sig, dump_file):
        self.path = info["path"]
        self.base = self.path.rsplit("/", 1)[1]
        self.hash = self.base[:32]
        algo, b64 = info["narHash"].split("-", 1)
        assert algo == "sha256", info["narHash"]
        self.nar_hash = "sha256:" + nix32(base64.b64decode(b64))
        self.nar_size = info["narSize"]
        self.refs = sorted(r.rsplit("/", 1)[1] for r in info.get("references", []))
        self.deriver = info["deriver"].rsplit("/", 1)[1] if info.get("deriver") else None
        self.ca = info.get("ca")
        self.sig = sig
        self.dump_file = dump_file
        h = hashlib.sha256()
        with open(dump_file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        self.dump_sha256 = h.digest()
        if os.path.getsize(dump_file) != self.nar_size:
            raise SystemExit(f"{self.path}: nix-store --dump is {os.path.getsize(dump_file)} bytes, path-info says {self.nar_size}")
        self.url = f"/nar/{self.hash}-{self.nar_hash.split(':', 1)[1]}.nar"

    def dump_range(self, start, length):
        with open(self.dump_file, "rb") as f:
            f.seek(start)
            return f.read(length)

    def check_narinfo(self, body):
        fields = {}
        for line in body.decode().splitlines():
            key, _, value = line.partition(": ")
            fields.setdefault(key, []).append(value)
        want = {
            "StorePath": [self.path],
            "URL": [self.url[1:]],
            "NarHash": [self.nar_hash],
            "NarSize": [str(self.nar_size)],
            "Sig": [self.sig],
        }
        if self.refs:
            want["References"] = [" ".join(self.refs)]
        if self.deriver:
            want["Deriver"] = [self.deriver]
        if self.ca:
            want["CA"] = [self.ca]
        for key, value in want.items():
            if fields.get(key) != value:
                raise Failure(f"{self.hash}.narinfo: {key} is {fields.get(key)}, Nix says {value}")
        extra = set(fields) - set(want) - {"Compression"}
        if extra:
            raise Failure(f"{self.hash}.narinfo: unexpected fields {sorted(extra)}")


def oracle(fixtures, key, work):
    """Nix's answers for every fixture path (paths.tsv)."""
    paths = []
    for line in open(os.path.join(fixtures, "paths.tsv")):
        name, path = line.rstrip("\n").split("\t")
        paths.append(path)
    infos = json.loads(subprocess.check_output(NIX + ["path-info", "--json", *paths]))
    cache = os.path.join(work, "nix-copy")
    subprocess.run(NIX + ["copy", "--to", f"file://{cache}?compression=none&secret-key={key}", *paths],
                   check=True, stderr=subprocess.DEVNULL)
    out = []
    for info in infos:
        base = info["path"].rsplit("/", 1)[1]
        sigs = [line[5:] for line in open(os.path.join(cache, base[:32] + ".narinfo")).read().splitlines()
                if line.startswith("Sig: ")]
        assert len(sigs) == 1, sigs
        dump = os.path.join(work, "dumps", base)
        os.makedirs(os.path.dirname(dump), exist_ok=True)
        with open(dump, "wb") as f:
            subprocess.run(["nix-store", "--dump", info["path"]], stdout=f, check=True)
        out.append(Path(info, sigs[0], dump))
    subprocess.run(["rm", "-rf", cache], check=True)
    return out


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = Counter()
        self.errors = Counter()
        self.failures = []
        self.bytes = 0

    def ok(self, kind, n):
        with self.lock:
            self.requests[kind] += 1
            self.bytes += n

    def error(self, kind, what):
        with self.lock:
            self.requests[kind] += 1
            self.errors[what] += 1

    def fail(self, kind, msg):
        with self.lock:
            self.requests[kind] += 1
            self.failures.append(msg)


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    return s


def send(sock, method, path, extra=""):
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: soak\r\n{extra}Connection: close\r\n\r\n".encode())


def one(kind, port, paths, rng):
    """One request of `kind`; returns bytes received or raises Failure/OSError."""
    p = rng.choice(paths)
    if kind == "narinfo-hit":
        status, headers, body = client.get(port, f"/{p.hash}.narinfo", timeout=60)
        expect(status, 200, f"/{p.hash}.narinfo", headers)
        p.check_narinfo(body)
        return len(body)
    if kind == "narinfo-miss":
        fake = "".join(rng.choice(NIX32) for _ in range(32))
        status, headers, body = client.get(port, f"/{fake}.narinfo", timeout=60)
        expect(status, 404, f"/{fake}.narinfo", headers)
        return len(body)
    if kind == "nar-miss":
        fake = "".join(rng.choice(NIX32) for _ in range(32))
        status, headers, body = client.get(port, f"/nar/{fake}.nar", timeout=60)
        expect(status, 404, f"/nar/{fake}.nar", headers)
        return len(body)
    if kind == "nar":
        with connect(port) as sock:
            send(sock, "GET", p.url)
            status, headers, rest = client.read_head(sock)
            expect(status, 200, p.url, headers)
            length(headers, p.nar_size, p.url)
            h = hashlib.sha256(rest)
            got = len(rest)
            while got < p.nar_size:
                chunk = sock.recv(READ)
                if not chunk:
                    raise Failure(f"{p.url}: closed after {got} of {p.nar_size} bytes")
                h.update(chunk)
                got += len(chunk)
            if got != p.nar_size or h.digest() != p.dump_sha256:
                raise Failure(f"{p.url}: {got} bytes, sha256 differs from nix-store --dump")
            if sock.recv(1):
                raise Failure(f"{p.url}: bytes after the NAR")
        return got
    if kind == "range":
        start = rng.randrange(p.nar_size)
        end = rng.randrange(start, p.nar_size)
        with connect(port) as sock:
            send(sock, "GET", p.url, f"Range: bytes={start}-{end}\r\n")
            status, headers, body = client.read_response(sock)
        expect(status, 206, p.url, headers)
        if headers.get("content-range") != f"bytes {start}-{end}/{p.nar_size}":
            raise Failure(f"{p.url} {start}-{end}: Content-Range {headers.get('content-range')}")
        if body != p.dump_range(start, end - start + 1):
            raise Failure(f"{p.url} {start}-{end}: bytes differ from nix-store --dump")
        return len(body)
    if kind == "head":
        target = rng.choice([p.url, f"/{p.hash}.narinfo"])
        with connect(port) as sock:
            send(sock, "HEAD", target)
            sock.settimeout(60)
            data = b""
            while True:
                chunk = sock.recv(READ)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head[9:12])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in head.decode("latin-1").split("\r\n")[1:])}
        expect(status, 200, target, headers)
        if body:
            raise Failure(f"HEAD {target}: {len(body)} body bytes")
        if target == p.url:
            length(headers, p.nar_size, "HEAD " + target)
        return 0
    if kind == "slow":
        # A slow reader: at most 256 KiB/s for up to 3 s, then the rest at full
        # speed, whole body verified.
        with connect(port) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
            send(sock, "GET", p.url)
            status, headers, rest = client.read_head(sock)
            expect(status, 200, p.url, headers)
            h = hashlib.sha256(rest)
            got, t0 = len(rest), time.monotonic()
            while got < p.nar_size:
                slow = time.monotonic() - t0 < 3
                chunk = sock.recv(4096 if slow else READ)
                if not chunk:
                    raise Failure(f"slow {p.url}: closed after {got} of {p.nar_size}")
                h.update(chunk)
                got += len(chunk)
                if slow:
                    time.sleep(len(chunk) / (256 << 10))
            if h.digest() != p.dump_sha256:
                raise Failure(f"slow {p.url}: sha256 differs from nix-store --dump")
        return got
    if kind == "abort":
        # Read part of a NAR, then hang up (RST with unread data).
        with connect(port) as sock:
            send(sock, "GET", p.url)
            status, headers, rest = client.read_head(sock)
            expect(status, 200, p.url, headers)
            stop = rng.randrange(max(1, p.nar_size // 2) + 1)
            data = bytearray(rest)
            while len(data) < stop:
                chunk = sock.recv(READ)
                if not chunk:
                    break
                data += chunk
            got = len(data)
            if data != p.dump_range(0, got):
                raise Failure(f"abort {p.url}: the first {got} bytes differ from nix-store --dump")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        return got
    raise ValueError(kind)


def expect(status, want, target, headers):
    if status != want:
        if status >= 500:
            raise client.BadResponse(f"status {status}")
        raise Failure(f"{target}: status {status}, expected {want}")


def length(headers, n, target):
    if headers.get("content-length") != str(n):
        raise Failure(f"{target}: Content-Length {headers.get('content-length')}, NarSize {n}")


MIX = [("narinfo-hit", 40), ("narinfo-miss", 10), ("nar-miss", 3), ("nar", 20), ("range", 10),
       ("head", 7), ("slow", 3), ("abort", 7)]


def worker(port_fn, paths, stats, stop, paused, seed):
    rng = random.Random(seed)
    kinds = [k for k, w in MIX for _ in range(w)]
    while not stop.is_set():
        if paused.is_set():
            time.sleep(0.05)
            continue
        kind = rng.choice(kinds)
        try:
            n = one(kind, port_fn(), paths, rng)
            stats.ok(kind, n)
        except Failure as e:
            stats.fail(kind, str(e))
        except client.BadResponse as e:
            stats.error(kind, str(e).split(" (")[0][:60])
        except ConnectionRefusedError:
            stats.error(kind, "connection refused")
        except ConnectionResetError:
            stats.error(kind, "connection reset")
        except BrokenPipeError:
            stats.error(kind, "broken pipe")
        except socket.timeout:
            stats.error(kind, "timeout")
        except OSError as e:
            stats.error(kind, f"OSError {e.errno}")


class Daemon:
    """A nix-daemon of our own on our own socket (never the machine's)."""

    def __init__(self, run):
        self.socket = os.path.join(run, "daemon.socket")
        self.log = os.path.join(run, "daemon.log")
        self.pid = None
        self.restarts = 0

    def start(self):
        env = dict(os.environ, NIX_DAEMON_SOCKET_PATH=self.socket)
        self.pid = procs.spawn(["nix-daemon"], env, log=self.log)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline:
                raise SystemExit(f"our nix-daemon did not start:\n{procs.tail(self.log)}")
            time.sleep(0.02)

    def restart(self):
        procs.stop(self.pid)
        try:
            os.unlink(self.socket)
        except FileNotFoundError:
            pass
        self.start()
        self.restarts += 1


class Server:
    """nix-serve under systemd-socket-activate (which execs it in place on the
    first connection, so its pid is the server's)."""

    def __init__(self, binary, daemon, key, port, run, idle):
        self.argv = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=http",
                     binary, "--store", f"unix://{daemon.socket}", "--sign-key-file", key,
                     "--idle-timeout", idle]
        self.port, self.log = port, os.path.join(run, "server.log")
        self.pid = None
        self.activations = 0
        self.exits = Counter()

    def listen(self):
        self.pid = procs.spawn(self.argv, dict(os.environ), log=self.log)
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                try:
                    s.connect(("127.0.0.1", self.port))
                    break
                except OSError:
                    pass
            if time.monotonic() > deadline or not procs.alive(self.pid):
                raise SystemExit(f"systemd-socket-activate did not listen:\n{procs.tail(self.log)}")
            time.sleep(0.05)
        # That probe connection activated it.
        self.activations += 1

    def wait_idle_exit(self, limit):
        """Waits for the server's idle exit: its exit status, or None."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid:
                code = os.waitstatus_to_exitcode(status)
                self.exits[code] += 1
                return code
            time.sleep(0.05)
        return None

    def usage(self):
        """(RSS KiB, open descriptors) of the running server."""
        try:
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return None
        return procs.rss_kib([self.pid]), fds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--daemon-restart-every", type=int, default=60)
    ap.add_argument("--reactivate-every", type=int, default=120)
    ap.add_argument("--idle-timeout", type=int, default=3)
    opts = ap.parse_args()
    procs.become_subreaper()
    work = tempfile.mkdtemp(prefix="nix-serve-sd-soak.")
    log(f"asking Nix for its answers about the fixture paths (work dir {work})")
    paths = oracle(opts.fixtures, opts.key, work)
    log(f"{len(paths)} paths, NARs of {min(p.nar_size for p in paths)} to {max(p.nar_size for p in paths)} bytes")

    daemon = Daemon(work)
    daemon.start()
    server = Server(opts.binary, daemon, opts.key, procs.free_port(), work, f"{opts.idle_timeout}s")
    server.listen()
    stats = Stats()
    stop, paused = threading.Event(), threading.Event()
    threads = [threading.Thread(target=worker, args=(lambda: server.port, paths, stats, stop, paused, i))
               for i in range(opts.clients)]
    for t in threads:
        t.start()

    usage = []  # (when, rss KiB, fds) per activation: shortly after start, and at its end
    t0 = time.monotonic()
    next_restart = t0 + opts.daemon_restart_every
    next_cycle = t0 + opts.reactivate_every
    time.sleep(5)
    usage.append(("start", *(server.usage() or (0, 0))))
    bad_exits = []
    while True:
        now = time.monotonic()
        if now - t0 >= opts.seconds:
            break
        if now >= next_restart:
            log(f"t={now - t0:.0f}s: restarting our nix-daemon under load")
            daemon.restart()
            next_restart += opts.daemon_restart_every
        if now >= next_cycle:
            before = server.usage()
            if before:
                usage.append(("before idle exit", *before))
            log(f"t={now - t0:.0f}s: pausing the load for an idle exit")
            paused.set()
            time.sleep(1)  # requests in flight finish
            code = server.wait_idle_exit(opts.idle_timeout + 60)
            if code != 0:
                bad_exits.append(code)
            log(f"idle exit with status {code}; re-activating")
            server.listen()
            paused.clear()
            time.sleep(5)
            after = server.usage()
            if after:
                usage.append(("after re-activation", *after))
            next_cycle += opts.reactivate_every
        time.sleep(0.2)
    end_usage = server.usage()
    if end_usage:
        usage.append(("end", *end_usage))
    stop.set()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - t0
    paused.set()
    code = server.wait_idle_exit(opts.idle_timeout + 60)
    if code != 0:
        bad_exits.append(code)
    procs.stop(daemon.pid)
    if server.pid and procs.alive(server.pid):
        procs.stop(server.pid)

    total = sum(stats.requests.values())
    print(f"\n## Soak: {elapsed:.0f} s, {opts.clients} clients, "
          f"{daemon.restarts} nix-daemon restarts, {server.activations} activations "
          f"(idle exits: {dict(server.exits)})\n")
    print(f"- requests: {total} ({', '.join(f'{k} {v}' for k, v in sorted(stats.requests.items()))})")
    print(f"- bytes received: {stats.bytes} ({stats.bytes / elapsed / 1e6:.1f} MB/s)")
    print(f"- verification failures: {len(stats.failures)}")
    for f in stats.failures[:20]:
        print(f"  - {f}")
    errors = ", ".join(f"{k}: {v}" for k, v in stats.errors.most_common()) or "none"
    print(f"- errors by kind: {errors}")
    print(f"- exits other than 0: {bad_exits or 'none'}")
    for what, rss, fds in usage:
        print(f"- server {what}: RSS {rss / 1024:.1f} MiB, {fds} descriptors")
    print(f"\n(server log: {server.log}; daemon log: {daemon.log})")
    subprocess.run(["rm", "-rf", os.path.join(work, "dumps")], check=False)
    return 1 if stats.failures or bad_exits else 0


def log(msg):
    print(f"soak: {msg}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
