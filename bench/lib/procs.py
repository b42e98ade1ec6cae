"""Processes: spawn, find a process tree, measure its resident memory.

Every server runs as the leader of its own process group, so "the server" is
that group: its RSS is the sum over the group, its process count the group's
size. The driver is a child subreaper, so helpers that outlive their parent are
re-parented to it and reaped, not left as zombies.
"""

import ctypes
import os
import signal
import socket
import time

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group(pgid):
    """Live (not zombie) processes of process group pgid: a server and every
    helper it starts, since the driver spawns each server as a group leader."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # The command name is in parentheses and may hold spaces: split after it.
        fields = stat[stat.rindex(b")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != b"Z":
            found.append(int(name))
    return found


def rss_kib(pids):
    """Sum of VmRSS over pids (those that vanished count 0)."""
    return status_sum(pids, "VmRSS:")


def threads(pids):
    """Sum of the thread counts over pids (those that vanished count 0)."""
    return status_sum(pids, "Threads:")


def status_sum(pids, field):
    """Sum of one numeric field of /proc/PID/status over pids."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def fds(pids):
    """Open descriptors over pids (those that vanished count 0)."""
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


# Sets LISTEN_PID to the pid the server will have, then becomes the server.
LISTEN_SHIM = 'LISTEN_PID=$$ exec "$0" "$@"'


def spawn(argv, env, listen_fd=None, log=None):
    """Starts argv in a process group of its own, stdin /dev/null, stdout and
    stderr to log; with listen_fd, the child gets it as fd 3 the way systemd
    hands over a socket (LISTEN_FDS=1, LISTEN_PID=its own pid).

    posix_spawn (vfork-like), never fork: forking the driver copies its page
    tables, which cost 2-10 ms here, growing with the driver's size, and
    would land in the cold-start figure as if it were the server's. systemd
    does not fork a large process per activation either. LISTEN_PID is only
    known once the child exists, so an activated server is started through
    `sh -c 'LISTEN_PID=$$ exec ...'`: the shell's start-up (about 0.5 ms) is
    charged to every server alike (bench/README.md, "Cold start")."""
    actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)]
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if log else None
    if log_fd is not None:
        actions += [(os.POSIX_SPAWN_DUP2, log_fd, 1), (os.POSIX_SPAWN_DUP2, log_fd, 2)]
    child_env = dict(env)
    moved = None
    if listen_fd is not None:
        if listen_fd == 3:  # dup2(3, 3) would leave it close-on-exec
            listen_fd = moved = os.dup(listen_fd)
        # dup2 leaves the new descriptor inheritable across exec.
        actions.append((os.POSIX_SPAWN_DUP2, listen_fd, 3))
        child_env.update(LISTEN_FDS="1", LISTEN_FDNAMES="http")
        child_env.pop("LISTEN_PID", None)
        argv = ["/bin/sh", "-c", LISTEN_SHIM, *argv]
    try:
        return os.posix_spawnp(argv[0], argv, child_env, file_actions=actions, setpgroup=0)
    finally:
        for fd in (log_fd, moved):
            if fd is not None:
                os.close(fd)


def alive(pid):
    """Reaps pid if it exited; True while it runs."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == 0


def stop(pid, timeout=5.0):
    """SIGTERM the process group, SIGKILL after timeout; reaps what exits."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive(pid)
            reap_orphans()
            if not group(pid):
                return
            time.sleep(0.01)


def reap_orphans():
    """Collects exited re-parented helpers, so none lingers as a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def tail(path, n=15):
    """The last n lines of a server's log, for an error message."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"
