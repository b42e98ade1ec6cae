"""bench/run's compression figures (`--compression zstd[:LEVEL]`): for each
level, the 10 MiB NAR fetched from its `.nar.zst` URL by wrk at 1 and 4
connections. Reports NAR MB/s (the NAR the client ends up with, so figures
compare across levels), bytes on the wire per request and the server's CPU
per request (utime + stime of its process over the run). `none` is the plain
`.nar` URL, for reference. See bench/README.md.

Two payloads: the benchmark's random 10 MiB path (nothing to compress: what
compression costs for nothing) and 10 MiB of this machine's shared libraries
(a typical binary package; the bytes depend on the machine, so compare ratios
within a run)."""

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

import client
import measure
import procs
import servers

PAYLOAD_BYTES = 10 << 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", required=True, help="directory bench/lib/setup.sh filled")
    ap.add_argument("--binary", required=True, help="our nix-serve")
    ap.add_argument("--levels", default="none,1,3,9,19")
    ap.add_argument("--seconds", type=int, default=4, help="whole seconds a wrk run (wrk's -d)")
    ap.add_argument("--out", required=True, help="write the table here too")
    opts = ap.parse_args()

    procs.become_subreaper()
    work = tempfile.mkdtemp(prefix="nix-serve-sd-bench-zstd.")
    payloads = [("random", random_path(opts.state)), ("libraries", libraries_path(work))]
    rows = []
    for level in opts.levels.split(","):
        args = [] if level == "none" else ["--compression", f"zstd:{level}"]
        spec = servers.Ours(f"zstd-{level}", opts.binary, "local", None, args=args)
        srv = servers.Running(spec, work)
        try:
            for payload, path in payloads:
                url, nar_size = nar_url(srv.port, path)
                wire = body_bytes(srv.port, url)
                for conns in (1, 4):
                    log(f"level {level}, {payload}, {conns} conn(s)")
                    cpu0 = cpu_seconds(srv.pid)
                    r = measure.wrk(srv.port, url, conns, opts.seconds)
                    cpu = cpu_seconds(srv.pid) - cpu0
                    n = max(r["requests"], 1)
                    rows.append((level, payload, conns, r["requests"] * nar_size / r["seconds"] / 1e6,
                                 wire, wire / nar_size, cpu / n * 1e3, cpu / r["seconds"]))
        finally:
            srv.stop()
    table = render(rows, opts)
    print(table)
    with open(opts.out, "w") as f:
        f.write(table)


def random_path(state):
    with open(os.path.join(state, "paths.tsv")) as f:
        for line in f:
            role, path = line.rstrip("\n").split("\t")
            if role == "nar-10M":
                return path
    sys.exit("bench: no nar-10M in paths.tsv; run bench/lib/setup.sh")


def libraries_path(work):
    """The first 10 MiB of this machine's shared libraries, as one store file
    (the same bytes, so the same path, on every run on this machine)."""
    src = os.path.join(work, "bench-10M-libraries")
    with open(src, "wb") as out:
        left = PAYLOAD_BYTES
        for lib in sorted(glob.glob("/usr/lib/x86_64-linux-gnu/*.so*")):
            if left == 0:
                break
            if os.path.islink(lib) or not os.path.isfile(lib):
                continue
            with open(lib, "rb") as f:
                chunk = f.read(left)
            out.write(chunk)
            left -= len(chunk)
    return subprocess.run(["nix-store", "--add", src], check=True, capture_output=True,
                          text=True).stdout.strip()


def nar_url(port, store_path):
    """The NAR URL the server's narinfo names, and the NAR's size."""
    hash_part = os.path.basename(store_path)[:32]
    status, _, body = client.get(port, f"/{hash_part}.narinfo", timeout=30)
    if status != 200:
        raise measure.MeasureError(f"narinfo of {store_path}: status {status}")
    fields = dict(line.split(": ", 1) for line in body.decode().splitlines())
    return "/" + fields["URL"], int(fields["NarSize"])


def body_bytes(port, url):
    status, _, body = client.get(port, url, timeout=60)
    if status != 200:
        raise measure.MeasureError(f"{url}: status {status}")
    return len(body)


def cpu_seconds(pid):
    """utime + stime of the process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def render(rows, opts):
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out = [f"Compression figures, {when}, {os.cpu_count()} cores, wrk {opts.seconds} s a run.",
           "NAR MB/s counts the uncompressed NAR the client gets; CPU is the server's.", "",
           "| level | payload | conns | NAR MB/s | bytes on the wire | ÷ NAR | CPU ms / request "
           "| CPU cores busy |",
           "|---|---|---|---|---|---|---|---|"]
    for level, payload, conns, mbs, wire, ratio, cpu_ms, busy in rows:
        out.append(f"| {level} | {payload} | {conns} | {mbs:,.0f} | {wire:,} | {ratio:.3f} "
                   f"| {cpu_ms:.1f} | {busy:.2f} |")
    return "\n".join(out) + "\n"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
