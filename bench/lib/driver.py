"""bench/run's driver: starts every server, runs every figure against each of
them in turn (interleaved, so load from elsewhere hits all alike), prints the
table. Called by bench/run after the set-up; see bench/README.md."""

import argparse
import contextlib
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time

import client
import colddisk
import figures
import measure
import procs
import servers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", required=True, help="directory bench/lib/setup.sh filled")
    ap.add_argument("--key", required=True, help="secret key file (signing on)")
    ap.add_argument("--binary", help="our nix-serve; absent: every 'ours' column is nginx (dry run)")
    ap.add_argument("--daemon-socket", required=True, help="the nix-daemon socket for --store daemon")
    ap.add_argument("--out", required=True, help="write the table here too")
    ap.add_argument("--seq-seconds", type=int, default=2, help="whole seconds (wrk's -d)")
    ap.add_argument("--load-seconds", type=int, default=4, help="whole seconds (wrk's -d)")
    ap.add_argument("--slow-seconds", type=float, default=6)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the wrk figures; the best counts")
    ap.add_argument("--idle-timeout", type=int, default=2)
    ap.add_argument("--ours-args", default="", help="extra arguments for our binary")
    ap.add_argument("--floor", help="bench/lib/floor.rs, built: the cold-start floor")
    ap.add_argument("--only", default="",
                    help="comma-separated figure key prefixes to run (e.g. misbehave, "
                         "load.10M, load.present.32, seq, start, idle, mem.slow); default all")
    ap.add_argument("--misbehave-seconds", type=int, default=10,
                    help="whole seconds of each wrk run in the misbehave scenario")
    ap.add_argument("--misbehave-requests", type=int, default=300,
                    help="fresh-connection requests timed per phase of the misbehave scenario")
    ap.add_argument("--harmonia", help="a harmonia-cache binary: measured as a peer column too")
    ap.add_argument("--slow-dir", help="where the cold-disk scenario mounts its slow file systems "
                                       "(default: in the run's temporary directory)")
    ap.add_argument("--slow-delay-ms", type=float, default=2.0,
                    help="the cold-disk scenario's sleep before every read")
    ap.add_argument("--fusepy", help="a directory holding fusepy (pip install --target), for the "
                                     "cold-disk scenario; default: python3's own")
    ap.add_argument("--cold-seconds", type=int, default=120,
                    help="cap on each server's cold-disk run (the 1 GiB NAR streams are cut there)")
    opts = ap.parse_args()
    prefixes = [p for p in opts.only.split(",") if p]

    def wanted(key):
        return not prefixes or any(key.startswith(p) or p.startswith(key) for p in prefixes)

    procs.become_subreaper()
    work = tempfile.mkdtemp(prefix="nix-serve-sd-bench.")
    log(f"logs and configs in {work}")
    paths = load_paths(opts.state)
    nginx = servers.Nginx("nginx", os.path.join(opts.state, "cache"), work)
    if opts.binary:
        extra = opts.ours_args.split()
        daemon_env = {"NIX_DAEMON_SOCKET_PATH": opts.daemon_socket}
        ours = [servers.Ours("local", opts.binary, "local", opts.key, args=extra),
                servers.Ours("daemon", opts.binary, "daemon", opts.key, env=daemon_env, args=extra)]
        unsigned = servers.Ours("local-unsigned", opts.binary, "local", None, args=extra)
    else:
        log("no binary: the 'ours' columns are nginx too (dry run of the harness)")
        ours = [servers.Nginx(n, os.path.join(opts.state, "cache"), work) for n in ("local", "daemon")]
        unsigned = servers.Nginx("local-unsigned", os.path.join(opts.state, "cache"), work)
    peers = [servers.Harmonia("harmonia", opts.harmonia, opts.key, work)] if opts.harmonia else []
    specs = [nginx] + ours + peers + [unsigned]
    spec_of = {s.name: s for s in specs}
    results = {s.name: {} for s in specs}
    notes, failed = [], set()
    reconnects = {}  # name -> wrk figure -> connections accepted per request

    running = {}
    for spec in specs:
        try:
            running[spec.name] = servers.Running(spec, work)
        except servers.StartError as e:
            failed.add(spec.name)
            notes.append(f"{spec.name} did not start: {one_line(e)}")
            log(str(e))
    if "nginx" in failed:
        sys.exit("bench: nginx, the yardstick, did not start; see above")
    time.sleep(0.5)
    for name, srv in running.items():
        results[name]["mem.start"] = srv.rss_kib()

    urls = {}
    for name, srv in list(running.items()):
        try:
            urls[name] = preflight(srv, paths)
        except (measure.MeasureError, client.BadResponse, OSError) as e:
            failed.add(name)
            notes.append(f"{name} failed the pre-flight check: {one_line(e)}")
            log(f"{name}: pre-flight: {e}")
            srv.stop()
            del running[name]

    lists = write_path_lists(work, paths)
    full = [s.name for s in [nginx] + ours + peers if s.name in running]
    narinfo_only = full + [unsigned.name] if unsigned.name in running else full

    def run(key, names, scenario, conns, seconds, paths_file=None, sample=False):
        if not wanted(key):
            return
        for name in names:
            srv = running[name]
            log(f"{key}: {name}")
            try:
                if sample:
                    with measure.Sampler(srv.pid) as s:
                        r = measure.wrk(srv.port, urls[name][scenario], conns, seconds, paths_file)
                    peak = results[name].get("mem.peak256", 0)
                    results[name]["mem.peak256"] = max(peak, s.max_kib)
                else:
                    r = measure.wrk(srv.port, urls[name][scenario], conns, seconds, paths_file)
            except measure.MeasureError as e:
                notes.append(f"{name}, {key}: {one_line(e)}")
                continue
            record(results, notes, reconnects, name, key, scenario, r)

    # Each round runs every figure against every server in turn; the second
    # round in the opposite order. Per figure the best round counts: load from
    # elsewhere only ever makes a figure worse.
    for rnd in range(opts.rounds if wanted("seq") or wanted("load") else 0):
        order = (lambda xs: xs) if rnd % 2 == 0 else (lambda xs: xs[::-1])
        log(f"round {rnd + 1} of {opts.rounds}")
        # 1. nix-serve-ng's four scenarios: one connection, one request at a time.
        for scenario in ("present", "absent", "empty", "10M"):
            names = narinfo_only if scenario == "present" else full
            run(f"seq.{scenario}", order(names), scenario, 1, opts.seq_seconds)
        # 2. Throughput under concurrency.
        for conns in (32, 256):
            run(f"load.present.{conns}", order(narinfo_only), "present", conns, opts.load_seconds,
                lists["present"], sample=conns == 256)
        for conns in (32, 256):
            run(f"load.mixed.{conns}", order(full), "present", conns, opts.load_seconds,
                lists["mixed"], sample=conns == 256)
        for size in ("10M", "1G"):
            for conns in (1, 4, 16, 32, 256) if size == "10M" else (32, 256):
                run(f"load.{size}.{conns}", order(full), size, conns, opts.load_seconds,
                    sample=conns == 256)
        # Narinfo asked the first time: a new instance of each server (no reply
        # cached yet), every path of the 32,000 asked exactly once.
        if wanted("load.first"):
            warm_first_ask(opts.state, paths["first"])
        for conns in (32, 256):
            if wanted(f"load.first.{conns}"):
                for name in order(full):
                    first_ask(spec_of[name], work, lists["first"], conns, results[name], notes)
    move_unsigned(results, unsigned.name)

    # 4. Memory while a slow reader takes a 1 GiB NAR (all servers at once: each
    # reader is idle most of the time, so they barely compete).
    import threading
    slow = {}

    def slow_one(name):
        try:
            slow[name] = measure.slow_reader(running[name], urls[name]["1G"], opts.slow_seconds)
        except (measure.MeasureError, client.BadResponse, OSError) as e:
            notes.append(f"{name}, slow reader: {one_line(e)}")

    threads = [threading.Thread(target=slow_one, args=(n,)) for n in full if wanted("mem.slow")]
    if threads:
        log("memory with a slow reader")
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, (before, peak, got) in slow.items():
        results[name]["mem.slow.max"] = peak
        results[name]["mem.slow.growth"] = max(0, peak - before)
    for srv in running.values():
        srv.stop()

    # 6. Misbehaving clients, against a new instance of each server in turn.
    if wanted("misbehave"):
        for name in full:
            misbehave(spec_of[name], work, urls[name], lists["present"], opts, results[name], notes)

    # 7. Cold disk: the store behind a slow FUSE mount, page cache emptied.
    if wanted("cold"):
        cold_disk(opts, work, paths, spec_of, [n for n in full if n != "daemon"], results, notes)

    # 3. Cold start under socket activation, and warm, interleaved per trial.
    present = {n: urls[n]["present"] for n in full}
    floor = [servers.Floor(opts.floor)] if opts.floor and wanted("start") else []
    present.update({f.name: "/nix-cache-info" for f in floor})
    activators = [measure.Activator(s, work) for s in [nginx] + ours + floor
                  if s.name in present and wanted("start")]
    if activators:
        log(f"cold start: {opts.trials} activations each")
    try:
        cw = measure.cold_and_warm(activators, present, opts.trials)
        for name, (cold, warm) in cw.items():
            if name == "floor":
                notes.append(
                    f"cold-start floor: {measure.median(cold) * 1e3:.1f} ms for bench/lib/floor.rs, "
                    "a program that only answers a fixed 200, started the same way (the share "
                    "of every cold start that is the harness's, the kernel's and a Rust "
                    "program's own start-up)")
                continue
            results[name]["start.cold"] = measure.median(cold)
            results[name]["start.warm"] = measure.median(warm)
    except (measure.MeasureError, client.BadResponse, OSError) as e:
        notes.append(f"cold start: {one_line(e)}")
    for a in activators:
        a.close()
    if wanted("start") and "daemon" in present:
        try:
            first = measure.daemon_first_answer(opts.daemon_socket, opts.trials)
            notes.append(
                f"the nix-daemon's own first answer: {first * 1e3:.1f} ms from connect to the "
                "reply to the first bytes of its handshake, median of "
                f"{opts.trials} (a new connection makes it fork a worker and open the store): "
                "part of the daemon backend's cold start that is the daemon's")
        except OSError as e:
            notes.append(f"nix-daemon first answer: {one_line(e)}")

    # 4. After the idle timeout: our server should be gone, nginx stays.
    idle = f"{opts.idle_timeout}s"
    activators = [measure.Activator(s, work, idle_timeout=idle) for s in [nginx] + ours
                  if s.name in present and wanted("idle")]
    if activators:
        log(f"idle timeout {idle}")
    try:
        for name, (exit_s, count, kib) in measure.after_idle(
                activators, present, opts.idle_timeout).items():
            results[name]["idle.exit"] = exit_s
            results[name]["idle.procs"] = count
            results[name]["idle.rss"] = kib
            if exit_s is None and spec_of[name].serves_idle_timeout:
                notes.append(f"{name} did not exit within the idle timeout + 5 s")
    except (measure.MeasureError, client.BadResponse, OSError) as e:
        notes.append(f"idle timeout: {one_line(e)}")
    for a in activators:
        a.close()

    for name, per_key in reconnects.items():
        notes.append(f"{name} closed keep-alive connections (wrk reconnected; connections accepted "
                     "per request): " + ", ".join(f"{k} {v:.2f}" for k, v in per_key.items()))
    report(opts, results, notes, [s.name for s in ours], [p.name for p in peers], idle,
           len(paths["first"]))
    sys.exit(1 if failed else 0)


def record(results, notes, reconnects, name, key, scenario, r):
    """Keeps the best value over rounds: least time, most requests or bytes."""
    if key.startswith("seq."):
        values = {f"{key}.p50": r["p50_us"] / 1e6, f"{key}.p99": r["p99_us"] / 1e6}
        better = min
    elif scenario == "present":  # the narinfo lists
        values, better = {key: r["requests"] / r["seconds"]}, max
    else:
        values, better = {key: r["bytes"] / r["seconds"]}, max
    for k, v in values.items():
        results[name][k] = better(results[name][k], v) if k in results[name] else v
    conns = 1 if key.startswith("seq.") else int(key.rsplit(".", 1)[1])
    # wrk opens `conns` connections (and again after errors); more than twice
    # that, and over 5 % of requests, means the server closed keep-alives.
    if r["accepted"] > 2 * conns + 20 and r["accepted"] > 0.05 * r["requests"]:
        reconnects.setdefault(name, {})[key] = r["accepted"] / r["requests"]
    wrk_notes(notes, name, key, r)


def wrk_notes(notes, name, key, r):
    """Notes for socket errors and unexpected statuses in one wrk run."""
    errors = r["connect_errors"] + r["read_errors"] + r["write_errors"]
    if errors:
        notes.append(f"{name}, {key}: {errors} socket errors "
                     f"(connect {r['connect_errors']}, read {r['read_errors']}, write {r['write_errors']})")
    # Expected 404s: all of them for absent, about half for the mixed list.
    non_2xx, n = r["non_2xx_3xx"], r["requests"]
    if key == "seq.absent":
        bad = n - non_2xx
    elif key.startswith("load.mixed"):
        bad = non_2xx if abs(non_2xx - n / 2) > 0.05 * n else 0
    else:
        bad = non_2xx
    if bad:
        notes.append(f"{name}, {key}: {bad} of {r['requests']} responses had an unexpected status")


# What the misbehaving clients hold open, all at once (issue 10).
MISBEHAVING = {"idle": 1000, "slowloris": 500, "readers": 64}
# The bound on a fresh client's narinfo p99 meanwhile, in seconds.
MISBEHAVE_P99_TARGET = 0.020


def misbehave(spec, work, urls, present_list, opts, results, notes):
    """The misbehave scenario against a new instance of one server: a fresh
    client's narinfo latency and narinfo throughput on 32 connections, first
    unloaded, then with the misbehaving clients holding their connections;
    the server's peak RSS, threads and descriptors meanwhile."""
    name = spec.name
    log(f"misbehave: {name}")
    try:
        srv = servers.Running(spec.for_many_connections(), work, tag="-misbehave")
    except servers.StartError as e:
        notes.append(f"{name}, misbehave: did not start: {one_line(e)}")
        return
    path, seconds = urls["present"], opts.misbehave_seconds

    def phase(key):
        times, other = measure.fresh_latencies(srv.port, path, opts.misbehave_requests, seconds)
        r = measure.wrk(srv.port, path, 32, seconds, present_list)
        results[f"{key}.p50"] = measure.percentile(times, 50)
        results[f"{key}.p99"] = measure.percentile(times, 99)
        results[f"{key}.present.32"] = r["requests"] / r["seconds"]
        if other or len(times) < opts.misbehave_requests:
            notes.append(f"{name}, {key}, fresh connections: {len(times)} answered 200 "
                         f"within {seconds} s, other outcomes {other or 'none'}")
        wrk_notes(notes, name, f"{key}.present.32", r)
        slow = [t for t in times if t > MISBEHAVE_P99_TARGET]
        if slow:
            notes.append(f"{name}, {key}, fresh connections: {len(slow)} of {len(times)} over "
                         f"{MISBEHAVE_P99_TARGET * 1e3:.0f} ms, the slowest {max(slow) * 1e3:.0f} ms")

    try:
        time.sleep(0.3)
        results["misbehave.threads.start"] = procs.threads(srv.members())
        phase("misbehave.unloaded")
        with measure.Sampler(srv.pid, counts=True) as sampler:
            with measure.MisbehavingClients(srv.port, path, urls["10M"], **MISBEHAVING) as clients:
                misbehave_notes(notes, name, "once in place", clients.ready)
                time.sleep(min(3, seconds / 3))  # slow readers' buffers fill up
                phase("misbehave.loaded")
        results["misbehave.rss"] = sampler.max_kib
        results["misbehave.threads"] = sampler.max_threads
        results["misbehave.fds"] = sampler.max_fds
        if clients.done:
            misbehave_notes(notes, name, "at the end", clients.done)
            done = clients.done
            per_reader = done["reader_bytes"] / MISBEHAVING["readers"] / done["seconds"]
            notes.append(f"{name}, misbehave: over {done['seconds']:.0f} s, each slow reader got "
                         f"{per_reader / 1024:.0f} KiB/s on average (paced at 64); the "
                         f"misbehaving clients' process used "
                         f"{done['cpu_seconds'] / done['seconds']:.0%} of a core")
        else:
            notes.append(f"{name}, misbehave: the misbehaving clients printed no summary")
    except (measure.MeasureError, OSError) as e:
        notes.append(f"{name}, misbehave: {one_line(e)}")
        log(f"{name}: misbehave: {e}\n{procs.tail(srv.log)}")
    finally:
        srv.stop()
    for what in ("present.32", "p99"):
        loaded = results.get(f"misbehave.loaded.{what}")
        unloaded = results.get(f"misbehave.unloaded.{what}")
        if loaded is not None and unloaded:
            results[f"misbehave.ratio.{what}"] = loaded / unloaded


def misbehave_notes(notes, name, when, summary):
    """What the misbehaving clients saw, when it is not just the load in place:
    connections not (or no longer) in place, closes, statuses other than 200
    on the idle and reading ones, any answer to the slowloris ones, errors."""
    in_place = summary["in_place"]
    want = {"idle": MISBEHAVING["idle"], "slowloris": MISBEHAVING["slowloris"],
            "reader": MISBEHAVING["readers"]}
    said = []
    short = {k: f"{in_place[k]} of {n}" for k, n in want.items() if in_place[k] < n}
    if short:
        said.append("in place " + ", ".join(f"{k} {v}" for k, v in short.items()))
    closed = {k: v for k, v in summary["closed_by_server"].items() if v}
    if closed:
        said.append("closed by the server (and reopened) " + ", ".join(f"{k} {v}" for k, v in closed.items()))
    for kind, statuses in summary["statuses"].items():
        odd = {s: n for s, n in statuses.items() if kind == "slowloris" or s != "200"}
        if odd:
            said.append(f"{kind} statuses {odd}")
    for kind, errors in summary.get("errors", {}).items():
        said.append(f"{kind} errors {errors}")
    if said:
        notes.append(f"{name}, misbehaving clients {when}: " + "; ".join(said))


def warm_first_ask(state, first):
    """Reads what the first-ask figures read from disk into the page cache,
    alike for all: nginx's 32,000 narinfo files and the store's database.
    Otherwise the first server measured would read them from the disk (the
    cold-disk scenario empties the page cache) and the others would not."""
    db = os.path.join(os.environ.get("NIX_STATE_DIR", "/nix/var/nix"), "db/db.sqlite")
    files = [os.path.join(state, "cache", f"{hashpart(p)}.narinfo") for p in first]
    for path in files + [db, db + "-wal"]:
        try:
            with open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
        except FileNotFoundError:
            pass


@contextlib.contextmanager
def new_instance(spec, work, tag, notes, what):
    """A new instance of spec for one scenario, stopped at the end; None, and
    a note, if it did not start."""
    try:
        srv = servers.Running(spec, work, tag=tag)
    except servers.StartError as e:
        notes.append(f"{spec.name}, {what}: did not start: {one_line(e)}")
        yield None
        return
    try:
        yield srv
    finally:
        srv.stop()


def first_ask(spec, work, paths_file, conns, results, notes):
    """load.first.CONNS for one server: a new instance, every path of the
    first-ask list asked once (wrk-once.lua), then stopped; the best round
    counts, as for the other wrk figures."""
    key = f"load.first.{conns}"
    log(f"{key}: {spec.name}")
    with new_instance(spec, work, "-first", notes, key) as srv:
        if srv is None:
            return
        try:
            r = measure.wrk_once(srv.port, paths_file, conns)
        except measure.MeasureError as e:
            notes.append(f"{spec.name}, {key}: {one_line(e)}")
            return
    if r["requests"] != r["sent"]:
        notes.append(f"{spec.name}, {key}: {r['sent']} paths asked, {r['requests']} answers counted")
    wrk_notes(notes, spec.name, key, r)
    rate = r["sent"] / r["seconds"]
    results[key] = max(results.get(key, 0), rate)


def cold_disk(opts, work, paths, spec_of, names, results, notes):
    """The cold-disk scenario for each of `names`, once each: a new instance on
    the slow mounts (on_slow_disk), checked as every server is, then colddisk.run.
    Ours with the local backend only: the daemon backend would need a
    nix-daemon of its own on the chroot store."""
    slow_dir = opts.slow_dir or os.path.join(work, "slow")
    notes.append(f"cold disk: the store and nginx's cache behind a FUSE mirror that sleeps "
                 f"{opts.slow_delay_ms:g} ms before every read (bench/lib/slowfs.py); page cache "
                 f"emptied before each server's turn; {colddisk.STREAMS} clients fetch the 1 GiB NAR "
                 f"once each (capped at {opts.cold_seconds} s) while a fifth asks an "
                 f"already-answered narinfo on a fresh connection every "
                 f"{colddisk.INTERVAL * 1e3:.0f} ms; ours with the local backend only")
    try:
        mounts = colddisk.SlowMounts(opts.state, slow_dir, opts.slow_delay_ms, opts.fusepy)
        with mounts:
            for name in names:
                spec = on_slow_disk(spec_of[name], mounts, work)
                log(f"cold disk: {spec.name}")
                with new_instance(spec, work, "-cold", notes, "cold disk") as srv:
                    if srv is None:
                        continue
                    try:
                        urls = preflight(srv, paths)
                        nar_size = nar_length(srv.port, paths["nar-1G"])
                        times, other, got, seconds = colddisk.run(
                            srv, urls["present"], urls["1G"], nar_size, opts.cold_seconds)
                    except (measure.MeasureError, client.BadResponse, OSError) as e:
                        notes.append(f"{spec.name}, cold disk: {one_line(e)}")
                        continue
                r = results[spec.name]
                r["cold.narinfo.p50"] = measure.percentile(times, 50)
                r["cold.narinfo.p99"] = measure.percentile(times, 99)
                r["cold.narinfo.max"] = max(times) if times else None
                r["cold.nar"] = got / seconds
                if other:
                    notes.append(f"{spec.name}, cold disk: narinfo requests that did not answer 200: "
                                 f"{other}")
                notes.append(f"{spec.name}, cold disk: {len(times)} narinfo answers timed, "
                             f"{got / 2**30:.2f} GiB of NAR in {seconds:.1f} s")
    except (measure.MeasureError, OSError) as e:
        notes.append(f"cold disk: not measured: {one_line(e)}")
        log(f"cold disk: {e}")


def on_slow_disk(spec, mounts, work):
    """The same server on the slow mounts: nginx on the mirror of its cache,
    ours (local backend) and harmonia on the mirror of the chroot store."""
    if isinstance(spec, servers.Nginx):
        return servers.Nginx(spec.name, mounts.cache, work)
    if isinstance(spec, servers.Ours):
        return servers.Ours(spec.name, spec.binary, f"local?root={mounts.root}", spec.key,
                            spec.env, spec.args)
    return servers.Harmonia(spec.name, spec.binary, spec.key, work, root=mounts.root)


def nar_length(port, store_path):
    """NarSize from a server's own narinfo of store_path."""
    status, _, body = client.get(port, f"/{hashpart(store_path)}.narinfo")
    if status != 200:
        raise measure.MeasureError(f"narinfo of {store_path} answered {status}")
    return int(narinfo_fields(body)["NarSize"])


def narinfo_fields(body):
    return dict(line.split(": ", 1) for line in body.decode().splitlines() if ": " in line)


def move_unsigned(results, name):
    """The unsigned run shows as extra rows in the local column."""
    for key, value in results.pop(name, {}).items():
        if key in ("seq.present.p50", "load.present.256"):
            results.setdefault("local", {})[key + ".unsigned"] = value


def preflight(srv, paths):
    """Checks the server answers right before timing it, and finds the NAR
    URLs in its own narinfos (nginx's point at nar/<filehash>.nar, ours at
    nar/<hash>-<narhash>.nar)."""
    name, port = srv.spec.name, srv.port
    urls = {"present": f"/{hashpart(paths['corpus-0000'])}.narinfo",
            "absent": f"/{paths['absent'][0]}.narinfo"}
    status, _, body = client.get(port, urls["present"])
    if status != 200:
        raise measure.MeasureError(f"{urls['present']} answered {status}")
    if srv.spec.signs and b"\nSig: " not in body:
        raise measure.MeasureError(f"signing is on, but {urls['present']} has no Sig: line")
    status, _, _ = client.get(port, urls["absent"])
    if status != 404:
        raise measure.MeasureError(f"{urls['absent']} answered {status}, not 404")
    for role, scenario in (("empty", "empty"), ("nar-10M", "10M"), ("nar-1G", "1G")):
        status, _, body = client.get(port, f"/{hashpart(paths[role])}.narinfo")
        if status != 200:
            raise measure.MeasureError(f"narinfo of {paths[role]} answered {status}")
        fields = narinfo_fields(body)
        url, size = "/" + fields["URL"], int(fields["NarSize"])
        urls[scenario] = url
        if scenario == "1G":
            status, headers = client.get_head(port, url)
            length = headers.get("content-length")
            if status != 200 or (length is not None and int(length) != size):
                raise measure.MeasureError(f"{url}: status {status}, length {length}, NarSize {size}")
        else:
            status, _, nar = client.get(port, url)
            if status != 200 or len(nar) != size:
                raise measure.MeasureError(f"{url}: status {status}, {len(nar)} bytes, NarSize {size}")
    return urls


def load_paths(state):
    paths = {}
    with open(os.path.join(state, "paths.tsv")) as f:
        for line in f:
            role, path = line.rstrip("\n").split("\t")
            paths[role] = path
    with open(os.path.join(state, "absent.txt")) as f:
        paths["absent"] = f.read().split()
    with open(os.path.join(state, "first.txt")) as f:
        paths["first"] = f.read().split()
    return paths


def write_path_lists(work, paths):
    present = [f"/{hashpart(p)}.narinfo" for r, p in sorted(paths.items()) if r.startswith("corpus-")]
    absent = [f"/{h}.narinfo" for h in paths["absent"]]
    mixed = [p for pair in zip(present, absent) for p in pair]  # strictly alternating
    first = [f"/{hashpart(p)}.narinfo" for p in paths["first"]]
    out = {}
    for name, lines in (("present", present), ("mixed", mixed), ("first", first)):
        out[name] = os.path.join(work, f"{name}.txt")
        with open(out[name], "w") as f:
            f.write("\n".join(lines) + "\n")
    return out


def hashpart(store_path):
    return os.path.basename(store_path)[:32]


def report(opts, results, notes, ours_names, peer_names, idle, first_count):
    ctx = {"idle": idle, "trials": opts.trials, "warm": opts.trials * measure.WARM_PER_TRIAL,
           "first": f"{first_count:,}", "delay": f"{opts.slow_delay_ms:g}"}
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rev = subprocess.run(["git", "-C", os.path.dirname(__file__), "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    lines = [f"nix-serve-sd benchmark, {now}, tree {rev or '?'}", "",
             f"Machine: {cpu_model()}, {os.cpu_count()} cores, {mem_gib():.0f} GiB RAM, "
             f"Linux {platform.release()}; load average at the end {os.getloadavg()[0]:.2f}. "
             f"Ours signs (test key) unless marked unsigned; daemon = through a nix-daemon. "
             f"÷ nginx = ours / nginx as measured (for req/s and MB/s higher is better, "
             f"for the rest lower)."
             + (f" harmonia = {opts.harmonia} on the same store and key (its defaults "
                f"otherwise); ÷ best peer = ours / the better of nginx and harmonia, as "
                f"measured (target for req/s and MB/s: ≥ 1.00)." if peer_names else ""), "",
             figures.table(results, "nginx", ours_names, ctx, peer_names)]
    comparisons = [(["nginx"], "nginx")]
    if peer_names:
        comparisons.append((["nginx", *peer_names], "the better of nginx and " + ", ".join(peer_names)))
    for peers, what in comparisons:
        w = figures.worst(results, peers, ours_names)
        if w and w[0] > 1:
            s, key, name = w
            label = next(lbl for k, lbl, _, _ in figures.FIGURES if k == key)
            lines += ["", f"Furthest behind {what} (medians and throughput): "
                          f"{label.format(**ctx)} ({name}), {s:.2f}× worse."]
        elif w:
            lines += ["", f"Behind {what} in no median or throughput figure."]
    if opts.only:
        lines += ["", f"Only the figures {opts.only} (and the RSS after start) were run."]
    if not opts.binary:
        lines += ["", "DRY RUN: no binary given, every column is nginx."]
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(opts.out), exist_ok=True)
    with open(opts.out, "w") as f:
        f.write(text)
    print(text)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def mem_gib():
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) / (1 << 20)


def one_line(e):
    return " ".join(str(e).split())[:300]


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
