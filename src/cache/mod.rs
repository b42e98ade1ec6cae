//! The cache application: the route table, one handler per endpoint, the
//! one error-to-status match, and the answers an event loop may give by
//! itself. It serves the engine ([`crate::server`]) through
//! [`crate::server::app`]: requests and responses as values; no sockets,
//! no HTTP/1 bytes here.

pub mod build_log;
pub mod cache_info;
pub mod fast;
pub mod gate;
pub mod heavy;
pub mod listing;
pub mod metrics_route;
pub mod nar;
pub mod narinfo;
mod primed;
pub mod range;
pub mod response;
pub mod routes;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use crate::auth::Auth;
use crate::log;
use crate::metrics::Metrics;
use crate::nix::compression::Compression;
use crate::nix::signing::SecretKey;
use crate::server::app::{self, Application, Request, Response};
use crate::store::closure::{Allowed, Closure, Filtered};
use crate::store::daemon::ChangeSignal;
use crate::store::upstream::Upstream;
use crate::store::{OpenStore, Store, StoreSlot};

use response::HandlerError;
use routes::{Route, RouteError};

pub use fast::NarinfoFastPath;

/// What every worker shares, read-only: keys loaded once at start-up and
/// the settings that shape replies.
pub struct ReplySettings {
    pub keys: Vec<SecretKey>,
    pub priority: u32,
    /// `--compression`: what narinfos point to, and whether a NAR may be
    /// sent zstd-encoded at all.
    pub compression: Compression,
    /// What zstd encoders and bzip2 decoders may hold at once.
    pub heavy: Arc<heavy::Heavy>,
}

/// The application as the engine starts it: everything a worker's handler
/// and a loop's fast path are made from.
pub struct Cache {
    settings: Arc<ReplySettings>,
    open: Arc<dyn OpenStore>,
    metrics: Arc<Metrics>,
    /// `--metrics-route`: serve `/metrics`.
    metrics_route: bool,
    /// `--serve-closure-of`.
    closure: Option<Arc<Allowed>>,
    /// Narinfo replies the workers file for the loops.
    shared_narinfos: Arc<narinfo::SharedNarinfos>,
    signal: ChangeSignal,
    /// `--htpasswd`.
    auth: Option<Arc<Auth>>,
    /// `--upstream`.
    upstream: Option<Upstream>,
}

impl Cache {
    /// The application over the store `open` makes connections to, which
    /// tells of its changes by `signal`.
    pub fn new(
        settings: Arc<ReplySettings>,
        open: Arc<dyn OpenStore>,
        signal: ChangeSignal,
        metrics: Arc<Metrics>,
    ) -> Cache {
        Cache {
            settings,
            open,
            metrics,
            metrics_route: false,
            closure: None,
            shared_narinfos: Arc::new(narinfo::SharedNarinfos::for_signal(&signal)),
            signal,
            auth: None,
            upstream: None,
        }
    }

    /// Fetches the paths this store lacks from `upstream`
    /// (`cache/upstream.rs`).
    pub fn with_upstream(mut self, upstream: Option<Upstream>) -> Cache {
        self.upstream = upstream;
        self
    }

    /// Asks for credentials checked by `auth` before any route but
    /// `/nix-cache-info` ([`gate`]).
    pub fn with_auth(mut self, auth: Option<Arc<Auth>>) -> Cache {
        self.auth = auth;
        self
    }

    /// Serves `/metrics` (`--metrics-route`).
    pub fn with_metrics_route(mut self, on: bool) -> Cache {
        self.metrics_route = on;
        self
    }

    /// Serves only the paths of `allowed`; any other is answered as absent.
    pub fn with_closure(mut self, allowed: Option<Arc<Allowed>>) -> Cache {
        self.closure = allowed;
        self
    }

    /// One worker's handler, as the engine makes one per worker thread.
    pub fn worker(&self) -> Worker {
        Worker {
            settings: self.settings.clone(),
            store: StoreSlot::new(self.open.clone(), None),
            narinfos: narinfo::WorkerNarinfos::default(),
            metrics: self.metrics.clone(),
            metrics_route: self.metrics_route,
            closure: self.closure.clone(),
            closure_seen: None,
            shared_narinfos: Some(self.shared_narinfos.clone()),
            auth: self.auth.clone(),
            narinfos_all: narinfo::WorkerNarinfos::default(),
            upstream: self.upstream.clone(),
        }
    }

    /// One loop's fast path.
    pub fn narinfo_fast_path(&self) -> NarinfoFastPath {
        NarinfoFastPath::new(
            self.shared_narinfos.clone(),
            self.signal.clone(),
            self.closure.clone(),
        )
        .with_auth(self.auth.clone())
    }
}

impl Application for Cache {
    fn handler(&self) -> Box<dyn app::Handler> {
        Box::new(self.worker())
    }

    fn fast_path(&self) -> Option<Box<dyn app::FastPath>> {
        Some(Box::new(self.narinfo_fast_path()))
    }
}

/// One store worker's state: its own store connection and its memo of
/// narinfo replies and signatures. No lock on the hot path.
pub struct Worker {
    settings: Arc<ReplySettings>,
    store: StoreSlot,
    narinfos: narinfo::WorkerNarinfos,
    /// Where store look-up latency goes.
    metrics: Arc<Metrics>,
    metrics_route: bool,
    /// `--serve-closure-of`: the only paths this worker may serve.
    closure: Option<Arc<Allowed>>,
    /// The closure `narinfos` was filled under.
    closure_seen: Option<Arc<Closure>>,
    /// Where narinfo replies are filed for the event loops.
    shared_narinfos: Option<Arc<narinfo::SharedNarinfos>>,
    /// `--htpasswd`: who may see what ([`gate`]).
    auth: Option<Arc<Auth>>,
    /// With `--serve-closure-of` too: the replies of the whole store, which
    /// users see, kept apart from the closure's in `narinfos`.
    narinfos_all: narinfo::WorkerNarinfos,
    /// `--upstream`: where a path this store lacks (or, with
    /// `--serve-closure-of`, may not show) is fetched from.
    upstream: Option<Upstream>,
}

impl app::Handler for Worker {
    fn respond(&mut self, request: &Request) -> Response {
        Worker::respond(self, request)
    }

    fn reset(&mut self) {
        // After a panic its store connection may be mid-reply.
        self.store.reset();
    }
}

impl Worker {
    /// Answers one request: the `--htpasswd` gate, the route and its
    /// handler; an error becomes its status here, its detail goes to the
    /// log, never into the body.
    pub fn respond(&mut self, request: &Request) -> Response {
        let pass = match &self.auth {
            None => Ok(gate::Pass::Anonymous),
            Some(auth) => gate::check(auth, request, self.closure.is_some()),
        };
        let user = match &pass {
            Ok(gate::Pass::User(u)) => Some(u.clone()),
            _ => None,
        };
        let answer = pass.and_then(|_| self.handle(request, user.is_some()));
        let mut r = answer.unwrap_or_else(|e| {
            self.failed(request, &e);
            response::error_response(&e)
        });
        r.route = routes::label(&request.target);
        response::for_user(r, user)
    }

    /// Routes one request and runs its handler. The route is checked before
    /// the store is touched, so bad requests get their 4xx even when it is
    /// down. `user`: credentials verified, so the whole store is served.
    fn handle(&mut self, request: &Request, user: bool) -> Result<Response, HandlerError> {
        let route = routes::parse(&request.method, &request.target).map_err(HandlerError::Route)?;
        if route == Route::Metrics {
            if !self.metrics_route {
                return Err(HandlerError::Route(RouteError::NotFound));
            }
            return Ok(metrics_route::handle(&self.metrics));
        }
        let allowed = self.closure_now(user);
        let store = self.store.get()?;
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
        let settings = &*self.settings;
        let upstream = self.upstream.as_ref();
        let range = request.range.as_deref();
        let answer = match route {
            Route::NarInfo(hash) => {
                // A user's view of a store with a closure for everyone else
                // is neither remembered with the closure's replies nor filed
                // for the loops, which answer only the closure's.
                let (mine, shared) = if user && self.closure.is_some() {
                    (&mut self.narinfos_all, None)
                } else {
                    // Taken before the look-up (`narinfo/shared.rs`).
                    let shared =
                        (self.shared_narinfos.as_deref()).map(|s| (s, s.ticket(allowed.clone())));
                    (&mut self.narinfos, shared)
                };
                let (keys, compression) = (&settings.keys, settings.compression);
                narinfo::handle(store, keys, mine, &hash, compression, shared, upstream)
            }
            Route::Nar { hash, nar_hash } => {
                nar::for_route(store, settings, request, hash, nar_hash, false, upstream)
            }
            Route::NarZstd { hash, nar_hash } => {
                nar::for_route(store, settings, request, hash, nar_hash, true, upstream)
            }
            Route::CacheInfo => Ok(cache_info::handle(store.store_dir(), settings.priority)),
            Route::Listing(hash) => listing::handle(store, &hash, range),
            Route::Log(name) => {
                let head_only = request.is_head();
                build_log::handle(store, &name, range, head_only, &settings.heavy)
            }
            Route::Metrics => unreachable!("answered above"),
        };
        self.metrics.store_lookup(started.elapsed());
        answer
    }

    /// The closure this request may see (`--serve-closure-of`; none for a
    /// user, who sees the whole store). A switched root is no change of the
    /// store's generation, yet the replies remembered under the old closure
    /// (a 200 for a path now outside, a 404 for one now inside) no longer
    /// hold: they are forgotten here.
    fn closure_now(&mut self, user: bool) -> Option<Arc<Closure>> {
        let now = self.closure.as_ref().filter(|_| !user)?.current();
        if !(self.closure_seen.as_ref()).is_some_and(|c| Arc::ptr_eq(c, &now)) {
            self.narinfos = narinfo::WorkerNarinfos::default();
            self.closure_seen = Some(now.clone());
        }
        Some(now)
    }

    /// Logs why `request` failed with `e`, and drops the store connection
    /// if `e` leaves it out of step.
    fn failed(&mut self, request: &Request, e: &HandlerError) {
        let (method, target) = (request.method.as_str(), &request.target);
        match e {
            HandlerError::Store(s) => {
                log::error_limited(
                    log::Kind::Store,
                    format_args!("{method} {target}: {}", log::chain(s)),
                );
                self.store.failed(s);
            }
            HandlerError::Reply(what) => {
                log::error_limited(log::Kind::Reply, format_args!("{method} {target}: {what}"));
            }
            HandlerError::Upstream(what) => log::warn(&format!("{method} {target}: {what}")),
            HandlerError::Route(_) | HandlerError::Busy | HandlerError::Unauthorized => {}
        }
    }
}
