//! The store workers: a pool of threads, each owning one [`Worker`] (its
//! own store connection). A thread is busy only while a response is
//! computed or the next chunk of a computed body is read; never while a
//! client is slow to send or to read (the event loop holds those).
//!
//! Threads start on demand, up to one per worker: the first at start-up,
//! another only when a job finds every started thread busy. A process that
//! socket activation starts for one request spawns one thread for it, not
//! `--workers` of them (bench/README.md, "Cold start"), and a quiet server
//! holds no threads it has never needed.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::http::request::Head;
use crate::http::response::Response;
use crate::http::Worker;
use crate::log;

/// Which connection a job belongs to: its slot in the loop, and the slot's
/// generation, so a late answer never reaches a newer connection there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ConnId {
    pub index: usize,
    pub generation: u64,
}

pub(super) enum Job {
    /// Answer this request.
    Respond { id: ConnId, head: Head },
    /// Read the next chunk of a computed body into `buf` (cleared first).
    Fill {
        id: ConnId,
        reader: Box<dyn Read + Send>,
        buf: Vec<u8>,
        want: usize,
    },
}

pub(super) enum Done {
    /// `None`: the handler panicked; the connection is dropped.
    Responded {
        id: ConnId,
        answer: Box<(Head, Option<Response>)>,
    },
    /// `Ok(0)` is the end of the body.
    Filled {
        id: ConnId,
        reader: Box<dyn Read + Send>,
        buf: Vec<u8>,
        result: io::Result<usize>,
    },
}

/// The workers' threads are detached: each ends when the job queue closes
/// after the job at hand, or with the process. Only the event loop submits.
pub(super) struct Pool {
    jobs: Option<Sender<Job>>,
    /// What each new thread needs: the queue's receiving end, where its
    /// answers go, and how it wakes the loop.
    shared: Shared,
    /// Workers whose thread has not started yet, started in order, and
    /// the count of those started. Only the loop's thread touches them.
    unstarted: RefCell<std::vec::IntoIter<Worker>>,
    started: Cell<usize>,
    /// Threads waiting for a job minus jobs no thread has taken yet: a job
    /// that makes it negative has no thread to run it at once.
    slack: Arc<AtomicIsize>,
}

#[derive(Clone)]
struct Shared {
    jobs: Arc<Mutex<Receiver<Job>>>,
    done: Sender<Done>,
    notify: Arc<dyn Fn() + Send + Sync>,
}

impl Pool {
    /// Starts the first worker's thread; the others start when jobs need
    /// them. `notify` is called after every answer so the event loop wakes
    /// to send it.
    pub fn start(
        workers: Vec<Worker>,
        done: Sender<Done>,
        notify: Arc<dyn Fn() + Send + Sync>,
    ) -> io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let pool = Pool {
            jobs: Some(tx),
            shared: Shared {
                jobs: Arc::new(Mutex::new(rx)),
                done,
                notify,
            },
            unstarted: RefCell::new(workers.into_iter()),
            started: Cell::new(0),
            slack: Arc::new(AtomicIsize::new(0)),
        };
        pool.start_thread()?;
        Ok(pool)
    }

    /// Starts the next worker's thread, if one is left.
    fn start_thread(&self) -> io::Result<()> {
        let Some(worker) = self.unstarted.borrow_mut().next() else {
            return Ok(());
        };
        let (shared, slack) = (self.shared.clone(), self.slack.clone());
        // Counted as waiting from now: it will be as soon as it runs.
        self.slack.fetch_add(1, Ordering::SeqCst);
        let spawned = thread::Builder::new()
            .name(format!("worker-{}", self.started.get()))
            .spawn(move || run(worker, &shared, &slack));
        if let Err(e) = spawned {
            self.slack.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        self.started.set(self.started.get() + 1);
        Ok(())
    }

    pub fn submit(&self, job: Job) {
        let Some(tx) = &self.jobs else { return };
        // The workers outlive the sender; a send fails only after a panic
        // outside the handler, and then the job is dropped.
        if tx.send(job).is_err() {
            return;
        }
        if self.slack.fetch_sub(1, Ordering::SeqCst) <= 0 {
            // Every started thread is busy. Without a new one the job
            // waits for the first to finish, which is correct, only slower.
            if let Err(e) = self.start_thread() {
                log::warn(&format!(
                    "cannot start another worker thread ({} running): {e}",
                    self.started.get()
                ));
            }
        }
    }

    /// No more jobs: each thread ends after the job at hand.
    pub fn close(&mut self) {
        self.jobs = None;
    }
}

fn run(mut worker: Worker, shared: &Shared, slack: &AtomicIsize) {
    loop {
        let job = {
            let rx = shared.jobs.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(job) = job else { return };
        let answer = match job {
            Job::Respond { id, head } => {
                // A bug in a handler must cost one connection, not a worker.
                let response = panic::catch_unwind(AssertUnwindSafe(|| worker.respond(&head)));
                if response.is_err() {
                    log::error(&format!(
                        "the handler for {} {} panicked; its connection was dropped",
                        head.method.as_str(),
                        head.target
                    ));
                    worker.reset();
                }
                Done::Responded {
                    id,
                    answer: Box::new((head, response.ok())),
                }
            }
            Job::Fill {
                id,
                mut reader,
                mut buf,
                want,
            } => {
                let result = fill(&mut *reader, &mut buf, want);
                Done::Filled {
                    id,
                    reader,
                    buf,
                    result,
                }
            }
        };
        // Waiting again from now on: counted before the answer goes out,
        // so a job the answer leads to sees this thread as free.
        slack.fetch_add(1, Ordering::SeqCst);
        if shared.done.send(answer).is_err() {
            return;
        }
        (shared.notify)();
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
