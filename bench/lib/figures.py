"""The figures the table reports, in order, and how each prints. Values are
stored in base units (seconds, bytes/s, requests/s, KiB, counts)."""

# key, label, unit, scale from the stored value to the unit
FIGURES = [
    ("seq.present.p50", "present narinfo, 1 conn sequential: median", "µs", 1e6),
    ("seq.present.p99", "present narinfo, 1 conn sequential: p99", "µs", 1e6),
    ("seq.absent.p50", "absent narinfo, 1 conn sequential: median", "µs", 1e6),
    ("seq.absent.p99", "absent narinfo, 1 conn sequential: p99", "µs", 1e6),
    ("seq.empty.p50", "empty NAR, 1 conn sequential: median", "µs", 1e6),
    ("seq.empty.p99", "empty NAR, 1 conn sequential: p99", "µs", 1e6),
    ("seq.10M.p50", "10 MiB NAR, 1 conn sequential: median", "ms", 1e3),
    ("seq.10M.p99", "10 MiB NAR, 1 conn sequential: p99", "ms", 1e3),
    ("load.present.32", "narinfo, 1,000 paths, 32 conns", "req/s", 1),
    ("load.present.256", "narinfo, 1,000 paths, 256 conns", "req/s", 1),
    ("load.mixed.32", "narinfo, 50 % absent, 32 conns", "req/s", 1),
    ("load.mixed.256", "narinfo, 50 % absent, 256 conns", "req/s", 1),
    ("load.first.32", "narinfo asked the first time, {first} paths once each, new server, 32 conns", "req/s", 1),
    ("load.first.256", "narinfo asked the first time, {first} paths once each, new server, 256 conns", "req/s", 1),
    ("load.10M.1", "10 MiB NAR, 1 conn", "MB/s", 1e-6),
    ("load.10M.4", "10 MiB NAR, 4 conns", "MB/s", 1e-6),
    ("load.10M.16", "10 MiB NAR, 16 conns", "MB/s", 1e-6),
    ("load.10M.32", "10 MiB NAR, 32 conns", "MB/s", 1e-6),
    ("load.10M.256", "10 MiB NAR, 256 conns", "MB/s", 1e-6),
    ("load.1G.32", "1 GiB NAR, 32 conns", "MB/s", 1e-6),
    ("load.1G.256", "1 GiB NAR, 256 conns", "MB/s", 1e-6),
    ("start.cold", "cold start (socket activation) to narinfo: median of {trials}", "ms", 1e3),
    ("start.warm", "same request once warm, new conn: median of {warm}", "ms", 1e3),
    ("mem.start", "RSS after start", "MiB", 1 / 1024),
    ("mem.peak256", "RSS peak under 256 conns", "MiB", 1 / 1024),
    ("mem.slow.max", "RSS streaming 1 GiB to a slow reader: max", "MiB", 1 / 1024),
    ("mem.slow.growth", "RSS streaming 1 GiB to a slow reader: growth", "MiB", 1 / 1024),
    ("idle.exit", "exit after last response (idle timeout {idle})", "s", 1),
    ("idle.procs", "processes after the idle timeout", "", 1),
    ("idle.rss", "RSS after the idle timeout", "MiB", 1 / 1024),
    # The misbehave scenario (a new instance of each server; ours with
    # --keepalive-timeout 60): unloaded, then with 1,000 idle keep-alive
    # connections, 500 slowloris ones and 64 slow NAR readers held open.
    ("misbehave.unloaded.p50", "misbehave scenario, unloaded: fresh-conn narinfo, median", "ms", 1e3),
    ("misbehave.unloaded.p99", "misbehave scenario, unloaded: fresh-conn narinfo, p99", "ms", 1e3),
    ("misbehave.loaded.p50", "with misbehaving clients: fresh-conn narinfo, median", "ms", 1e3),
    ("misbehave.loaded.p99", "with misbehaving clients: fresh-conn narinfo, p99 (target ≤ 20)", "ms", 1e3),
    ("misbehave.ratio.p99", "fresh-conn narinfo p99, loaded ÷ unloaded", "×", 1),
    ("misbehave.unloaded.present.32", "misbehave scenario, unloaded: narinfo, 32 conns", "req/s", 1),
    ("misbehave.loaded.present.32", "with misbehaving clients: narinfo, 32 conns", "req/s", 1),
    ("misbehave.ratio.present.32", "narinfo, 32 conns, loaded ÷ unloaded (target ≥ 0.7)", "×", 1),
    ("misbehave.threads.start", "misbehave scenario, unloaded: threads", "", 1),
    ("misbehave.threads", "with misbehaving clients: threads, peak", "", 1),
    ("misbehave.fds", "with misbehaving clients: open descriptors, peak", "", 1),
    ("misbehave.rss", "with misbehaving clients: RSS peak (target ≤ 64)", "MiB", 1 / 1024),
    # Cold disk (ours: local backend only): the store behind a FUSE mirror
    # whose every read sleeps, the page cache emptied first; 4 clients fetch
    # the 1 GiB NAR once each while a fifth asks a narinfo every 10 ms.
    ("cold.narinfo.p50", "cold disk ({delay} ms a read), 4 streams of the 1 GiB NAR: fresh-conn narinfo, median", "ms", 1e3),
    ("cold.narinfo.p99", "cold disk, the same: fresh-conn narinfo, p99 (target ≤ 5)", "ms", 1e3),
    ("cold.narinfo.max", "cold disk, the same: fresh-conn narinfo, max", "ms", 1e3),
    ("cold.nar", "cold disk: 1 GiB NAR, 4 streams, each once (target ≥ nginx)", "MB/s", 1e-6),
    # Signing costs: our local backend without a key, against the same nginx.
    ("seq.present.p50.unsigned", "present narinfo, unsigned: median", "µs", 1e6),
    ("load.present.256.unsigned", "narinfo, 1,000 paths, 256 conns, unsigned", "req/s", 1),
]

# Figures where more is better; for all others less is better.
HIGHER_IS_BETTER = {k for k, _, unit, _ in FIGURES if unit in ("req/s", "MB/s")}


def fmt(value, scale):
    if value is None:
        return "—"
    v = value * scale
    if v == int(v) and abs(v) < 1e6:
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def slowdown(key, ours, nginx):
    """How many times worse than nginx (>1 worse, <1 better); None if undefined."""
    if ours is None or nginx is None or ours == 0 or nginx == 0:
        return None
    return nginx / ours if key in HIGHER_IS_BETTER else ours / nginx


# Rows that say how fast: the "÷ best peer" column is given for these only.
SPEED = ("seq.", "load.", "cold.", "start.")


def table(results, nginx_name, ours_names, ctx, peer_names=()):
    """results: name -> key -> value; ctx fills the labels' {placeholders}.
    Columns: nginx, then ours and the peers (harmonia), each with its ratio
    to nginx as measured; with peers, a last column of ours ÷ the better of
    nginx and the peers (speed rows only)."""
    shown_names = list(ours_names) + list(peer_names)
    head = ["figure", "unit", nginx_name]
    for name in shown_names:
        head += [name, "÷ nginx"]
    if peer_names:
        head.append(f"÷ best peer ({' / '.join(ours_names)})")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, unit, scale in FIGURES:
        base = key.removesuffix(".unsigned")
        nginx = results[nginx_name].get(base)
        row = [label.format(**ctx), unit, fmt(nginx, scale)]
        shown = False
        for name in shown_names:
            value = results.get(name, {}).get(key)
            shown |= value is not None
            ratio = None if value is None or not nginx else value / nginx
            row += [fmt(value, scale), "—" if ratio is None else f"{ratio:.2f}"]
        if peer_names:
            row.append(best_peer_ratios(results, key, [nginx_name, *peer_names], ours_names))
        if shown or (key == base and nginx is not None):
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def best_peer(results, key, peer_names):
    """The better of the peers' values for key (None if none has one)."""
    base = key.removesuffix(".unsigned")
    values = [results.get(p, {}).get(base) for p in peer_names]
    values = [v for v in values if v is not None]
    if not values:
        return None
    return max(values) if base in HIGHER_IS_BETTER else min(values)


def best_peer_ratios(results, key, peer_names, ours_names):
    """Each of ours ÷ the best peer, as measured, joined by " / "; "" for the
    rows that do not say how fast, and for the unsigned ones (the peers sign)."""
    if not key.startswith(SPEED) or key.endswith(".unsigned"):
        return ""
    best = best_peer(results, key, peer_names)
    ratios = []
    for name in ours_names:
        ours = results.get(name, {}).get(key)
        ratios.append("—" if ours is None or not best else f"{ours / best:.2f}")
    return " / ".join(ratios)


def worst(results, peer_names, ours_names):
    """(slowdown, key, name) of the figure where ours is furthest behind the
    better of peer_names (nginx alone, or nginx and harmonia)."""
    found = []
    for key, _, _, _ in FIGURES:
        if key.startswith(("idle.", "mem.", "misbehave.ratio", "misbehave.threads",
                           "misbehave.fds", "misbehave.rss")) or ".p99" in key or key.endswith(".max"):
            continue  # nginx does not idle out; memory and counts are not speed; p99 and max are noisy
        base = key.removesuffix(".unsigned")
        best = best_peer(results, key, peer_names)
        for name in ours_names:
            s = slowdown(base, results.get(name, {}).get(key), best)
            if s is not None:
                found.append((s, key, name))
    return max(found) if found else None
