"""The measurements: wrk runs, memory sampling, a slow reader, and socket
activation played the way systemd plays it."""

import json
import math
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import client
import procs

HERE = os.path.dirname(os.path.abspath(__file__))


WARM_PER_TRIAL = 10


class MeasureError(Exception):
    pass


def wrk(port, path, conns, seconds, paths_file=None):
    """One wrk run; returns the dict the Lua `done` prints. Threads: one per
    core at most, and never more than connections."""
    threads = min(conns, os.cpu_count() or 1)
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "30s",
            "-s", os.path.join(HERE, "wrk.lua"), f"http://127.0.0.1:{port}{path}"]
    if paths_file:
        argv += ["--", paths_file]
    opened = passive_opens()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH "):
            result = json.loads(line[len("BENCH "):])
            result["seconds"] = result["duration_us"] / 1e6
            # wrk reconnects silently when a server closes a keep-alive
            # connection; the kernel's count of accepted connections tells.
            result["accepted"] = passive_opens() - opened
            return result
    raise MeasureError(f"wrk printed no result: {out.stdout[-500:]} {out.stderr[-500:]}")


def wrk_once(port, paths_file, conns, cap_seconds=120):
    """Every path of paths_file asked exactly once over `conns` connections
    (bench/lib/wrk-once.lua); returns wrk's counts plus "seconds", from the
    first request written to the last answer read. wrk's main thread sleeps
    out its -d whatever its threads do, so once every thread has printed
    ONCE-DONE it is interrupted (SIGINT), which makes it report at once."""
    threads = min(conns, os.cpu_count() or 1)
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{cap_seconds}s", "--timeout", "30s",
            "-s", os.path.join(HERE, "wrk-once.lua"), f"http://127.0.0.1:{port}/",
            "--", paths_file, str(threads), str(conns)]
    opened = passive_opens()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done, lines = 0, []
    for line in proc.stdout:  # ends when wrk exits: after the SIGINT, or at the cap
        lines.append(line)
        if line.startswith("ONCE-DONE"):
            done += 1
            if done == threads:
                proc.send_signal(signal.SIGINT)
    proc.wait()
    err = proc.stderr.read()
    for line in lines:
        if line.startswith("BENCH "):
            result = json.loads(line[len("BENCH "):])
            if done < threads:
                raise MeasureError(f"not every path was answered within {cap_seconds} s "
                                   f"({result['requests']} answers)")
            result["seconds"] = result["first_to_last_us"] / 1e6
            result["accepted"] = passive_opens() - opened
            return result
    raise MeasureError(f"wrk printed no result: {''.join(lines)[-500:]} {err[-500:]}")


def passive_opens():
    """TCP connections this machine has accepted so far (all of them: the
    figure is exact only while nothing else connects, a hint otherwise)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("PassiveOpens")])


class Sampler:
    """Samples the RSS of a process group in a thread; keeps the maximum.
    With `counts`, also the peak of its threads and open descriptors."""

    def __init__(self, pgid, interval=0.1, counts=False):
        self.pgid, self.interval, self.counts = pgid, interval, counts
        self.max_kib, self.samples = 0, []
        self.max_threads = self.max_fds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        members, refreshed = [], 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - refreshed > 1.0:  # membership scans all of /proc: not every tick
                members, refreshed = procs.group(self.pgid), now
            kib = procs.rss_kib(members)
            self.samples.append(kib)
            self.max_kib = max(self.max_kib, kib)
            if self.counts:
                self.max_threads = max(self.max_threads, procs.threads(members))
                self.max_fds = max(self.max_fds, procs.fds(members))
            self._stop.wait(self.interval)


def slow_reader(server, path, seconds, rate=2 << 20, chunk=64 << 10):
    """Downloads `path` at about `rate` bytes/s for `seconds`, sampling the
    server's RSS: (rss before the request, max while streaming, bytes read)."""
    before = server.rss_kib()
    got = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        with Sampler(server.pid, interval=0.1) as sampler:
            client.request(sock, path)
            status, _, rest = client.read_head(sock)
            if status != 200:
                raise MeasureError(f"{server.spec.name}: {path} answered {status}")
            got = len(rest)
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                data = sock.recv(chunk)
                if not data:
                    break
                got += len(data)
                # Pace by the clock, not by sleeps, so rate holds over the run.
                ahead = got / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
    return before, sampler.max_kib, got


class Activator:
    """Plays systemd for one server spec: holds a listening socket and, when a
    connection is pending and no server runs, starts the server with the socket
    as fd 3 (LISTEN_FDS=1, LISTEN_PID)."""

    def __init__(self, spec, logdir, idle_timeout=None):
        self.spec, self.idle_timeout = spec, idle_timeout
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.log = os.path.join(logdir, f"{spec.name}-activated.log")
        self.pid = None

    def activate_if_pending(self, timeout=5.0):
        """Waits for a pending connection, then starts the server, as systemd's
        socket unit would on the first connection."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            raise MeasureError(f"{self.spec.name}: no pending connection to activate on")
        argv, env = self.spec.command(self.port, activated=True, idle_timeout=self.idle_timeout)
        self.pid = procs.spawn(argv, env, listen_fd=self.sock.fileno(), log=self.log)

    def stop(self):
        if self.pid is not None:
            procs.stop(self.pid)
            self.pid = None

    def close(self):
        self.stop()
        self.sock.close()


def timed_get(port, path, before_response=None):
    """Connect, request, read the whole response: (seconds, status)."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        client.request(sock, path)
        if before_response:
            before_response()
        status, _, _ = client.read_response(sock)
    return time.perf_counter() - t0, status


def cold_and_warm(activators, paths, trials):
    """Per spec name: (cold times, warm times), trials interleaved across specs
    so background load hits them alike. Cold: connect to the held socket with no
    server process, activation, first complete response. Warm: the same request
    on new connections to the server the cold request started, WARM_PER_TRIAL
    times."""
    out = {a.spec.name: ([], []) for a in activators}
    for _ in range(trials):
        for a in activators:
            path = paths[a.spec.name]
            cold, status = timed_get(a.port, path, before_response=a.activate_if_pending)
            if status != 200:
                a.stop()
                raise MeasureError(f"{a.spec.name}: cold {path} answered {status}:\n{procs.tail(a.log)}")
            # Several, since a server may open resources lazily per worker (a
            # store connection): the median is the warm state, not the
            # second request's luck in finding a worker already set up.
            for _ in range(WARM_PER_TRIAL):
                warm, status = timed_get(a.port, path)
                out[a.spec.name][1].append(warm)
            a.stop()
            out[a.spec.name][0].append(cold)
    return out


def daemon_first_answer(socket_path, trials):
    """Median seconds from connecting to the nix-daemon to its reply to the
    client's magic number (the first step of the worker protocol's
    handshake, docs/protocols.md §7)."""
    times = []
    for _ in range(trials):
        t0 = time.perf_counter()
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(socket_path)
            s.sendall((0x6E697863).to_bytes(8, "little"))
            if len(s.recv(8)) == 0:
                raise OSError("the nix-daemon closed the connection")
        times.append(time.perf_counter() - t0)
    return median(times)


def after_idle(activators, paths, idle_seconds, grace=5.0):
    """Activates each server once, then waits the idle timeout plus `grace`:
    per name, (seconds from the last response to the exit or None,
    processes left, their RSS in KiB)."""
    last = {}
    for a in activators:
        _, status = timed_get(a.port, paths[a.spec.name], before_response=a.activate_if_pending)
        last[a.spec.name] = time.monotonic()
        if status != 200:
            raise MeasureError(f"{a.spec.name}: {paths[a.spec.name]} answered {status}")
    exited = {}
    deadline = time.monotonic() + idle_seconds + grace
    while time.monotonic() < deadline and len(exited) < len(activators):
        for a in activators:
            if a.spec.name not in exited and not procs.alive(a.pid):
                exited[a.spec.name] = time.monotonic() - last[a.spec.name]
        time.sleep(0.02)
    procs.reap_orphans()
    out = {}
    for a in activators:
        members = procs.group(a.pid)
        out[a.spec.name] = (exited.get(a.spec.name), len(members), procs.rss_kib(members))
    return out


def fresh_latencies(port, path, count, budget, timeout=10.0):
    """Up to `count` requests one after the other, each on a new connection,
    for at most `budget` seconds: (seconds of each 200, other outcomes
    counted by status or error)."""
    times, other = [], {}
    end = time.monotonic() + budget
    while len(times) < count and time.monotonic() < end:
        try:
            t0 = time.perf_counter()
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
                client.request(sock, path)
                status, _, _ = client.read_response(sock)
            took = time.perf_counter() - t0
        except (OSError, client.BadResponse) as e:
            key = type(e).__name__
            other[key] = other.get(key, 0) + 1
            continue
        if status == 200:
            times.append(took)
        else:
            other[status] = other.get(status, 0) + 1
    return times, other


def percentile(xs, p):
    """The p-th percentile (nearest rank) of xs; None if empty."""
    if not xs:
        return None
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]


class MisbehavingClients:
    """bench/lib/misbehave.py as a child process against one server: enter
    returns once its connections are in place, with their summary in
    `.ready`; exit stops it and keeps its final summary in `.done`."""

    def __init__(self, port, narinfo, nar, setup_seconds=20.0, **counts):
        self.argv = [sys.executable, os.path.join(HERE, "misbehave.py"), "--port", str(port),
                     "--narinfo", narinfo, "--nar", nar, "--setup-seconds", str(setup_seconds)]
        for k, v in counts.items():
            self.argv += [f"--{k}", str(v)]
        self.timeout = setup_seconds + 10
        self.ready = self.done = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            self.__exit__()
            raise MeasureError(f"the misbehaving clients did not get ready: {line[-300:]!r}")
        self.ready = json.loads(line[len("READY "):])
        return self

    def __exit__(self, *exc):
        try:
            out, _ = self.proc.communicate(timeout=10)  # closes its stdin: the signal to stop
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        for line in out.splitlines():
            if line.startswith("DONE "):
                self.done = json.loads(line[len("DONE "):])


def median(xs):
    return statistics.median(xs) if xs else None

