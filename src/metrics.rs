//! What the server counts, in the Prometheus text exposition format, and the
//! `--metrics-file` that carries the counts from one process to the next.
//!
//! A socket-activated server exits when idle, so its counters would restart
//! at every activation. Instead each process starts from the values in the
//! file the previous one left (README "Operating it"): the counters keep
//! rising, and only deleting the file resets them. The file is ours alone:
//! it starts with [`MARKER`], and anything else found there (corrupt,
//! foreign) is replaced, never a reason to refuse to start.
//!
//! One lock for everything: most updates come from the event-loop thread,
//! the rest (store look-up latency, store connections) from the workers,
//! and each holds it for a few map operations.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The first line of every file we write; Prometheus reads it as a comment.
pub const MARKER: &str = "# nix-serve-sd metrics 1";
/// The last line: a file cut short (a full disk) is not taken for whole.
const END: &str = "# end of nix-serve-sd metrics\n";
/// `Content-Type` of the exposition format (`GET /metrics`).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Store look-up latency buckets, in seconds: a narinfo from SQLite takes
/// well under a millisecond, one through a busy daemon tens of them.
const LOOKUP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// NAR stream duration buckets, in seconds: from a small file on loopback
/// to a large closure over a slow link.
const NAR_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

const REQUESTS: &str = "nix_serve_requests_total";
const SENT: &str = "nix_serve_sent_bytes_total";
const LOOKUP: &str = "nix_serve_store_lookup_seconds";
const NAR_STREAM: &str = "nix_serve_nar_stream_seconds";
const ACCEPTED: &str = "nix_serve_connections_accepted_total";
const REFUSED: &str = "nix_serve_connections_refused_total";
const ACTIVATIONS: &str = "nix_serve_activations_total";
const IDLE_EXITS: &str = "nix_serve_idle_exits_total";
const STORE_OPENS: &str = "nix_serve_store_connections_opened_total";
const UPSTREAM_REQUESTS: &str = "nix_serve_upstream_requests_total";
const UPSTREAM_FETCHED: &str = "nix_serve_upstream_fetched_bytes_total";
const UPSTREAM_IMPORTS: &str = "nix_serve_upstream_imports_total";

/// Why the values in a metrics file were not carried over.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read it: {0}")]
    Read(#[source] io::Error),
    #[error("it was not written by nix-serve-sd (no {MARKER:?} first line)")]
    Foreign,
    #[error("line {line} is corrupt: {why}")]
    Corrupt { line: usize, why: &'static str },
}

/// A histogram with fixed buckets: per-bucket counts (the last one is
/// `+Inf`), exposed cumulatively.
#[derive(Clone, Debug, PartialEq)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        let i = self.bounds.partition_point(|&b| b < seconds);
        self.counts[i] += 1;
        self.sum += seconds;
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

type RouteKey = Cow<'static, str>;

#[derive(Clone, Debug, PartialEq)]
struct Values {
    requests: BTreeMap<(RouteKey, u16), u64>,
    sent: BTreeMap<RouteKey, u64>,
    lookup: Histogram,
    nar_stream: Histogram,
    accepted: u64,
    refused: u64,
    activations: u64,
    idle_exits: u64,
    store_opens: u64,
    upstream: Upstream,
}

/// Pull-through's counts (`--upstream`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upstream {
    /// Requests to upstream caches, by kind (`narinfo`, `nar`) and result.
    pub requests: BTreeMap<(RouteKey, RouteKey), u64>,
    /// Bytes read from upstream caches, as sent (compressed).
    pub fetched_bytes: u64,
    /// Imports into the store, by result.
    pub imports: BTreeMap<RouteKey, u64>,
}

impl Upstream {
    fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.fetched_bytes == 0 && self.imports.is_empty()
    }

    /// Requests of `kind` that ended with `result`.
    #[cfg(any(test, feature = "testing"))]
    pub fn request(&self, kind: &str, result: &str) -> u64 {
        let key = (Cow::Owned(kind.to_owned()), Cow::Owned(result.to_owned()));
        self.requests.get(&key).copied().unwrap_or(0)
    }

    /// Imports that ended with `result`.
    #[cfg(any(test, feature = "testing"))]
    pub fn import(&self, result: &str) -> u64 {
        self.imports.get(result).copied().unwrap_or(0)
    }
}

impl Default for Values {
    fn default() -> Self {
        Values {
            requests: BTreeMap::new(),
            sent: BTreeMap::new(),
            lookup: Histogram::new(LOOKUP_BUCKETS),
            nar_stream: Histogram::new(NAR_BUCKETS),
            accepted: 0,
            refused: 0,
            activations: 0,
            idle_exits: 0,
            store_opens: 0,
            upstream: Upstream::default(),
        }
    }
}

#[derive(Default)]
struct State {
    values: Values,
    /// This process alone, for the line logged at exit.
    run_requests: u64,
    run_sent: u64,
    /// `--upstream` is on: its families are shown even at zero. Without
    /// it they are left out unless a file carried counts over, so a server
    /// without upstreams writes what it always wrote.
    upstream_on: bool,
}

/// The registry. Shared as `Arc<Metrics>` by the event loop, the workers
/// and the main thread.
pub struct Metrics {
    started: Instant,
    state: Mutex<State>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::from_values(Values::default())
    }
}

/// What this process did, for its exit line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunSummary {
    pub requests: u64,
    pub bytes: u64,
    pub alive: Duration,
}

impl Metrics {
    fn from_values(values: Values) -> Metrics {
        Metrics {
            started: Instant::now(),
            state: Mutex::new(State {
                values,
                ..State::default()
            }),
        }
    }

    /// Starts from the values in the file at `path`; from zero when there
    /// is none. The error says why a file that exists was not used: it is
    /// then replaced at the next write.
    pub fn resume(path: &Path) -> (Metrics, Option<LoadError>) {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (Metrics::default(), None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return (
                    Metrics::default(),
                    Some(LoadError::Corrupt {
                        line: 0,
                        why: "not UTF-8",
                    }),
                )
            }
            Err(e) => return (Metrics::default(), Some(LoadError::Read(e))),
        };
        match parse(&text) {
            Ok(v) => (Metrics::from_values(v), None),
            Err(e) => (Metrics::default(), Some(e)),
        }
    }

    fn with(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// A reply finished (or was cut): `bytes` written for it, head
    /// included; `nar_stream` how long a NAR body took to send.
    pub fn reply(
        &self,
        route: &'static str,
        status: u16,
        bytes: u64,
        nar_stream: Option<Duration>,
    ) {
        self.with(|s| {
            let v = &mut s.values;
            match v.requests.get_mut(&(Cow::Borrowed(route), status)) {
                Some(n) => *n += 1,
                None => {
                    v.requests.insert((Cow::Borrowed(route), status), 1);
                }
            }
            *v.sent.entry(Cow::Borrowed(route)).or_default() += bytes;
            // The histogram is of NARs: the engine times every whole body.
            if let Some(d) = nar_stream.filter(|_| route == "nar") {
                v.nar_stream.observe(d.as_secs_f64());
            }
            s.run_requests += 1;
            s.run_sent += bytes;
        });
    }

    /// How long a worker took to answer a request from the store.
    pub fn store_lookup(&self, took: Duration) {
        self.with(|s| s.values.lookup.observe(took.as_secs_f64()));
    }

    pub fn connection_accepted(&self) {
        self.with(|s| s.values.accepted += 1);
    }

    pub fn connection_refused(&self) {
        self.with(|s| s.values.refused += 1);
    }

    /// This process started.
    pub fn activation(&self) {
        self.with(|s| s.values.activations += 1);
    }

    pub fn idle_exit(&self) {
        self.with(|s| s.values.idle_exits += 1);
    }

    pub fn store_connection_opened(&self) {
        self.with(|s| s.values.store_opens += 1);
    }

    /// Pull-through is configured: show its families from the start.
    pub fn upstream_on(&self) {
        self.with(|s| s.upstream_on = true);
    }

    /// A request to an upstream cache of `kind` (`narinfo`, `nar`) ended
    /// with `result`.
    pub fn upstream_request(&self, kind: &'static str, result: &'static str) {
        self.with(|s| {
            *s.values
                .upstream
                .requests
                .entry((Cow::Borrowed(kind), Cow::Borrowed(result)))
                .or_default() += 1
        });
    }

    /// `n` bytes read from an upstream cache.
    pub fn upstream_fetched(&self, n: u64) {
        self.with(|s| s.values.upstream.fetched_bytes += n);
    }

    /// An import of a path fetched upstream ended with `result`.
    pub fn upstream_import(&self, result: &'static str) {
        self.with(|s| {
            *s.values
                .upstream
                .imports
                .entry(Cow::Borrowed(result))
                .or_default() += 1
        });
    }

    /// Pull-through's counts now.
    #[cfg(any(test, feature = "testing"))]
    pub fn upstream(&self) -> Upstream {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.values.upstream.clone()
    }

    pub fn run_summary(&self) -> RunSummary {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        RunSummary {
            requests: s.run_requests,
            bytes: s.run_sent,
            alive: self.started.elapsed(),
        }
    }

    /// The Prometheus text exposition format, [`MARKER`] first.
    pub fn render(&self) -> String {
        let (values, upstream_on) = {
            let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            (s.values.clone(), s.upstream_on)
        };
        render(&values, upstream_on)
    }

    /// Writes [`Metrics::render`] to `path` atomically: a reader (the
    /// textfile collector) sees the old file or the new one, never a part.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let text = self.render();
        let tmp = temp_path(path);
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            // For the collector, whatever the service's UMask=: counts are
            // not secrets.
            f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            f.write_all(text.as_bytes())?;
            // On disk before it takes the name: a crash right after the
            // rename must not leave an empty file there.
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

/// `--metrics-file`: where, how often, and whether the last write failed
/// (one warning per run of failures, not one every interval).
pub struct MetricsFile {
    path: PathBuf,
    every: Duration,
    next: Instant,
    failing: bool,
}

impl MetricsFile {
    pub fn new(path: PathBuf, every: Duration) -> MetricsFile {
        MetricsFile {
            path,
            every,
            next: Instant::now() + every,
            failing: false,
        }
    }

    /// The registry, starting from the file's values. A file that cannot
    /// be used costs one warning and is replaced at the first write.
    pub fn resume(&self) -> Metrics {
        let (metrics, error) = Metrics::resume(&self.path);
        if let Some(e) = error {
            crate::log::warn(&format!(
                "--metrics-file {}: {e}; it will be replaced and the counts start from zero",
                self.path.display()
            ));
        }
        metrics
    }

    /// Writes when the interval is up.
    pub fn tick(&mut self, metrics: &Metrics, now: Instant) {
        if now >= self.next {
            self.write(metrics);
            self.next = now + self.every;
        }
    }

    pub fn write(&mut self, metrics: &Metrics) {
        match metrics.save(&self.path) {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                crate::log::warn(&format!(
                    "cannot write --metrics-file {}: {e}",
                    self.path.display()
                ));
                self.failing = true;
            }
            Err(_) => {}
        }
    }
}

/// `.NAME.PID.tmp` beside `path`: the same file system, so the rename is
/// atomic, and a name the textfile collector (`*.prom`) never reads.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "metrics".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

mod text;
use text::{parse, render};

#[cfg(test)]
mod tests;
