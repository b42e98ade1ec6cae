//! The engine's two thread pools, one type: **workers**, each owning one
//! [`Handler`] (its own store connection) that computes replies, and
//! **body threads**, which send file-backed bodies and read computed ones,
//! and may wait for a disk while doing it. Neither ever holds a client
//! that is slow to send or to read: the event loops hold those.
//!
//! Threads start on demand, up to the pool's maximum: a job that finds
//! every started thread busy starts another, while fewer than the pool's
//! `eager` count run; past it, only when the threads are stuck, no job
//! taken from the queue for [`STUCK`] (they wait for a disk): more threads
//! then keep more reads in flight, while more threads for work that only
//! needs the CPU would only share the same cores (and each costs a stack:
//! 256 downloads at once once started 32 threads and ran a process under
//! a 64 MiB address-space limit out of memory). A process that socket
//! activation starts for one request spawns one worker for it
//! (bench/README.md, "Cold start"). Answers go back to the loop that owns
//! the connection, through its channel, and wake it.
//!
//! A panic in any job costs that job's connection, never the thread, its
//! place in the pool or the idle exit: it is caught, logged, and answered
//! as a failure the loop turns into a close.

use std::io::{self, Read};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::log;

use super::app::{Application, Handler, Request, Response};
use super::body::{self, SegmentsBody, SendOutcome};
use super::sock::Sock;

/// How long no thread may take a queued job before the pool grows past
/// its `eager` count.
const STUCK: Duration = Duration::from_millis(20);

/// Which connection a job belongs to: its loop, its slot there, and its
/// serial number on that loop, so a late answer never reaches a newer
/// connection in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ConnId {
    pub lp: usize,
    pub index: usize,
    pub serial: u64,
}

pub(super) enum Job {
    /// Answer this request (workers only).
    Respond { id: ConnId, request: Request },
    /// Read the next chunk of a computed body into `buf` (cleared first).
    Fill {
        id: ConnId,
        reader: Box<dyn Read + Send>,
        buf: Vec<u8>,
        want: usize,
    },
    /// Send what `body` has for `sock`, up to `budget` bytes.
    Send {
        id: ConnId,
        sock: Arc<Sock>,
        body: Box<SegmentsBody>,
        budget: u64,
    },
}

impl Job {
    fn id(&self) -> ConnId {
        match self {
            Job::Respond { id, .. } | Job::Fill { id, .. } | Job::Send { id, .. } => *id,
        }
    }
}

pub(super) enum Done {
    /// `response` is `None` when the handler panicked: the connection is
    /// dropped.
    Responded {
        id: ConnId,
        request: Box<Request>,
        response: Option<Response>,
    },
    /// `Ok(0)` is the end of the body; `reader` is `None` after a panic.
    Filled {
        id: ConnId,
        reader: Option<Box<dyn Read + Send>>,
        buf: Vec<u8>,
        result: io::Result<usize>,
    },
    /// `body` is `None` after a panic (the outcome says so).
    Sent {
        id: ConnId,
        body: Option<Box<SegmentsBody>>,
        outcome: SendOutcome,
    },
}

/// Where a loop's answers go, and how to wake it.
pub(super) struct LoopLink {
    pub done: Sender<Done>,
    pub waker: Arc<mio::Waker>,
}

pub(super) struct Pool {
    name: &'static str,
    /// The queue's sending end; the threads end with the process.
    jobs: Mutex<Option<Sender<Job>>>,
    queue: Arc<Mutex<Receiver<Job>>>,
    links: Arc<[LoopLink]>,
    /// Makes each worker's handler; body threads have none.
    app: Option<Arc<dyn Application>>,
    /// Threads started whenever a job finds all busy; up to `max` only
    /// when they are stuck.
    eager: usize,
    max: usize,
    /// A thread's stack: workers run SQLite and the signing code, body
    /// threads a loop of system calls.
    stack: usize,
    started: AtomicUsize,
    /// Threads waiting for a job minus jobs no thread has taken yet: a job
    /// that makes it negative has no thread to run it at once.
    slack: Arc<AtomicIsize>,
    /// When a thread last took a job, in ms since `epoch`.
    last_take: Arc<AtomicU64>,
    epoch: Instant,
}

impl Pool {
    /// The workers: up to `max`, each started when a request finds the
    /// others busy, each with a handler `app` makes.
    pub fn workers(max: usize, links: Arc<[LoopLink]>, app: Arc<dyn Application>) -> Pool {
        Pool::new("worker", max, max, 2 << 20, links, Some(app))
    }

    /// The body threads: `eager` started as bodies need them, up to `max`
    /// when those wait for a disk.
    pub fn bodies(eager: usize, max: usize, links: Arc<[LoopLink]>) -> Pool {
        Pool::new("body", eager, max, 256 << 10, links, None)
    }

    fn new(
        name: &'static str,
        eager: usize,
        max: usize,
        stack: usize,
        links: Arc<[LoopLink]>,
        app: Option<Arc<dyn Application>>,
    ) -> Pool {
        let (tx, rx) = mpsc::channel::<Job>();
        Pool {
            name,
            jobs: Mutex::new(Some(tx)),
            queue: Arc::new(Mutex::new(rx)),
            links,
            app,
            eager: eager.clamp(1, max.max(1)),
            max: max.max(1),
            stack,
            started: AtomicUsize::new(0),
            slack: Arc::new(AtomicIsize::new(0)),
            last_take: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        }
    }

    /// Starts the first thread, so the first request finds one waiting.
    pub fn start_first(&self) -> io::Result<()> {
        self.start_thread()
    }

    /// Starts another thread, if the pool is not at its maximum.
    fn start_thread(&self) -> io::Result<()> {
        let n = self.started.fetch_add(1, Ordering::SeqCst);
        if n >= self.max {
            self.started.fetch_sub(1, Ordering::SeqCst);
            return Ok(());
        }
        let ctx = ThreadCtx {
            queue: self.queue.clone(),
            links: self.links.clone(),
            app: self.app.clone(),
            slack: self.slack.clone(),
            last_take: self.last_take.clone(),
            epoch: self.epoch,
        };
        // Counted as waiting from now: it will be as soon as it runs.
        self.slack.fetch_add(1, Ordering::SeqCst);
        let spawned = thread::Builder::new()
            .name(format!("{}-{n}", self.name))
            .stack_size(self.stack)
            .spawn(move || ctx.run());
        if let Err(e) = spawned {
            self.slack.fetch_sub(1, Ordering::SeqCst);
            self.started.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }

    pub fn submit(&self, job: Job) {
        {
            let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            let Some(tx) = jobs.as_ref() else { return };
            // The threads outlive the sender; a send fails only when every
            // thread is gone, and then the job is dropped with its
            // connection.
            if tx.send(job).is_err() {
                return;
            }
        }
        if self.slack.fetch_sub(1, Ordering::SeqCst) <= 0 {
            // Every started thread is busy. Without a new one the job
            // waits for the first to finish, which is correct, only slower.
            if self.started.load(Ordering::SeqCst) < self.eager {
                self.grow();
            } else {
                self.grow_if_stuck();
            }
        }
    }

    /// Starts another thread if jobs wait and no thread has taken one for
    /// [`STUCK`]. The loops call it at every tick, so a pool whose threads
    /// all wait for a disk grows even when no new job comes.
    pub fn grow_if_stuck(&self) {
        if self.slack.load(Ordering::SeqCst) >= 0 {
            return;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_take.load(Ordering::SeqCst);
        if now.saturating_sub(last) < STUCK.as_millis() as u64 {
            return;
        }
        // One thread per STUCK at most, however many loops look.
        if self
            .last_take
            .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.grow();
        }
    }

    fn grow(&self) {
        if let Err(e) = self.start_thread() {
            log::warn(&format!(
                "cannot start another {} thread ({} running): {e}",
                self.name,
                self.started.load(Ordering::SeqCst)
            ));
        }
    }
}

/// What one pool thread needs.
struct ThreadCtx {
    queue: Arc<Mutex<Receiver<Job>>>,
    links: Arc<[LoopLink]>,
    app: Option<Arc<dyn Application>>,
    slack: Arc<AtomicIsize>,
    last_take: Arc<AtomicU64>,
    epoch: Instant,
}

impl ThreadCtx {
    fn run(self) {
        let mut handler: Option<Box<dyn Handler>> = None;
        loop {
            let job = {
                let rx = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                rx.recv()
            };
            let Ok(job) = job else { return };
            let now = self.epoch.elapsed().as_millis() as u64;
            self.last_take.fetch_max(now, Ordering::SeqCst);
            let id = job.id();
            let done = self.run_job(job, &mut handler);
            // Waiting again from now on: counted before the answer goes
            // out, so a job the answer leads to sees this thread as free.
            self.slack.fetch_add(1, Ordering::SeqCst);
            let Some(link) = self.links.get(id.lp) else {
                continue;
            };
            // A loop that is gone (the process is stopping) takes no more.
            if link.done.send(done).is_ok() {
                let _ = link.waker.wake();
            }
        }
    }

    fn run_job(&self, job: Job, handler: &mut Option<Box<dyn Handler>>) -> Done {
        match job {
            Job::Respond { id, request } => {
                let response = panic::catch_unwind(AssertUnwindSafe(|| {
                    let app = self
                        .app
                        .as_ref()
                        .expect("a worker pool has the application");
                    handler
                        .get_or_insert_with(|| app.handler())
                        .respond(&request)
                }));
                if response.is_err() {
                    log::error(&format!(
                        "the handler for {} {} panicked; its connection was dropped",
                        request.method.as_str(),
                        request.target
                    ));
                    if let Some(h) = handler {
                        // A reset that panics too loses the handler; the
                        // next request makes a new one.
                        if panic::catch_unwind(AssertUnwindSafe(|| h.reset())).is_err() {
                            *handler = None;
                        }
                    }
                }
                Done::Responded {
                    id,
                    request: Box::new(request),
                    response: response.ok(),
                }
            }
            Job::Fill {
                id,
                mut reader,
                mut buf,
                want,
            } => {
                let filled =
                    panic::catch_unwind(AssertUnwindSafe(|| fill(&mut *reader, &mut buf, want)));
                match filled {
                    Ok(result) => Done::Filled {
                        id,
                        reader: Some(reader),
                        buf,
                        result,
                    },
                    Err(_) => Done::Filled {
                        id,
                        reader: None,
                        buf: Vec::new(),
                        result: Err(io::Error::other("the body's reader panicked")),
                    },
                }
            }
            Job::Send {
                id,
                sock,
                mut body,
                budget,
            } => {
                let others_wait = || self.slack.load(Ordering::Relaxed) < 0;
                let sent = panic::catch_unwind(AssertUnwindSafe(|| {
                    body::send(&mut body, &sock, budget, &others_wait)
                }));
                match sent {
                    Ok(outcome) => Done::Sent {
                        id,
                        body: Some(body),
                        outcome,
                    },
                    Err(_) => Done::Sent {
                        id,
                        body: None,
                        outcome: SendOutcome {
                            written: 0,
                            end: body::SendEnd::Failed("the body's source panicked".into()),
                        },
                    },
                }
            }
        }
    }
}

/// Reads until `buf` holds `want` bytes or the reader ends.
fn fill(reader: &mut dyn Read, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    buf.clear();
    buf.resize(want, 0);
    let mut n = 0;
    let result = loop {
        if n == want {
            break Ok(n);
        }
        match reader.read(&mut buf[n..]) {
            Ok(0) => break Ok(n),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    buf.truncate(n);
    result
}
