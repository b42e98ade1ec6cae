//! The store workers: a fixed pool of threads, each owning one
//! [`Worker`] (its own store connection). A thread is busy only while a
//! response is computed or the next chunk of a computed body is read; never
//! while a client is slow to send or to read (the event loop holds those).

use std::io::{self, Read};
use std::panic::{self, AssertUnwindSafe};
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
/// after the job at hand, or with the process.
pub(super) struct Pool {
    jobs: Option<Sender<Job>>,
}

impl Pool {
    /// One thread per worker. `notify` is called after every answer so the
    /// event loop wakes to send it.
    pub fn start(
        workers: Vec<Worker>,
        done: Sender<Done>,
        notify: Arc<dyn Fn() + Send + Sync>,
    ) -> io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for (i, worker) in workers.into_iter().enumerate() {
            let (rx, done, notify) = (rx.clone(), done.clone(), notify.clone());
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || run(worker, &rx, &done, &*notify))?;
        }
        Ok(Pool { jobs: Some(tx) })
    }

    pub fn submit(&self, job: Job) {
        if let Some(tx) = &self.jobs {
            // The workers outlive the sender; a send fails only after a
            // panic outside the handler, and then the job is dropped.
            let _ = tx.send(job);
        }
    }

    /// No more jobs: each thread ends after the job at hand.
    pub fn close(&mut self) {
        self.jobs = None;
    }
}

fn run(mut worker: Worker, jobs: &Mutex<Receiver<Job>>, done: &Sender<Done>, notify: &dyn Fn()) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
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
        if done.send(answer).is_err() {
            return;
        }
        notify();
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
