//! The HTTP engine: listeners, one event loop that owns every socket, and
//! the pool of store workers that compute responses (`docs/architecture.md`
//! §2). The cache application it serves is
//! [`crate::http`]; this module knows sockets, heads and bodies, not stores.
//!
//! Stopping to accept is exact: once [`Server::stop_accepting`] returns,
//! nothing more is taken from the sockets, and whatever systemd's socket
//! still holds goes to the next process (`docs/architecture.md` §3).

mod body;
mod conn;
mod event_loop;
pub mod listen;
mod pool;
mod sock;

use std::io;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::http::{FastPath, Worker};
use crate::log;
use crate::metrics::Metrics;

pub use conn::MIN_RATE;
use event_loop::{Channels, Ctl, EventLoop, Settings, WAKER};
pub use listen::{bind, BindError, Listener};
use pool::Pool;

/// Descriptors kept back from the connection limit: store connections,
/// the database, one open file per NAR being sent, the listeners.
const RESERVED_FDS: u64 = 64;

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

/// Open connections and answered requests; the idle timer reads it.
#[derive(Default)]
pub struct Activity {
    state: Mutex<ActivityState>,
}

struct ActivityState {
    open: usize,
    served: u64,
    refused: u64,
    last_change: Instant,
}

impl Default for ActivityState {
    fn default() -> Self {
        ActivityState {
            open: 0,
            served: 0,
            refused: 0,
            last_change: Instant::now(),
        }
    }
}

impl Activity {
    fn with(&self, f: impl FnOnce(&mut ActivityState)) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        s.last_change = Instant::now();
    }

    fn opened(&self) {
        self.with(|s| s.open += 1);
    }

    fn closed(&self) {
        self.with(|s| s.open = s.open.saturating_sub(1));
    }

    fn served(&self) {
        self.with(|s| s.served += 1);
    }

    fn refused(&self) {
        self.with(|s| s.refused += 1);
    }

    /// How long no connection has been open, or `None` while one is.
    pub fn idle_for(&self) -> Option<Duration> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.open == 0).then(|| s.last_change.elapsed())
    }

    /// (open connections, requests answered so far).
    pub fn counts(&self) -> (usize, u64) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.open, s.served)
    }

    /// Connections refused because the process was at its limit.
    pub fn refused_count(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).refused
    }
}

pub struct Server {
    ctl: Sender<Ctl>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<()>>,
    activity: Arc<Activity>,
    described: String,
    max_conns: usize,
}

impl Server {
    /// Starts the event loop on `listeners` and one thread per worker;
    /// connections and replies are counted in `metrics`. With `fast`, the
    /// loop answers what it can by itself, and only the rest goes to a
    /// worker.
    pub fn start(
        listeners: Vec<Listener>,
        workers: Vec<Worker>,
        fast: Option<FastPath>,
        limits: Limits,
        access_log: bool,
        metrics: Arc<Metrics>,
    ) -> io::Result<Server> {
        let described = listeners
            .iter()
            .map(Listener::describe)
            .collect::<Vec<_>>()
            .join(", ");
        let max_conns = connection_limit(raise_nofile(), workers.len());
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        let (done_tx, done_rx) = mpsc::channel();
        let notify = {
            let waker = waker.clone();
            Arc::new(move || {
                let _ = waker.wake();
            })
        };
        let pool = Pool::start(workers, done_tx, notify)?;
        let (ctl_tx, ctl_rx) = mpsc::channel();
        let activity = Arc::new(Activity::default());
        let event_loop = EventLoop::new(
            poll,
            listeners,
            pool,
            Channels {
                done: done_rx,
                ctl: ctl_rx,
            },
            activity.clone(),
            metrics,
            Settings {
                limits,
                access_log,
                max_conns,
                fast,
            },
        )?;
        let thread = thread::Builder::new()
            .name("event-loop".into())
            .spawn(move || event_loop.run())?;
        Ok(Server {
            ctl: ctl_tx,
            waker,
            thread: Some(thread),
            activity,
            described,
            max_conns,
        })
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    pub fn describe(&self) -> String {
        self.described.clone()
    }

    /// Connections served at once before new ones are refused.
    pub fn max_connections(&self) -> usize {
        self.max_conns
    }

    fn order(&self, make: impl FnOnce(Sender<()>) -> Ctl) {
        let (tx, rx) = mpsc::channel();
        if self.ctl.send(make(tx)).is_ok() && self.waker.wake().is_ok() {
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
        let _ = self.ctl.send(Ctl::Drain { deadline });
        let _ = self.waker.wake();
        let Some(thread) = self.thread.take() else {
            return true;
        };
        while !thread.is_finished() {
            if Instant::now() >= deadline + Duration::from_millis(500) {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = thread.join();
        self.activity.idle_for().is_some()
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
