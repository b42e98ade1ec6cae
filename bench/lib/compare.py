"""Two builds of ours, side by side, on the narinfo figures and cold start:
what a change to the narinfo path gains, measured in one run (bench/README.md,
"Comparing two builds"). Reuses bench/run's pieces; run after
bench/lib/setup.sh, with a nix-daemon socket for the daemon columns."""

import argparse
import os
import sys
import tempfile

import driver
import figures
import measure
import procs
import servers

KEYS = ["seq.present.p50", "seq.present.p99", "seq.absent.p50", "seq.absent.p99",
        "load.present.32", "load.present.256", "load.mixed.32", "load.mixed.256",
        "start.cold", "start.warm"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", required=True, help="directory bench/lib/setup.sh filled")
    ap.add_argument("--key", required=True, help="secret key file (signing on)")
    ap.add_argument("--daemon-socket", required=True, help="the nix-daemon socket for --store daemon")
    ap.add_argument("--before", required=True, help="one nix-serve binary")
    ap.add_argument("--after", required=True, help="the other")
    ap.add_argument("--seq-seconds", type=int, default=3)
    ap.add_argument("--load-seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="the best round counts per figure")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--backends", default="local,daemon")
    opts = ap.parse_args()

    procs.become_subreaper()
    work = tempfile.mkdtemp(prefix="nix-serve-sd-compare.")
    paths = driver.load_paths(opts.state)
    lists = driver.write_path_lists(work, paths)
    env = {"NIX_DAEMON_SOCKET_PATH": opts.daemon_socket}
    specs = [servers.Nginx("nginx", os.path.join(opts.state, "cache"), work)]
    for backend in opts.backends.split(","):
        for label, binary in (("before", opts.before), ("after", opts.after)):
            specs.append(servers.Ours(f"{label} {backend}", binary, backend, opts.key,
                                      env=env if backend == "daemon" else None))
    results = {s.name: {} for s in specs}
    notes, reconnects = [], {}

    running = {s.name: servers.Running(s, work) for s in specs}
    urls = {n: driver.preflight(srv, paths) for n, srv in running.items()}
    names = [s.name for s in specs]
    for rnd in range(opts.rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        driver.log(f"round {rnd + 1} of {opts.rounds}")
        for key, scenario, conns, seconds, plist in (
                ("seq.present", "present", 1, opts.seq_seconds, None),
                ("seq.absent", "absent", 1, opts.seq_seconds, None),
                ("load.present.32", "present", 32, opts.load_seconds, lists["present"]),
                ("load.present.256", "present", 256, opts.load_seconds, lists["present"]),
                ("load.mixed.32", "present", 32, opts.load_seconds, lists["mixed"]),
                ("load.mixed.256", "present", 256, opts.load_seconds, lists["mixed"])):
            for name in order:
                r = measure.wrk(running[name].port, urls[name][scenario], conns, seconds, plist)
                driver.record(results, notes, reconnects, name, key, scenario, r)
    for srv in running.values():
        srv.stop()

    present = {n: urls[n]["present"] for n in names}
    activators = [measure.Activator(s, work) for s in specs]
    driver.log(f"cold start: {opts.trials} activations each")
    for name, (cold, warm) in measure.cold_and_warm(activators, present, opts.trials).items():
        results[name]["start.cold"] = measure.median(cold)
        results[name]["start.warm"] = measure.median(warm)
    for a in activators:
        a.close()

    print(table(results, names, opts))
    for n in notes:
        print(f"- {n}")
    for name, per_key in reconnects.items():
        print(f"- {name} closed keep-alive connections: "
              + ", ".join(f"{k} {v:.2f}" for k, v in per_key.items()))


def table(results, names, opts):
    labels = {k: (lbl, unit, scale) for k, lbl, unit, scale in figures.FIGURES}
    ctx = {"trials": opts.trials, "warm": opts.trials * measure.WARM_PER_TRIAL, "idle": ""}
    head = ["figure", "unit"] + names + [f"{n} ÷ nginx" for n in names[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in KEYS:
        label, unit, scale = labels[key]
        row = [label.format(**ctx), unit]
        row += [figures.fmt(results[n].get(key), scale) for n in names]
        base = results["nginx"].get(key)
        for n in names[1:]:
            v = results[n].get(key)
            row.append(f"{v / base:.2f}" if v and base else "—")
        lines.append("| " + " | ".join(row) + " |")
    load = os.getloadavg()[0]
    return "\n".join(lines) + f"\n\nload average at the end: {load:.2f}\n"


if __name__ == "__main__":
    sys.exit(main())
