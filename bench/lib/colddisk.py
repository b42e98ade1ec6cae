"""The cold-disk scenario (bench/README.md, "Cold disk"): the store and
nginx's cache behind a FUSE mirror whose every read sleeps (slowfs.py), the
page cache emptied before each server's turn, then four clients stream the
cold 1 GiB NAR while a fifth asks an already-answered narinfo on a fresh
connection every 10 ms."""

import os
import subprocess
import time

import client
import measure
import procs

HERE = os.path.dirname(os.path.abspath(__file__))

STREAMS = 4          # clients streaming the 1 GiB NAR, each once
INTERVAL = 0.010     # seconds between the narinfo client's requests


class SlowMounts:
    """Mounts, in `base`: store/nix/store, a slow mirror of the chroot store's
    nix/store, beside store/nix/var, a symlink to the chroot store's own
    (the database stays on the fast disk); and cache/, a slow mirror of
    nginx's file:// cache. Exit unmounts both, whatever happened."""

    def __init__(self, state, base, delay_ms, fusepy):
        self.base, self.delay_ms, self.fusepy = base, delay_ms, fusepy
        self.root = os.path.join(base, "store")
        self.cache = os.path.join(base, "cache")
        self.pairs = [(os.path.join(state, "chroot/nix/store"), os.path.join(self.root, "nix/store")),
                      (os.path.join(state, "cache"), self.cache)]
        self.chroot_var = os.path.join(state, "chroot/nix/var")
        self.pids = []

    def __enter__(self):
        if not os.path.exists("/dev/fuse"):
            raise measure.MeasureError("no /dev/fuse on this machine")
        os.makedirs(os.path.join(self.root, "nix"), exist_ok=True)
        var = os.path.join(self.root, "nix/var")
        if not os.path.islink(var):
            os.symlink(self.chroot_var, var)
        env = dict(os.environ)
        if self.fusepy:
            env["PYTHONPATH"] = self.fusepy
        try:
            for source, mountpoint in self.pairs:
                os.makedirs(mountpoint, exist_ok=True)
                log = os.path.join(self.base, os.path.basename(mountpoint) + "-slowfs.log")
                self.pids.append(procs.spawn(
                    ["python3", os.path.join(HERE, "slowfs.py"), source, mountpoint,
                     "--delay-ms", str(self.delay_ms)], env, log=log))
                deadline = time.monotonic() + 10
                while not os.path.ismount(mountpoint):
                    if not procs.alive(self.pids[-1]) or time.monotonic() > deadline:
                        raise measure.MeasureError(
                            f"slowfs did not mount {mountpoint}:\n{procs.tail(log)}")
                    time.sleep(0.05)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for _, mountpoint in self.pairs:
            unmount(mountpoint)
        for pid in self.pids:
            procs.stop(pid)
        self.pids = []


def unmount(mountpoint):
    """fusermount -u, and if the mount is busy or its process gone, a lazy
    unmount (the kernel detaches it now and drops it once unused)."""
    if not os.path.ismount(mountpoint):
        return
    for argv in (["fusermount", "-u", mountpoint], ["fusermount", "-u", "-z", mountpoint],
                 ["umount", "-l", mountpoint]):
        if subprocess.run(argv, capture_output=True).returncode == 0:
            return


def drop_caches():
    """Writes dirty pages out, then empties the page cache, dentries and inodes
    (the whole machine's: it needs root)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
    except OSError as e:
        raise measure.MeasureError(f"cannot drop the page cache: {e}") from e


def run(srv, narinfo, nar, nar_size, cap_seconds):
    """One server's turn, its answers already checked: asks `narinfo` once
    (from then on an already-answered one), empties the page cache, starts
    STREAMS clients (curl) that each fetch `nar` once, capped at cap_seconds,
    and asks `narinfo` on a fresh connection every INTERVAL until they are
    done. Returns (narinfo seconds, their other outcomes, NAR bytes read,
    seconds until the last stream ended)."""
    status, _, _ = client.get(srv.port, narinfo)
    if status != 200:
        raise measure.MeasureError(f"{narinfo} answered {status}")
    drop_caches()
    url = f"http://127.0.0.1:{srv.port}{nar}"
    argv = ["curl", "--silent", "--show-error", "--output", "/dev/null", "--max-time", str(cap_seconds),
            "--write-out", "%{http_code} %{size_download}", url]
    start = time.monotonic()
    streams = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(STREAMS)]
    times, other = [], {}
    tick = start
    while any(s.poll() is None for s in streams):
        tick += INTERVAL
        now = time.monotonic()
        if tick > now:
            time.sleep(tick - now)
        else:
            tick = now  # a slow answer: the next request goes now, missed ticks are not made up
        try:
            took, status = measure.timed_get(srv.port, narinfo)
        except (OSError, client.BadResponse) as e:
            other[type(e).__name__] = other.get(type(e).__name__, 0) + 1
            continue
        if status == 200:
            times.append(took)
        else:
            other[status] = other.get(status, 0) + 1
    elapsed = time.monotonic() - start
    got, problems = 0, []
    for s in streams:
        out, err = s.communicate()
        code, _, size = out.strip().partition(" ")
        got += int(size or 0)
        if s.returncode == 28:  # curl: --max-time reached; the bytes so far count
            continue
        if s.returncode != 0 or code != "200" or int(size or 0) != nar_size:
            problems.append(f"curl exit {s.returncode}, status {code}, {size} of {nar_size} bytes "
                            f"{err.strip()[:100]}")
    if problems:
        raise measure.MeasureError("NAR streams: " + "; ".join(problems))
    return times, other, got, elapsed
