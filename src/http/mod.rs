//! The cache application: the route table, one handler per endpoint,
//! responses and the one error-to-status match (`design.md` "One request,
//! end to end"). No sockets here: the server (`crate::server`) reads heads,
//! hands each to a [`Worker`] and writes what it answers.

pub mod build_log;
pub mod cache_info;
pub mod listing;
pub mod metrics;
pub mod nar;
pub mod narinfo;
pub mod range;
pub mod request;
pub mod response;
pub mod routes;

use std::sync::Arc;
use std::time::Instant;

use crate::log;
use crate::metrics::Metrics;
use crate::nix::compression::{Compression, DEFAULT_ZSTD_LEVEL};
use crate::nix::sig_cache::SigCache;
use crate::nix::signing::SecretKey;
use crate::store::{OpenStore, Store, StoreSlot};

use request::{Head, Method};
use response::{HandlerError, Response};
use routes::{Route, RouteError};

/// What every worker shares, read-only: keys loaded once at start-up.
pub struct Service {
    pub keys: Vec<SecretKey>,
    pub priority: u32,
    /// `--compression`: what narinfos point to, and whether a plain NAR may
    /// be sent zstd-encoded to a client that asks.
    pub compression: Compression,
}

/// One store worker's state: its own store connection and its memo of
/// signatures. No lock on the hot path.
pub struct Worker {
    svc: Arc<Service>,
    store: StoreSlot,
    sigs: SigCache,
    /// Where store look-up latency goes; with `true`, `/metrics` serves it.
    metrics: Option<(Arc<Metrics>, bool)>,
}

impl Worker {
    /// A worker whose store connection is `conn`, or opened from `open` on
    /// its first request.
    pub fn new(svc: Arc<Service>, open: Arc<dyn OpenStore>, conn: Option<Box<dyn Store>>) -> Self {
        Worker {
            svc,
            store: StoreSlot::new(open, conn),
            sigs: SigCache::default(),
            metrics: None,
        }
    }

    /// Records store look-up latency in `metrics`, and serves them at
    /// `/metrics` when `route` (`--metrics-route`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>, route: bool) -> Self {
        self.metrics = Some((metrics, route));
        self
    }

    /// Answers one request. Errors become their status here; the detail
    /// goes to the log, never into the body (`style.md` 7).
    pub fn respond(&mut self, head: &Head) -> Response {
        match self.handle(head) {
            Ok(r) => r,
            Err(e) => {
                if let HandlerError::Store(s) = &e {
                    log::error(&format!("{} {}: {s}", head.method.as_str(), head.target));
                    self.store.failed(s);
                }
                response::error_response(&e)
            }
        }
    }

    /// After a handler panicked: its store connection may be mid-reply.
    pub fn reset(&mut self) {
        self.store.reset();
    }

    /// Routes one request and runs its handler. The route is checked before
    /// the store is touched, so bad requests get their 4xx even when it is down.
    fn handle(&mut self, head: &Head) -> Result<Response, HandlerError> {
        if let Some((m, true)) = &self.metrics {
            if routes::label(&head.target) == "metrics" {
                if !matches!(head.method, Method::Get | Method::Head) {
                    return Err(HandlerError::Route(RouteError::Method));
                }
                return Ok(metrics::handle(m));
            }
        }
        let route = routes::parse(&head.method, &head.target).map_err(HandlerError::Route)?;
        let store = self.store.get()?;
        let started = Instant::now();
        let svc = &*self.svc;
        let answer = match route {
            Route::NarInfo(hash) => {
                narinfo::handle(store, &svc.keys, &mut self.sigs, &hash, svc.compression)
            }
            Route::Nar { hash, nar_hash } => nar::handle(
                store,
                &nar::NarRequest {
                    hash,
                    nar_hash,
                    range: head.range.as_deref(),
                    head_only: head.method == Method::Head,
                    encoding: nar::negotiate(
                        svc.compression,
                        head.accept_encoding.as_deref(),
                        head.range.as_deref(),
                    ),
                    vary: svc.compression != Compression::None,
                },
            ),
            Route::NarZstd { hash, nar_hash } => nar::handle(
                store,
                &nar::NarRequest {
                    hash,
                    nar_hash,
                    range: None,
                    head_only: head.method == Method::Head,
                    encoding: nar::Encoding::ZstdFile {
                        level: match svc.compression {
                            Compression::Zstd { level } => level,
                            Compression::None => DEFAULT_ZSTD_LEVEL,
                        },
                    },
                    vary: false,
                },
            ),
            Route::CacheInfo => Ok(cache_info::handle(store.store_dir(), svc.priority)),
            Route::Listing(hash) => listing::handle(store, &hash, head.range.as_deref()),
            Route::Log(name) => build_log::handle(
                store,
                &name,
                head.range.as_deref(),
                head.method == Method::Head,
            ),
        };
        if let Some((m, _)) = &self.metrics {
            m.store_lookup(started.elapsed());
        }
        answer
    }
}
