//! The HTTP engine: listeners, event loops that own every socket, the
//! threads that compute replies and send bodies, limits, the drain and the
//! idle exit. It serves an [`Application`] through the one interface in
//! [`app`]; it knows sockets, heads and bodies, never stores or routes.
//!
//! Threads (docs/architecture.md §2):
//! - **event loops**, one per core by default (`mio`, epoll): each accepts
//!   from every listening socket, reads heads, asks the application's
//!   [`app::FastPath`], writes heads and bodies held in memory, parks
//!   keep-alive connections. A loop never waits for a disk, a store or a
//!   log write;
//! - **workers** (`--workers`, started as load needs them): each owns one
//!   [`app::Handler`] and computes replies, one request at a time;
//! - **body threads** (started as load needs them): send bodies made of
//!   file regions (`sendfile(2)`, which may wait for the disk) and read the
//!   next chunk of computed bodies.
//!
//! Stopping to accept is exact: once [`Server::stop_accepting`] returns,
//! nothing more is taken from the sockets, and whatever systemd's socket
//! still holds goes to the next process.

pub mod app;
mod body;
mod conn;
mod event_loop;
pub mod health;
pub mod http1;
pub mod life;
pub mod listen;
mod pool;
mod sock;

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::log;
use crate::metrics::Metrics;

pub use app::Application;
pub use conn::MIN_RATE;
use event_loop::{Ctl, EventLoop, LoopSettings};
pub use health::Health;
pub use listen::{bind, BindError, Listener};
use pool::{LoopLink, Pool};

/// Descriptors kept back from the connection limit: store connections,
/// the database, the listeners, the loops' own.
const RESERVED_FDS: u64 = 64;
/// Body threads at most: each sends or reads one body at a time, and
/// waits while the disk (or a daemon's stream) does; past as many as there
/// are loops, one starts only when the others are stuck (`pool.rs`), and
/// past this many, bodies wait their turn in the queue. Enough to keep a
/// slow disk's queue full without a thread per client.
const BODY_THREADS: usize = 32;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A request head must be complete this long after its first byte (and
    /// a new connection's first head must start within it).
    pub read_timeout: Duration,
    /// An idle kept-alive connection is closed after this.
    pub keepalive_timeout: Duration,
    /// A reply that makes no progress for this long, or moves fewer than
    /// [`MIN_RATE`] bytes a second over it, is cut.
    pub write_timeout: Duration,
    pub keepalive: bool,
}

/// How the engine runs: given once, at start.
#[derive(Clone, Debug)]
pub struct Settings {
    pub limits: Limits,
    /// Event loops: one per core is the default.
    pub loops: usize,
    /// Worker threads at most (each started when load first needs it).
    pub workers: usize,
    /// Whether to write an access-log line per reply.
    pub access_log: bool,
    /// Connections served at once; `None`: as many as the descriptor limit
    /// allows (half of what is left after a reserve).
    pub max_connections: Option<usize>,
}

/// Open connections and answered requests, over every loop; the idle
/// timer reads it. Atomics: every loop touches it for every connection.
pub struct Activity {
    open: AtomicUsize,
    served: AtomicU64,
    refused: AtomicU64,
    /// When `open` last changed, in ms since `epoch`.
    last_change: AtomicU64,
    epoch: Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            open: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_change: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_change.fetch_max(ms, Ordering::SeqCst);
    }

    fn opened(&self) {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.touch();
    }

    fn closed(&self) {
        self.touch();
        self.open.fetch_sub(1, Ordering::SeqCst);
    }

    fn served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    fn open_now(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// How long no connection has been open, or `None` while one is.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::SeqCst) != 0 {
            return None;
        }
        let since = Duration::from_millis(self.last_change.load(Ordering::SeqCst));
        Some(self.epoch.elapsed().saturating_sub(since))
    }

    /// (open connections, requests answered so far).
    pub fn counts(&self) -> (usize, u64) {
        (
            self.open.load(Ordering::SeqCst),
            self.served.load(Ordering::Relaxed),
        )
    }
}

pub struct Server {
    loops: Vec<LoopHandle>,
    activity: Arc<Activity>,
    health: Arc<Health>,
    described: String,
}

struct LoopHandle {
    ctl: Sender<Ctl>,
    waker: Arc<mio::Waker>,
    /// Ends with whether its connections all finished.
    thread: Option<JoinHandle<bool>>,
}

impl Server {
    /// Starts `settings.loops` event loops on `listeners` and the first
    /// worker; connections and replies are counted in `metrics`.
    pub fn start(
        listeners: Vec<Listener>,
        app: Arc<dyn Application>,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> io::Result<Server> {
        let described = listeners
            .iter()
            .map(Listener::describe)
            .collect::<Vec<_>>()
            .join(", ");
        let n = settings.loops.max(1);
        let nofile = raise_nofile();
        let max_conns = settings
            .max_connections
            .unwrap_or_else(|| connection_limit(nofile, settings.workers));
        let activity = Arc::new(Activity::default());
        let health = Arc::new(Health::new(n));
        let mut polls = Vec::with_capacity(n);
        let mut links = Vec::with_capacity(n);
        let mut done_rxs = Vec::with_capacity(n);
        for _ in 0..n {
            let poll = mio::Poll::new()?;
            let waker = Arc::new(mio::Waker::new(poll.registry(), event_loop::WAKER)?);
            let (done_tx, done_rx) = mpsc::channel();
            links.push(LoopLink {
                done: done_tx,
                waker: waker.clone(),
            });
            polls.push((poll, waker));
            done_rxs.push(done_rx);
        }
        let links: Arc<[LoopLink]> = links.into();
        let workers = Arc::new(Pool::workers(settings.workers, links.clone(), app.clone()));
        let bodies = Arc::new(Pool::bodies(n, BODY_THREADS, links));
        workers.start_first()?;
        let mut loops = Vec::with_capacity(n);
        for (i, ((poll, waker), done_rx)) in polls.into_iter().zip(done_rxs).enumerate() {
            let listening = listeners
                .iter()
                .map(Listener::try_clone)
                .collect::<io::Result<Vec<_>>>()?;
            let (ctl_tx, ctl_rx) = mpsc::channel();
            let event_loop = EventLoop::new(
                i,
                poll,
                listening,
                event_loop::Channels {
                    done: done_rx,
                    ctl: ctl_rx,
                },
                event_loop::Shared {
                    workers: workers.clone(),
                    bodies: bodies.clone(),
                    activity: activity.clone(),
                    health: health.clone(),
                    metrics: metrics.clone(),
                },
                LoopSettings {
                    limits: settings.limits,
                    access_log: settings.access_log,
                    max_conns,
                    fast: app.fast_path(),
                },
            )?;
            let thread = thread::Builder::new()
                .name(format!("loop-{i}"))
                .spawn(move || event_loop::run_or_exit(event_loop))?;
            loops.push(LoopHandle {
                ctl: ctl_tx,
                waker,
                thread: Some(thread),
            });
        }
        // The loops hold their own copies of the sockets.
        drop(listeners);
        Ok(Server {
            loops,
            activity,
            health,
            described,
        })
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Whether every loop turns (read by the watchdog).
    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn describe(&self) -> String {
        self.described.clone()
    }

    /// Tells every loop `make(ack)` and waits until each has done it.
    fn order(&self, make: impl Fn(Sender<()>) -> Ctl) {
        let mut acks = Vec::new();
        for l in &self.loops {
            let (tx, rx) = mpsc::channel();
            if l.ctl.send(make(tx)).is_ok() && l.waker.wake().is_ok() {
                acks.push(rx);
            }
        }
        for rx in acks {
            let _ = rx.recv();
        }
    }

    /// Stops taking connections from the sockets. When this returns, every
    /// connection ever accepted is counted in [`Activity`].
    pub fn stop_accepting(&mut self) {
        self.order(Ctl::StopAccepting);
    }

    /// Takes connections again.
    pub fn resume_accepting(&mut self) {
        self.order(Ctl::ResumeAccepting);
    }

    /// Stops accepting, answers every request already received, closes
    /// idle connections, and returns once all are gone or at `deadline`
    /// (counted by the caller from the signal). True if all finished.
    pub fn drain(mut self, deadline: Instant) -> bool {
        for l in &self.loops {
            let _ = l.ctl.send(Ctl::Drain { deadline });
            let _ = l.waker.wake();
        }
        let mut all = true;
        for l in &mut self.loops {
            let Some(thread) = l.thread.take() else {
                continue;
            };
            while !thread.is_finished() {
                if Instant::now() >= deadline + Duration::from_millis(500) {
                    all = false;
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                all &= thread.join().unwrap_or(false);
            }
        }
        all && self.activity.idle_for().is_some()
    }
}

/// Raises the soft limit on open descriptors to the hard one, as nginx's
/// `worker_rlimit_nofile` and Go's runtime do: systemd and most shells
/// start services with a soft limit of 1024, too few for many clients.
/// Returns the soft limit now in force.
fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if limit.maximum.is_some_and(|hard| hard > soft) || limit.maximum.is_none() {
        let mut raised = limit;
        raised.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            log::warn(&format!(
                "cannot raise the open-file limit from {soft}: {e}"
            ));
            return soft;
        }
        return limit.maximum.unwrap_or(u64::MAX);
    }
    soft
}

/// Connections served at once with `nofile` descriptors: each may hold a
/// socket and a file being sent, after a reserve for everything else.
fn connection_limit(nofile: u64, workers: usize) -> usize {
    let reserve = RESERVED_FDS + 2 * workers as u64;
    let usable = nofile.saturating_sub(reserve).min(1 << 20);
    (usable / 2).max(1) as usize
}
