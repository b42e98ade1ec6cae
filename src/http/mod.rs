//! The cache application: the route table, one handler per endpoint,
//! responses and the one error-to-status match (`design.md` "One request,
//! end to end"). No sockets here: the server (`crate::server`) reads heads,
//! hands each to a [`Worker`] and writes what it answers.

pub mod build_log;
pub mod cache_info;
pub mod fast;
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
use crate::nix::signing::SecretKey;
use crate::store::closure::{Allowed, Closure, Filtered};
use crate::store::{OpenStore, Store, StoreSlot};

use request::{Head, Method};
use response::{HandlerError, Response};
use routes::{Route, RouteError};

pub use fast::FastPath;

/// What every worker shares, read-only: keys loaded once at start-up.
pub struct Service {
    pub keys: Vec<SecretKey>,
    pub priority: u32,
    /// `--compression`: what narinfos point to, and whether a plain NAR may
    /// be sent zstd-encoded to a client that asks.
    pub compression: Compression,
}

/// One store worker's state: its own store connection and its memo of
/// narinfo replies and signatures. No lock on the hot path.
pub struct Worker {
    svc: Arc<Service>,
    store: StoreSlot,
    narinfos: narinfo::Memo,
    /// Where store look-up latency goes; with `true`, `/metrics` serves it.
    metrics: Option<(Arc<Metrics>, bool)>,
    /// `--serve-closure-of`: the only paths this worker may serve.
    closure: Option<Arc<Allowed>>,
    /// The closure `narinfos` was filled under.
    closure_seen: Option<Arc<Closure>>,
    /// Where narinfo replies are filed for the event loop ([`FastPath`]).
    replies: Option<Arc<narinfo::Replies>>,
}

impl Worker {
    /// A worker whose store connection is `conn`, or opened from `open` on
    /// its first request.
    pub fn new(svc: Arc<Service>, open: Arc<dyn OpenStore>, conn: Option<Box<dyn Store>>) -> Self {
        Worker {
            svc,
            store: StoreSlot::new(open, conn),
            narinfos: narinfo::Memo::default(),
            metrics: None,
            closure: None,
            closure_seen: None,
            replies: None,
        }
    }

    /// Files its narinfo replies in `replies`, for the event loop to answer
    /// repeated requests by itself ([`FastPath::new`]).
    pub fn with_replies(mut self, replies: Arc<narinfo::Replies>) -> Self {
        self.replies = Some(replies);
        self
    }

    /// Records store look-up latency in `metrics`, and serves them at
    /// `/metrics` when `route` (`--metrics-route`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>, route: bool) -> Self {
        self.metrics = Some((metrics, route));
        self
    }

    /// Serves only the paths of `allowed`; any other is answered as absent.
    pub fn with_closure(mut self, allowed: Arc<Allowed>) -> Self {
        self.closure = Some(allowed);
        self
    }

    /// Answers one request. Errors become their status here; the detail
    /// goes to the log, never into the body (`style.md` 7).
    pub fn respond(&mut self, head: &Head) -> Response {
        match self.handle(head) {
            Ok(r) => r,
            Err(e) => {
                if let HandlerError::Store(s) = &e {
                    let (method, target) = (head.method.as_str(), &head.target);
                    log::error_limited(
                        log::Kind::Store,
                        format_args!("{method} {target}: {}", log::chain(s)),
                    );
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
        let allowed = self.closure.as_ref().map(|a| a.current());
        if let Some(now) = &allowed {
            // A switched root is no change of the store's generation, yet
            // the replies remembered under the old closure (a 200 for a path
            // now outside, a 404 for one now inside) no longer hold.
            if !self
                .closure_seen
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, now))
            {
                self.narinfos = narinfo::Memo::default();
                self.closure_seen = Some(now.clone());
            }
        }
        let mut filtered;
        let store: &mut dyn Store = match &allowed {
            Some(allowed) => {
                filtered = Filtered {
                    inner: store,
                    allowed,
                };
                &mut filtered
            }
            None => store,
        };
        let started = Instant::now();
        let svc = &*self.svc;
        let answer = match route {
            Route::NarInfo(hash) => {
                // Taken before the look-up (`narinfo/replies.rs`).
                let shared = (self.replies.as_deref()).map(|r| (r, r.ticket(allowed.clone())));
                narinfo::handle(
                    store,
                    &svc.keys,
                    &mut self.narinfos,
                    &hash,
                    svc.compression,
                    shared,
                )
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
