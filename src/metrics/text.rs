//! The Prometheus text exposition format of [`super::Metrics`]: rendering
//! the values, and reading back a file this module wrote (anything else is
//! a [`LoadError`], never a guess).

use super::*;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    family(out, name, "histogram", help);
    let mut cumulative = 0;
    for (i, n) in h.counts.iter().enumerate() {
        cumulative += n;
        match h.bounds.get(i) {
            Some(b) => {
                let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let _ = writeln!(out, "{name}_sum {}", h.sum);
    let _ = writeln!(out, "{name}_count {}", h.count());
}

/// `upstream_on`: show pull-through's families even when nothing was
/// counted (`Metrics::upstream_on`).
pub(super) fn render(v: &Values, upstream_on: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{MARKER}: counters start from this file's values at each start; delete it to reset them"
    );
    family(
        &mut out,
        REQUESTS,
        "counter",
        "Requests answered, by route and status.",
    );
    for ((route, status), n) in &v.requests {
        let _ = writeln!(
            out,
            "{REQUESTS}{{route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    family(
        &mut out,
        SENT,
        "counter",
        "Bytes written to clients, response heads included, by route.",
    );
    for (route, n) in &v.sent {
        let _ = writeln!(out, "{SENT}{{route=\"{route}\"}} {n}");
    }
    histogram(
        &mut out,
        LOOKUP,
        "Time a store worker took to answer a request from the store.",
        &v.lookup,
    );
    histogram(
        &mut out,
        NAR_STREAM,
        "Time from the first to the last byte of a NAR reply.",
        &v.nar_stream,
    );
    counter(
        &mut out,
        ACCEPTED,
        "Client connections accepted.",
        v.accepted,
    );
    counter(
        &mut out,
        REFUSED,
        "Client connections refused (503) at the connection limit.",
        v.refused,
    );
    counter(&mut out, ACTIVATIONS, "Process starts.", v.activations);
    counter(
        &mut out,
        IDLE_EXITS,
        "Exits after --idle-timeout without a connection.",
        v.idle_exits,
    );
    counter(
        &mut out,
        STORE_OPENS,
        "Store connections opened: one per worker, then one per reconnect.",
        v.store_opens,
    );
    if upstream_on || !v.upstream.is_empty() {
        render_upstream(&mut out, &v.upstream);
    }
    out.push_str(END);
    out
}

fn render_upstream(out: &mut String, u: &Upstream) {
    family(
        out,
        UPSTREAM_REQUESTS,
        "counter",
        "Requests to upstream caches, by kind (narinfo, nar) and result.",
    );
    for ((kind, result), n) in &u.requests {
        let _ = writeln!(
            out,
            "{UPSTREAM_REQUESTS}{{kind=\"{kind}\",result=\"{result}\"}} {n}"
        );
    }
    counter(
        out,
        UPSTREAM_FETCHED,
        "Bytes read from upstream caches, as sent (compressed).",
        u.fetched_bytes,
    );
    family(
        out,
        UPSTREAM_IMPORTS,
        "counter",
        "Paths fetched upstream, by how their import into the store ended.",
    );
    for (result, n) in &u.imports {
        let _ = writeln!(out, "{UPSTREAM_IMPORTS}{{result=\"{result}\"}} {n}");
    }
}

/// One sample line: name, labels in order, value text.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, &'a str)>,
    value: &'a str,
}

fn sample(line: &str) -> Result<Sample<'_>, &'static str> {
    let name_end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let close = inner.find('}').ok_or("an unclosed label set")?;
        let body = &inner[..close];
        rest = &inner[close + 1..];
        for pair in body.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or("a label without a value")?;
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or("an unquoted label value")?;
            if v.contains(['"', '\\']) {
                return Err("an escaped label value");
            }
            labels.push((k, v));
        }
    }
    let value = rest.strip_prefix(' ').ok_or("a sample without a value")?;
    if value.is_empty() || value.contains(' ') {
        return Err("a value that is not one number");
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

fn int(text: &str) -> Result<u64, &'static str> {
    text.parse()
        .map_err(|_| "a count that is not a whole number")
}

/// A histogram as read: cumulative bucket counts, sum, count.
type ReadHistogram = (Vec<u64>, Option<f64>, Option<u64>);

/// Reads back a file [`render`] wrote. Anything else is an error: the
/// values of a file we cannot read as ours are not carried over.
pub(super) fn parse(text: &str) -> Result<Values, LoadError> {
    if !text.starts_with(MARKER) {
        return Err(LoadError::Foreign);
    }
    if !text.ends_with(END) {
        return Err(LoadError::Corrupt {
            line: text.lines().count(),
            why: "cut short (no end line)",
        });
    }
    let mut v = Values::default();
    // Cumulative bucket counts as read, with the sum and count, per histogram.
    let mut buckets: BTreeMap<&str, ReadHistogram> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let corrupt = |why| LoadError::Corrupt { line: i + 1, why };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let s = sample(line).map_err(corrupt)?;
        let label = |k: &str| {
            s.labels
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| *v)
                .ok_or(corrupt("a label missing"))
        };
        let route = |r: &str| -> RouteKey { Cow::Owned(r.to_owned()) };
        match s.name {
            REQUESTS => {
                let status = label("status")?
                    .parse()
                    .map_err(|_| corrupt("a status that is not a number"))?;
                let key = (route(label("route")?), status);
                v.requests.insert(key, int(s.value).map_err(corrupt)?);
            }
            SENT => {
                v.sent
                    .insert(route(label("route")?), int(s.value).map_err(corrupt)?);
            }
            ACCEPTED => v.accepted = int(s.value).map_err(corrupt)?,
            REFUSED => v.refused = int(s.value).map_err(corrupt)?,
            ACTIVATIONS => v.activations = int(s.value).map_err(corrupt)?,
            IDLE_EXITS => v.idle_exits = int(s.value).map_err(corrupt)?,
            STORE_OPENS => v.store_opens = int(s.value).map_err(corrupt)?,
            UPSTREAM_REQUESTS => {
                let key = (route(label("kind")?), route(label("result")?));
                v.upstream
                    .requests
                    .insert(key, int(s.value).map_err(corrupt)?);
            }
            UPSTREAM_FETCHED => v.upstream.fetched_bytes = int(s.value).map_err(corrupt)?,
            UPSTREAM_IMPORTS => {
                v.upstream
                    .imports
                    .insert(route(label("result")?), int(s.value).map_err(corrupt)?);
            }
            name => {
                let (base, part) = [LOOKUP, NAR_STREAM]
                    .iter()
                    .find_map(|h| name.strip_prefix(h).map(|p| (*h, p)))
                    .ok_or(corrupt("an unknown metric"))?;
                let hist = if base == LOOKUP {
                    &v.lookup
                } else {
                    &v.nar_stream
                };
                let entry = buckets.entry(base).or_default();
                match part {
                    "_bucket" => {
                        let le = label("le")?;
                        let want = hist.bounds.get(entry.0.len()).map(f64::to_string);
                        let expected = want.as_deref().unwrap_or("+Inf");
                        if entry.0.len() > hist.bounds.len() || le != expected {
                            return Err(corrupt("histogram buckets other than ours"));
                        }
                        entry.0.push(int(s.value).map_err(corrupt)?);
                    }
                    "_sum" => {
                        let sum = s
                            .value
                            .parse()
                            .map_err(|_| corrupt("a sum that is not a number"))?;
                        entry.1 = Some(sum);
                    }
                    "_count" => entry.2 = Some(int(s.value).map_err(corrupt)?),
                    _ => return Err(corrupt("an unknown metric")),
                }
            }
        }
    }
    for (base, (cumulative, sum, count)) in buckets {
        let hist = if base == LOOKUP {
            &mut v.lookup
        } else {
            &mut v.nar_stream
        };
        let at_end = LoadError::Corrupt {
            line: text.lines().count(),
            why: "an incomplete histogram",
        };
        let (Some(sum), Some(count)) = (sum, count) else {
            return Err(at_end);
        };
        if cumulative.len() != hist.counts.len()
            || cumulative.windows(2).any(|w| w[0] > w[1])
            || cumulative.last() != Some(&count)
            || !(sum >= 0.0 && sum.is_finite())
        {
            return Err(at_end);
        }
        let mut before = 0;
        for (slot, c) in hist.counts.iter_mut().zip(cumulative) {
            *slot = c - before;
            before = c;
        }
        hist.sum = sum;
    }
    Ok(v)
}
