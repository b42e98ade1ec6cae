"""bench/profile's driver: one server, one wrk load, `perf record` on the
server meanwhile; prints the top frames. See bench/README.md."""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import driver
import measure
import procs
import servers

SCENARIOS = ("present", "mixed", "absent", "empty", "10M", "1G")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--daemon-socket", required=True)
    ap.add_argument("--store", default="local", choices=("local", "daemon"))
    ap.add_argument("--unsigned", action="store_true")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--ours-args", default="")
    ap.add_argument("--out", help="keep perf.data here")
    ap.add_argument("scenario", choices=SCENARIOS)
    ap.add_argument("conns", type=int)
    opts = ap.parse_args()

    procs.become_subreaper()
    work = tempfile.mkdtemp(prefix="nix-serve-sd-profile.")
    paths = driver.load_paths(opts.state)
    env = {"NIX_DAEMON_SOCKET_PATH": opts.daemon_socket} if opts.store == "daemon" else {}
    spec = servers.Ours(opts.store, opts.binary, opts.store, None if opts.unsigned else opts.key,
                        env=env, args=opts.ours_args.split())
    srv = servers.Running(spec, work)
    try:
        urls = driver.preflight(srv, paths)
        lists = driver.write_path_lists(work, paths)
        path = urls["present" if opts.scenario == "mixed" else opts.scenario]
        listed = lists.get(opts.scenario)
        data = opts.out or os.path.join(work, "perf.data")
        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "--call-graph",
                                 "dwarf,16384", "-o", data, "-p", str(srv.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        r = measure.wrk(srv.port, path, opts.conns, opts.seconds, listed)
        perf.send_signal(2)
        perf.wait()
    finally:
        srv.stop()
    rate = (f"{r['requests'] / r['seconds']:,.0f} req/s" if opts.scenario in ("present", "mixed")
            else f"{r['bytes'] / r['seconds'] / 1e6:,.0f} MB/s")
    print(f"{opts.scenario} at {opts.conns} conns, {opts.store}"
          f"{', unsigned' if opts.unsigned else ''}: {rate} under perf; data {data}\n")
    # Threads merged (--sort symbol); inlined and thread-start frames dropped
    # from the inclusive list, where they only repeat their callers' share.
    noise = ("(inlined)", "call_once", "catch_unwind", "clone3", "start_thread",
             "backtrace", "thread_start", "entry_SYSCALL")
    for mode, limit in (("--no-children", "1"), ("--children", "4")):
        print(f"== perf report {mode}, threads merged")
        out = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none", "--sort",
                              "symbol", "--percent-limit", limit, mode],
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line and not line.startswith("#") and not any(n in line for n in noise):
                print(line.rstrip().rstrip("- ").rstrip()[:160])
    sys.exit(0)


if __name__ == "__main__":
    main()
