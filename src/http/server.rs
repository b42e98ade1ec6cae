//! Listeners, the accept loop, the fixed worker pool, and the activity count
//! that the idle exit reads.
//!
//! One acceptor thread per listener hands connections to a bounded queue; a
//! fixed pool of workers, each with its own store connection, serves them one
//! at a time. At most `workers` connections are served at once and at most
//! `workers` more wait in the queue; beyond that the acceptors stop calling
//! `accept()` and clients wait in the kernel's listen backlog.
//!
//! Stopping to accept is exact: acceptors wake every `ACCEPT_POLL` to look at
//! a flag, so once [`Server::stop_accepting`] returns nothing more is taken
//! from the socket, and whatever systemd's socket still holds goes to the
//! next process (`design.md` "Life cycle").

use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::log;

use super::conn::{self, Shared, Stream};
use super::StoreSlot;

/// How often an acceptor blocked in `accept()` looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(250);

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => a.to_string(),
                Err(_) => "tcp".into(),
            },
            Listener::Unix(l) => match l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            {
                Some(p) => p,
                None => "unix".into(),
            },
        }
    }

    /// Makes a blocked `accept()` return every `ACCEPT_POLL` (Linux honours
    /// SO_RCVTIMEO on listening sockets). Accepted sockets inherit it; each
    /// connection sets its own timeouts right after accept.
    fn set_accept_poll(&self) -> io::Result<()> {
        let sock = match self {
            Listener::Tcp(l) => socket2::SockRef::from(l),
            Listener::Unix(l) => socket2::SockRef::from(l),
        };
        sock.set_read_timeout(Some(ACCEPT_POLL))
    }

    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                // Small replies (narinfo) should leave at once.
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }
}

/// Open connections and served requests; the idle timer reads it.
#[derive(Default)]
pub struct Activity {
    state: Mutex<ActivityState>,
}

struct ActivityState {
    open: usize,
    served: u64,
    last_change: Instant,
}

impl Default for ActivityState {
    fn default() -> Self {
        ActivityState {
            open: 0,
            served: 0,
            last_change: Instant::now(),
        }
    }
}

impl Activity {
    fn opened(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.open += 1;
        s.last_change = Instant::now();
    }

    fn closed(&self, served: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.open = s.open.saturating_sub(1);
        s.served += served;
        s.last_change = Instant::now();
    }

    /// How long no connection has been open, or `None` while one is.
    pub fn idle_for(&self) -> Option<Duration> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.open == 0).then(|| s.last_change.elapsed())
    }

    /// (open connections, connections closed so far).
    pub fn counts(&self) -> (usize, u64) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.open, s.served)
    }
}

pub struct Server {
    shared: Arc<Shared>,
    activity: Arc<Activity>,
    listeners: Vec<Arc<Listener>>,
    accepting: Arc<AtomicBool>,
    acceptors: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    queue: Option<SyncSender<Stream>>,
}

impl Server {
    /// Starts one worker per slot and one acceptor per listener.
    pub fn start(
        listeners: Vec<Listener>,
        slots: Vec<StoreSlot>,
        shared: Shared,
    ) -> io::Result<Server> {
        for l in &listeners {
            l.set_accept_poll()?;
        }
        let shared = Arc::new(shared);
        let activity = Arc::new(Activity::default());
        let (tx, rx) = mpsc::sync_channel::<Stream>(slots.len().max(1));
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for (i, slot) in slots.into_iter().enumerate() {
            let (shared, activity, rx) = (shared.clone(), activity.clone(), rx.clone());
            workers.push(
                thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || worker(slot, &shared, &activity, &rx))?,
            );
        }
        let mut server = Server {
            shared,
            activity,
            listeners: listeners.into_iter().map(Arc::new).collect(),
            accepting: Arc::new(AtomicBool::new(false)),
            acceptors: Vec::new(),
            workers,
            queue: Some(tx),
        };
        server.resume_accepting()?;
        Ok(server)
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    pub fn describe(&self) -> String {
        self.listeners
            .iter()
            .map(|l| l.describe())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Starts the acceptors (again).
    pub fn resume_accepting(&mut self) -> io::Result<()> {
        let Some(tx) = &self.queue else { return Ok(()) };
        self.accepting.store(true, Ordering::SeqCst);
        for (i, l) in self.listeners.iter().enumerate() {
            let (l, tx, accepting) = (l.clone(), tx.clone(), self.accepting.clone());
            let (shared, activity) = (self.shared.clone(), self.activity.clone());
            self.acceptors.push(
                thread::Builder::new()
                    .name(format!("accept-{i}"))
                    .spawn(move || acceptor(&l, &tx, &accepting, &shared, &activity))?,
            );
        }
        Ok(())
    }

    /// Stops taking connections from the sockets. When this returns, every
    /// connection ever accepted is counted in [`Activity`].
    pub fn stop_accepting(&mut self) {
        self.accepting.store(false, Ordering::SeqCst);
        for a in self.acceptors.drain(..) {
            let _ = a.join();
        }
    }

    /// Stops accepting, lets the workers finish the requests at hand and the
    /// connections queued, waiting at most `bound`. True if all finished.
    pub fn drain(mut self, bound: Duration) -> bool {
        self.stop_accepting();
        self.shared.draining.store(true, Ordering::SeqCst);
        self.queue = None;
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if self.workers.iter().all(|w| w.is_finished()) {
                for w in self.workers.drain(..) {
                    let _ = w.join();
                }
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

fn acceptor(
    listener: &Listener,
    queue: &SyncSender<Stream>,
    accepting: &AtomicBool,
    shared: &Shared,
    activity: &Activity,
) {
    let limits = shared.limits;
    while accepting.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok(stream) => {
                // Counted before the flag is looked at again: see stop_accepting.
                activity.opened();
                let _ = stream.set_write_timeout(Some(limits.write_timeout));
                let _ = stream.set_read_timeout(Some(limits.read_timeout));
                shared.waiting.fetch_add(1, Ordering::SeqCst);
                if let Err(mpsc::SendError(stream)) = queue.send(stream) {
                    shared.waiting.fetch_sub(1, Ordering::SeqCst);
                    stream.shutdown();
                    activity.closed(0);
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            // The peer gave up before we took it: nothing to do.
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
            Err(e) => {
                // EMFILE, ENOBUFS and the like: back off instead of spinning.
                log::error(&format!("accept on {}: {e}", listener.describe()));
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn worker(
    mut slot: StoreSlot,
    shared: &Shared,
    activity: &Activity,
    queue: &Mutex<Receiver<Stream>>,
) {
    let mut copy_buf = vec![0u8; conn::COPY_BUF];
    loop {
        let next = {
            let rx = queue.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv_timeout(Duration::from_millis(250))
        };
        match next {
            Ok(stream) => {
                shared.waiting.fetch_sub(1, Ordering::SeqCst);
                // A bug in a handler must cost one connection, not a worker:
                // a dead worker would also leave its connection counted open
                // forever, and the idle exit would never come.
                let served = panic::catch_unwind(AssertUnwindSafe(|| {
                    conn::serve(stream, shared, &mut slot, &mut copy_buf)
                }));
                if served.is_err() {
                    log::error("a request handler panicked; its connection was dropped");
                    slot.reset();
                }
                activity.closed(1);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
