//! Pull-through from upstream caches (issue 22): what this store
//! lacks is fetched from the caches once, served while it arrives, and
//! added to the store through the nix-daemon.
//!
//! One [`Upstream`], shared by every worker (it is cheap to clone):
//! - [`Upstream::narinfo`] asks the caches in order (`narinfo.rs`: what we
//!   serve for such a path, what is remembered and how long);
//! - [`Upstream::nar`] gives a reader of the path's NAR from byte 0, all
//!   requests for one path sharing one download (`download.rs`), which also
//!   feeds its import (`import.rs`);
//! - [`Upstream::busy`] and [`Upstream::wait_idle`] let the idle exit and
//!   the drain wait for downloads and imports in flight.
//!
//! The HTTP client and its time-outs are in `client.rs`, decompression in
//! `decompress.rs`.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::log;
use crate::metrics::Metrics;
use crate::nix::hash::Sha256;
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{HashPart, StoreDir};

pub mod client;
pub mod decompress;
pub mod download;
pub mod import;
pub mod narinfo;

pub use client::{CacheUrl, ClientError};
pub use download::{NarReader, Outcome};
pub use import::{ImportTarget, Imported};
pub use narinfo::{Found, Lookup};

/// Downloads at once, by default: a `nix copy` of a large closure asks for
/// several NARs at a time, and a refused one is a 503 it retries only a few
/// times; each download costs two threads (three while it imports), a
/// connection upstream and its NAR's size in `temp_dir`.
pub const DEFAULT_MAX_DOWNLOADS: usize = 16;
/// The largest NAR imported, by default (bytes); larger ones are served
/// but not added to the store.
pub const DEFAULT_MAX_IMPORT: u64 = 8 << 30;

/// How pull-through is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Tried in this order.
    pub caches: Vec<CacheUrl>,
    pub store_dir: StoreDir,
    /// For https upstreams ([`client::ca_bundle`]).
    pub ca_bundle: Option<PathBuf>,
    /// Downloads at once; a new one past it is refused ([`UpstreamError::Busy`]).
    pub max_downloads: usize,
    /// Largest NAR to import; larger ones are served only.
    pub max_import: u64,
    /// Where downloads keep their NAR (unlinked files).
    pub temp_dir: PathBuf,
    /// Where to import; `None`: serve only.
    pub import: Option<ImportTarget>,
    /// Where each download takes the memory it holds; `None`: nowhere.
    pub budget: Option<Budget>,
}

/// The memory budget downloads take from before they start (the server's
/// budget of heavy replies): their decoder's window and their buffers,
/// given back when the download ends. `None` from it: no room now.
#[derive(Clone)]
pub struct Budget(Arc<dyn Fn(u64) -> Option<Box<dyn Send>> + Send + Sync>);

impl Budget {
    pub fn new(take: impl Fn(u64) -> Option<Box<dyn Send>> + Send + Sync + 'static) -> Self {
        Budget(Arc::new(take))
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Budget")
    }
}

/// Why an upstream NAR cannot be served now.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No upstream has the path: 404.
    #[error("no upstream has it")]
    Absent,
    /// The NAR hash asked for is not the one the upstream has now: 404,
    /// as for a local path recreated since.
    #[error("the upstream has another NAR for this path")]
    OtherNar,
    /// No upstream has it and one did not answer: 5xx, never a 404.
    #[error("no upstream answered: {0}")]
    Failed(Arc<str>),
    /// Too many downloads at once: 503.
    #[error("{0} upstream downloads are under way, the most allowed")]
    Busy(usize),
    /// No room in the memory budget for another download now: 503.
    #[error("the memory budget has no room for another download now")]
    NoMemory,
    /// The temporary file could not be made: 500 (a fault of this
    /// machine's, logged; `--upstream-temp-dir` is checked at start-up).
    #[error("{0}")]
    TempFile(#[source] std::io::Error),
}

struct Inner {
    config: Config,
    client: client::Client,
    narinfos: narinfo::Narinfos,
    /// Downloads (and their imports) in flight, by hash part.
    downloads: Mutex<HashMap<HashPart, Arc<download::Download>>>,
    metrics: Arc<Metrics>,
}

/// Pull-through, shared.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("caches", &self.inner.config.caches)
            .finish()
    }
}

/// A NAR being served from upstream.
pub struct UpstreamNar {
    /// What the upstream's narinfo says (`nar_size` is the reply's length).
    pub info: PathInfo,
    pub reader: NarReader,
}

impl Upstream {
    /// Pull-through as `config` says, counting into `metrics`. Fails only
    /// on a CA bundle that cannot be read when some upstream is https.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Self, ClientError> {
        let https = config.caches.iter().any(CacheUrl::is_https);
        let bundle = match (&config.ca_bundle, https) {
            (Some(path), true) => Some(path.as_path()),
            (None, true) => return Err(ClientError::NoCaBundle),
            (_, false) => None,
        };
        let client = client::Client::new(bundle)?;
        let narinfos = narinfo::Narinfos::new(config.caches.clone(), config.store_dir.clone());
        Ok(Upstream {
            inner: Arc::new(Inner {
                config,
                client,
                narinfos,
                downloads: Mutex::new(HashMap::new()),
                metrics,
            }),
        })
    }

    /// For the start-up line: where from, and where to.
    pub fn describe(&self) -> String {
        let c = &self.inner.config;
        let caches: Vec<&str> = c.caches.iter().map(CacheUrl::as_str).collect();
        let to = match &c.import {
            Some(t) => format!(
                "added to the store through {} (NARs up to {} bytes)",
                t.socket.display(),
                c.max_import
            ),
            None => "served only".to_owned(),
        };
        format!(
            "pull-through from {}, at most {} downloads at once, kept in {}, {to}",
            caches.join(", "),
            c.max_downloads,
            c.temp_dir.display()
        )
    }

    /// What the upstreams say of `hash` (remembered, see `narinfo.rs`).
    pub fn narinfo(&self, hash: &HashPart) -> Lookup {
        let metrics = &self.inner.metrics;
        self.inner
            .narinfos
            .lookup(&self.inner.client, hash, &|result| {
                metrics.upstream_request("narinfo", result)
            })
    }

    /// The narinfo text we serve for a path found upstream.
    pub fn render(&self, found: &Found) -> String {
        found.render(&self.inner.config.store_dir)
    }

    fn downloads(&self) -> MutexGuard<'_, HashMap<HashPart, Arc<download::Download>>> {
        self.inner
            .downloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// What an upstream has for the NAR of `hash` (with `nar_hash`, when
    /// the client's URL names one), without fetching it: for HEAD.
    pub fn nar_info(
        &self,
        hash: &HashPart,
        nar_hash: Option<&Sha256>,
    ) -> Result<Arc<Found>, UpstreamError> {
        let found = match self.narinfo(hash) {
            Lookup::Found(found) => found,
            Lookup::Absent => return Err(UpstreamError::Absent),
            Lookup::Failed(why) => return Err(UpstreamError::Failed(why)),
        };
        if nar_hash.is_some_and(|h| *h != found.info.nar_hash) {
            return Err(UpstreamError::OtherNar);
        }
        Ok(found)
    }

    /// A reader of the NAR of `hash` from byte 0, if some upstream has it
    /// (with `nar_hash`, when the client's URL names one). Joins the
    /// download under way for that path, or starts one (and its import).
    pub fn nar(
        &self,
        hash: &HashPart,
        nar_hash: Option<&Sha256>,
    ) -> Result<UpstreamNar, UpstreamError> {
        let found = self.nar_info(hash, nar_hash)?;
        let mut downloads = self.downloads();
        if let Some(d) = downloads.get(hash) {
            if d.found.info.nar_hash == found.info.nar_hash
                && !matches!(d.outcome(), Outcome::Failed(_))
            {
                return Ok(UpstreamNar {
                    info: d.found.info.clone(),
                    reader: d.reader(),
                });
            }
        }
        let max = self.inner.config.max_downloads;
        if downloads.len() >= max {
            return Err(UpstreamError::Busy(max));
        }
        let held = match &self.inner.config.budget {
            None => None,
            Some(Budget(take)) => {
                let bytes = download::MEMORY + found.compression.memory();
                Some(take(bytes).ok_or(UpstreamError::NoMemory)?)
            }
        };
        let import = self.import_target(&found);
        let d = download::Download::new(
            Arc::clone(&found),
            &self.inner.config.temp_dir,
            import.is_some(),
        )
        .map_err(UpstreamError::TempFile)?;
        downloads.insert(*hash, Arc::clone(&d));
        drop(downloads);
        self.start(*hash, &d, import, held);
        Ok(UpstreamNar {
            info: found.info.clone(),
            reader: d.reader(),
        })
    }

    /// Where `found` is to be imported, if anywhere (counted when nowhere).
    fn import_target(&self, found: &Found) -> Option<ImportTarget> {
        let metrics = &self.inner.metrics;
        let Some(target) = &self.inner.config.import else {
            metrics.upstream_import("serve-only");
            return None;
        };
        if found.info.nar_size > self.inner.config.max_import {
            log::warn(&format!(
                "{} is served but not added to the store: its NAR is {} bytes, more than the {} allowed",
                self.inner.config.store_dir.display_path(&found.info.path),
                found.info.nar_size,
                self.inner.config.max_import
            ));
            metrics.upstream_import("too-large");
            return None;
        }
        Some(target.clone())
    }

    /// The download's thread and, with a target, its import's. `held`: the
    /// download's share of the memory budget, given back when it ends.
    fn start(
        &self,
        hash: HashPart,
        d: &Arc<download::Download>,
        import: Option<ImportTarget>,
        held: Option<Box<dyn Send>>,
    ) {
        let found = &d.found;
        log::info(&format!(
            "{}: fetching {} ({}, {} bytes as a NAR){}",
            self.inner.config.store_dir.display_path(&found.info.path),
            found.nar_url,
            found.compression,
            found.info.nar_size,
            if import.is_some() {
                ", adding it to the store"
            } else {
                ""
            }
        ));
        let this = self.clone();
        let download = Arc::clone(d);
        std::thread::spawn(move || {
            let inner = &this.inner;
            let outcome = download.run(&inner.client, &inner.metrics);
            drop(held);
            match &outcome {
                Outcome::Verified => inner.metrics.upstream_request("nar", "ok"),
                Outcome::Failed(why) => {
                    inner.metrics.upstream_request("nar", "failed");
                    log::warn(&format!(
                        "{}: the upstream download failed: {why}",
                        inner
                            .config
                            .store_dir
                            .display_path(&download.found.info.path)
                    ));
                    // The narinfo may be what was wrong: ask again next time.
                    inner.narinfos.forget(&hash);
                }
                Outcome::Running => {}
            }
            this.retire(&hash, &download);
        });
        if let Some(target) = import {
            let this = self.clone();
            let download = Arc::clone(d);
            std::thread::spawn(move || {
                let in_flight = |h: &HashPart| this.downloads().get(h).cloned();
                let result = import::import(&target, &download, &in_flight);
                this.inner.metrics.upstream_import(result.label());
                download.import_done();
                this.retire(&hash, &download);
            });
        }
    }

    /// Forgets `d` once neither it nor its import is at work.
    fn retire(&self, hash: &HashPart, d: &Arc<download::Download>) {
        let mut downloads = self.downloads();
        if d.finished() && downloads.get(hash).is_some_and(|x| Arc::ptr_eq(x, d)) {
            downloads.remove(hash);
        }
    }

    /// Whether downloads or imports are under way (the idle exit waits).
    pub fn busy(&self) -> bool {
        !self.downloads().is_empty()
    }

    /// Waits until no download or import is under way, at most until
    /// `deadline`; whether none is.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        loop {
            let any = self.downloads().values().next().cloned();
            match any {
                None => return true,
                Some(d) => {
                    if !d.wait_finished(deadline) {
                        return false;
                    }
                    // Its threads retire it right after; give them the lock.
                    std::thread::yield_now();
                    if Instant::now() >= deadline {
                        return !self.busy();
                    }
                }
            }
        }
    }

    /// What pull-through has counted (in the server's metrics).
    #[cfg(any(test, feature = "testing"))]
    pub fn stats(&self) -> crate::metrics::Upstream {
        self.inner.metrics.upstream()
    }
}
