"""The misbehaving clients of the `misbehave` scenario, as a process of their
own (so their Python work does not hold the driver's GIL while the driver
times requests):

    python3 misbehave.py --port P --narinfo /H.narinfo --nar /nar/X.nar

opens, all against one server, at once:

* `--idle` keep-alive connections (1,000) that send one request, read its
  response, then stay silent;
* `--slowloris` connections (500) that send a request head one byte a second
  (each at its own phase in the second) and never finish it;
* `--readers` clients (64) that each request the NAR and read it at `--rate`
  bytes a second (64 KiB/s; a 10 MiB NAR takes 160 s, longer than the
  scenario), with a 64 KiB receive buffer so the kernel does not read ahead
  for them.

A connection the server closes is opened again at once, so the load stays
the same however the server sheds it; the closes are counted. Prints
`READY {json}` once every connection is in place (or after `--setup-seconds`),
then holds the load until SIGTERM or stdin closes, and prints `DONE {json}`:
per kind, connections opened, closed by the server, the statuses of the
responses it got, and socket errors.
"""

import argparse
import collections
import errno
import json
import os
import resource
import selectors
import signal
import socket
import sys
import stat
import time

# How often the paced connections (slowloris bytes, reader pacing, retries)
# are walked: 20 times a second is fine enough for 1 B/s and 64 KiB/s.
TICK = 0.05


def raise_nofile():
    """The soft descriptor limit up to the hard one: 1,600 sockets need more
    than the usual 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Conn:
    """One misbehaving connection: `kind` is idle, slowloris or reader."""

    def __init__(self, kind, index):
        self.kind, self.index = kind, index
        self.sock = None
        self.state = "connecting"
        self.buf = b""
        self.sent = 0  # slowloris: bytes of the endless head sent
        self.next_send = 0.0
        self.body_got, self.body_len, self.started = 0, None, 0.0


class Load:
    """All the misbehaving connections, driven by one selector loop."""

    def __init__(self, opts):
        self.opts = opts
        self.sel = selectors.DefaultSelector()
        self.conns = [Conn("idle", i) for i in range(opts.idle)]
        self.conns += [Conn("slowloris", i) for i in range(opts.slowloris)]
        self.conns += [Conn("reader", i) for i in range(opts.readers)]
        # What tick() walks: the paced connections and those waiting to retry.
        self.paced = [c for c in self.conns if c.kind != "idle"]
        self.retrying = []
        self.opened = collections.Counter()
        self.closed = collections.Counter()  # by the server (EOF or reset)
        self.statuses = collections.defaultdict(collections.Counter)
        self.errors = collections.defaultdict(collections.Counter)
        self.read_bytes = 0
        # The endless head: a request line, then headers that never end.
        self.slow_head = (f"GET {opts.narinfo} HTTP/1.1\r\nHost: bench\r\n"
                          + "".join(f"X-Slow-{i}: a\r\n" for i in range(10000))).encode()
        self.request = {
            "idle": f"GET {opts.narinfo} HTTP/1.1\r\nHost: bench\r\n\r\n".encode(),
            "reader": f"GET {opts.nar} HTTP/1.1\r\nHost: bench\r\n\r\n".encode(),
        }

    # -- connections ---------------------------------------------------------

    def connect(self, c, now):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if c.kind == "reader":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", self.opts.port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            self.errors[c.kind][error_name(err)] += 1
            c.sock, c.state = None, "retry"
            c.next_send = now + 0.1
            self.retrying.append(c)
            return
        c.sock, c.state, c.buf, c.sent, c.body_got, c.body_len = s, "connecting", b"", 0, 0, None
        # Slowloris phases spread over the second, so the bytes come steadily.
        c.next_send = now + (c.index % 100) / 100
        self.opened[c.kind] += 1
        self.sel.register(s, selectors.EVENT_WRITE, c)

    def drop(self, c, now, why=None):
        """c is lost: count it (closed by the server, unless it never
        connected; `why` is the socket error, if it came as one) and open it
        again."""
        if why:
            self.errors[c.kind][why] += 1
        if c.state != "connecting":
            self.closed[c.kind] += 1
        if c.sock is not None:
            try:
                self.sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()
        if c.buf.startswith(b"HTTP/") and c.state in ("slow", "connecting"):
            # A slowloris connection answered before it finished (408, 400...).
            self.statuses[c.kind][status_of(c.buf)] += 1
        c.sock = None
        self.connect(c, now)

    def recv(self, c, now, n):
        """Up to n bytes from c; None when none are ready or c was lost (and
        is being opened again)."""
        try:
            data = c.sock.recv(n)
        except BlockingIOError:
            return None
        except OSError as e:
            self.drop(c, now, error_name(e.errno))
            return None
        if not data:
            self.drop(c, now)
            return None
        return data

    def on_event(self, c, mask, now):
        if c.state == "connecting":
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return self.drop(c, now, error_name(err))
            if c.kind == "slowloris":
                c.state = "slow"
                self.sel.modify(c.sock, selectors.EVENT_READ, c)
                return
            try:
                c.sock.sendall(self.request[c.kind])  # small: fits the empty send buffer
            except OSError as e:
                return self.drop(c, now, error_name(e.errno))
            c.state = "head"
            self.sel.modify(c.sock, selectors.EVENT_READ, c)
            return
        if c.kind == "reader" and c.state == "body":
            return  # paced by tick(), not by readiness
        data = self.recv(c, now, 65536)
        if data is None:
            return
        c.buf += data
        if c.state == "head" and b"\r\n\r\n" in c.buf:
            head, rest = c.buf.split(b"\r\n\r\n", 1)
            status = status_of(head)
            self.statuses[c.kind][status] += 1
            if c.kind == "idle":
                length = content_length(head)
                c.state, c.buf = "idle-body", rest
                c.body_len = length if length is not None else 0
            else:
                c.state, c.buf = "body", b""
                c.body_got, c.started = len(rest), now
                c.body_len = content_length(head)
                self.read_bytes += len(rest)
                # Stop watching: tick() reads at the pace.
                self.sel.unregister(c.sock)
        if c.state == "idle-body" and len(c.buf) >= c.body_len:
            c.state, c.buf = "silent", b""  # now it only watches for a close
        elif c.state == "silent" and data:
            self.errors[c.kind]["unexpected bytes"] += 1
            c.buf = b""

    def tick(self, now):
        retrying, self.retrying = self.retrying, []
        for c in retrying:
            if now >= c.next_send:
                self.connect(c, now)
            else:
                self.retrying.append(c)
        for c in self.paced:
            if c.kind == "slowloris" and c.state == "slow" and now >= c.next_send:
                try:
                    c.sock.send(self.slow_head[c.sent : c.sent + 1])
                    c.sent += 1
                except BlockingIOError:
                    pass
                except OSError as e:
                    self.drop(c, now, error_name(e.errno))
                    continue
                c.next_send += 1.0
            elif c.kind == "reader" and c.state == "body":
                self.read_paced(c, now)

    def read_paced(self, c, now):
        allowed = int(self.opts.rate * (now - c.started)) - c.body_got
        while allowed > 0:
            data = self.recv(c, now, min(allowed, 65536))
            if data is None:
                return
            c.body_got += len(data)
            self.read_bytes += len(data)
            allowed -= len(data)
            if c.body_len is not None and c.body_got >= c.body_len:
                # All of it (only with a long hold): ask again on the same connection.
                try:
                    c.sock.sendall(self.request["reader"])
                except OSError as e:
                    return self.drop(c, now, error_name(e.errno))
                c.state, c.buf = "head", b""
                self.sel.register(c.sock, selectors.EVENT_READ, c)
                return

    # -- the run -------------------------------------------------------------

    def in_place(self):
        want = {"idle": "silent", "slowloris": "slow", "reader": "body"}
        return sum(c.state == want[c.kind] for c in self.conns)

    def summary(self):
        kinds = ("idle", "slowloris", "reader")
        return {
            "in_place": {k: sum(c.kind == k and c.state in ("silent", "slow", "body")
                                for c in self.conns) for k in kinds},
            "opened": {k: self.opened[k] for k in kinds},
            "closed_by_server": {k: self.closed[k] for k in kinds},
            "statuses": {k: dict(self.statuses[k]) for k in kinds},
            "errors": {k: dict(self.errors[k]) for k in kinds if self.errors[k]},
            "reader_bytes": self.read_bytes,
            # Its own CPU: on a small machine, taken from the server's share.
            "cpu_seconds": sum(os.times()[:2]),
            "seconds": time.monotonic() - self.began,
        }

    def run(self, stop):
        now = self.began = time.monotonic()  # summary() counts from here
        # Open in batches, so a listen backlog of 128 is not overrun by a
        # burst of 1,564 SYNs (the kernel would drop and retry them for
        # seconds: a SYN flood, not the misbehaviour we want to measure).
        pending = list(self.conns)
        ready_at = now + self.opts.setup_seconds
        announced = False
        next_tick = now
        while not stop():
            now = time.monotonic()
            if pending:
                batch, pending = pending[:100], pending[100:]
                for c in batch:
                    self.connect(c, now)
            for key, mask in self.sel.select(timeout=TICK):
                if key.data.sock is key.fileobj:  # not dropped meanwhile
                    self.on_event(key.data, mask, now)
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK
                self.tick(time.monotonic())
            if not announced and not pending and (
                    self.in_place() == len(self.conns) or now >= ready_at):
                print("READY " + json.dumps(self.summary()), flush=True)
                announced = True
        print("DONE " + json.dumps(self.summary()), flush=True)


def error_name(code):
    return errno.errorcode.get(code, str(code))


def status_of(head):
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    return parts[1].decode("latin-1") if len(parts) > 1 else "?"


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--narinfo", required=True, help="path of a present narinfo")
    ap.add_argument("--nar", required=True, help="path of the 10 MiB NAR")
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--slowloris", type=int, default=500)
    ap.add_argument("--readers", type=int, default=64)
    ap.add_argument("--rate", type=int, default=64 << 10, help="bytes/s per reader")
    ap.add_argument("--setup-seconds", type=float, default=15)
    opts = ap.parse_args()
    limit = raise_nofile()
    need = opts.idle + opts.slowloris + opts.readers + 50
    if limit < need:
        sys.exit(f"misbehave: {need} descriptors needed, the hard limit allows {limit}")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    # The driver closes our stdin to stop us too (it may die without a signal).
    watch_stdin = stat.S_ISFIFO(os.fstat(0).st_mode)
    if watch_stdin:
        os.set_blocking(0, False)

    def stop():
        if stopping or not watch_stdin:
            return bool(stopping)
        try:
            return os.read(0, 1) == b""
        except BlockingIOError:
            return False

    Load(opts).run(stop)


if __name__ == "__main__":
    main()
