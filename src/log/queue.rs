//! The bounded queue between the threads that log and the one log thread
//! that writes.
//!
//! A caller (the event loop, a store worker, main) takes the lock for as
//! long as a push takes, never across I/O: it never waits for a sink. When
//! a queue is full the line is dropped and counted; the log thread says how
//! many once it has emptied the queue. The log thread swaps each queue for
//! an empty one and writes the whole batch with one `write` per sink.

use std::mem;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::limit::{Kind, Limiter, Report};
use super::sink::Sinks;
use super::text::lines;
use super::Level;

/// Bytes of diagnostics that may wait for the log thread (each line counted
/// [`LINE_COST`] more, for its own bookkeeping). Diagnostics are a few lines
/// at start-up and exit plus what goes wrong; past the rate limits
/// (`limit.rs`) at most about 150 lines a second can come, so this holds
/// about 1,000 lines of 200 bytes: seven seconds of the worst, far more
/// than a syslog socket or a disk takes to recover from a hiccup, and a
/// quarter of a megabyte at most.
pub(super) const DIAG_BYTES: usize = 256 * 1024;
/// Bytes of access lines that may wait: about 40,000 lines of 150 bytes
/// (a Nix client's request), three quarters of a second at the highest
/// rate measured here (54,000 narinfo requests a second, bench/README.md),
/// minutes at what a cache usually sees. A log that stays stalled longer
/// costs lines, never more than these 8 MiB.
pub(super) const ACCESS_BYTES: usize = 8 << 20;
/// What a queued line costs besides its bytes (the `String` and the
/// allocator's header), so that a flood of short lines is bounded too.
pub(super) const LINE_COST: usize = 64;

pub(super) struct Queue {
    state: Mutex<State>,
    /// The log thread waits here for work.
    work: Condvar,
    /// [`Queue::flush`] waits here for the log thread to catch up.
    done: Condvar,
}

#[derive(Default)]
struct State {
    diag: Vec<(Level, String)>,
    diag_bytes: usize,
    diag_dropped: u64,
    access: Vec<String>,
    access_bytes: usize,
    access_dropped: u64,
    /// Lines that are never dropped: a fatal error, and every diagnostic
    /// once the process is on its way out ([`Queue::exiting`]). Written
    /// after everything else in their batch.
    kept: Vec<(Level, String)>,
    exiting: bool,
    limiter: Limiter,
    reopen: bool,
    /// Flushes asked for, and the last the log thread has carried out.
    flush_asked: u64,
    flushed: u64,
    /// A flush that ran out of time: until the log thread has carried it
    /// out, the next flush does not wait (a dead sink costs one wait).
    gave_up: Option<u64>,
    /// The log thread waits for work: the next push must wake it (and only
    /// then: a wake-up is a system call the event loop would pay per line).
    idle: bool,
}

/// What the log thread took from the queue in one go, besides the lines.
struct Batch {
    kept: Vec<(Level, String)>,
    dropped_diag: u64,
    dropped_access: u64,
    reports: Vec<Report>,
    reopen: bool,
    /// The flush this batch completes (every line queued before it asked).
    flush: u64,
}

impl Queue {
    pub fn new() -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding it left a consistent state: every
        // change under the lock is a push or a swap.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the state, then wakes the log thread if it waits, after
    /// letting go of the lock so it does not wake into a held lock.
    fn push(&self, change: impl FnOnce(&mut State)) {
        let mut s = self.lock();
        change(&mut s);
        let wake = mem::take(&mut s.idle);
        drop(s);
        if wake {
            self.work.notify_one();
        }
    }

    pub fn diag(&self, level: Level, line: String) {
        let cost = line.len() + LINE_COST;
        self.push(|s| {
            if s.exiting {
                s.kept.push((level, line));
            } else if s.diag_bytes + cost > DIAG_BYTES {
                s.diag_dropped += 1;
            } else {
                s.diag_bytes += cost;
                s.diag.push((level, line));
            }
        });
    }

    pub fn access(&self, line: String) {
        let cost = line.len() + LINE_COST;
        self.push(|s| {
            if s.access_bytes + cost > ACCESS_BYTES {
                s.access_dropped += 1;
            } else {
                s.access_bytes += cost;
                s.access.push(line);
            }
        });
    }

    /// A line that must reach the sink whatever the queue holds.
    pub fn kept(&self, level: Level, line: String) {
        self.push(|s| s.kept.push((level, line)));
    }

    /// The process is exiting: from now on no diagnostic is dropped. What
    /// it says then (why it stops, the exit summary) must reach the log even
    /// if a stalled sink filled the queue; the threads still logging then
    /// are few and finishing, and [`Queue::flush`] bounds the wait.
    pub fn exiting(&self) {
        self.push(|s| s.exiting = true);
    }

    /// Whether a line of `kind` is within its rate limit now. The first
    /// line held back sets when the report is due: the log thread, if it
    /// waits without a deadline, is woken to wait for that one instead.
    pub fn admit(&self, kind: Kind, level: Level) -> bool {
        let mut s = self.lock();
        let due = s.limiter.next_due();
        let admitted = s.limiter.admit(kind, level, Instant::now());
        let wake = !admitted && s.limiter.next_due() != due && mem::take(&mut s.idle);
        drop(s);
        if wake {
            self.work.notify_one();
        }
        admitted
    }

    pub fn reopen(&self) {
        self.push(|s| s.reopen = true);
    }

    /// Waits until every line queued before the call is written, and the
    /// lines held back by the rate limits are counted in the log, for at
    /// most `limit`: a sink that never drains must not keep the process
    /// from exiting. False when `limit` ran out, or an earlier flush did
    /// and the log thread has not caught up since.
    pub fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut target = 0;
        self.push(|s| {
            s.flush_asked += 1;
            target = s.flush_asked;
        });
        let mut s = self.lock();
        while s.flushed < target {
            let now = Instant::now();
            if s.gave_up.is_some_and(|t| s.flushed < t) {
                return false;
            }
            if now >= deadline {
                s.gave_up = Some(target);
                return false;
            }
            s = (self.done.wait_timeout(s, deadline - now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// The log thread: writes what is queued, batch after batch, forever.
    pub fn run(&self, mut sinks: Sinks) {
        let (mut diag, mut access) = (Vec::new(), Vec::new());
        let mut flushed = 0;
        loop {
            let batch = self.take(&mut diag, &mut access);
            sinks.write_access(&access);
            diag.extend(about(&batch));
            diag.extend(batch.kept);
            sinks.write_diag(&diag);
            if batch.reopen {
                let said = sinks.reopen();
                sinks.write_diag(&said);
            }
            diag.clear();
            access.clear();
            if batch.flush > flushed {
                flushed = batch.flush;
                self.lock().flushed = flushed;
                self.done.notify_all();
            }
        }
    }

    /// Waits for work, then swaps the queues for `diag` and `access` (empty,
    /// with the capacity of earlier batches: pushes seldom reallocate).
    fn take(&self, diag: &mut Vec<(Level, String)>, access: &mut Vec<String>) -> Batch {
        let mut s = self.lock();
        loop {
            let now = Instant::now();
            let due = s.limiter.next_due();
            let flush = s.flush_asked > s.flushed;
            let work = !s.diag.is_empty()
                || !s.access.is_empty()
                || !s.kept.is_empty()
                || s.diag_dropped + s.access_dropped > 0
                || s.reopen
                || flush
                || due.is_some_and(|d| d <= now);
            if work {
                let all = flush || s.exiting;
                mem::swap(&mut s.diag, diag);
                mem::swap(&mut s.access, access);
                s.diag_bytes = 0;
                s.access_bytes = 0;
                return Batch {
                    kept: mem::take(&mut s.kept),
                    dropped_diag: mem::take(&mut s.diag_dropped),
                    dropped_access: mem::take(&mut s.access_dropped),
                    // Once the process is exiting (and before a flush),
                    // every count, however recent: ahead of the kept lines,
                    // so the exit line stays the last.
                    reports: s.limiter.reports(now, all),
                    reopen: mem::take(&mut s.reopen),
                    flush: s.flush_asked,
                };
            }
            s.idle = true;
            s = match due {
                Some(due) => {
                    (self.work.wait_timeout(s, due - now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self.work.wait(s).unwrap_or_else(PoisonError::into_inner),
            };
            s.idle = false;
        }
    }
}

/// What the log thread has to say about a batch: lines it dropped (the
/// queue has room again now that it was taken), lines the rate limits held
/// back.
fn about(batch: &Batch) -> Vec<(Level, String)> {
    let mut out = Vec::new();
    for (n, what) in [
        (batch.dropped_diag, "diagnostic"),
        (batch.dropped_access, "access log"),
    ] {
        if n > 0 {
            out.push((
                Level::Warning,
                format!("{} dropped: the log could not keep up", lines(n, what)),
            ));
        }
    }
    out.extend(batch.reports.iter().map(|r| (r.level, r.line())));
    out
}

#[cfg(test)]
mod tests;
