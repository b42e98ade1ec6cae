//! bcrypt within bounds. A verification costs milliseconds of CPU (cost 5,
//! `htpasswd -B`'s default, about 2 ms optimised; each step of cost doubles
//! it), so a client sending wrong passwords as fast as it can must not
//! take every core, nor every store worker.
//!
//! - At most `max` verifications run at once. A request that would start
//!   one more gets [`Slot::Busy`] at once, and the caller answers
//!   `503 Server busy.` with `Retry-After: 1`: never a queue, since a
//!   worker waiting for its turn is a worker taken from every other
//!   request.
//! - A request whose header is being verified already (a client's parallel
//!   first requests all carry the same one) waits for that verification's
//!   outcome instead of starting its own: one bcrypt per header, however
//!   many requests carry it at once. It waits at most [`WAIT_BOUND`].
//!
//! Failures are not remembered: the next request with the same wrong
//! header is verified again, within the same bound.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::basic::Key;

/// Longest a request waits for another's verification of its header. Far
/// above any sane cost (cost 12 takes about 250 ms); past it, `Busy`.
pub const WAIT_BOUND: Duration = Duration::from_secs(10);

pub struct Verifier<T> {
    max: usize,
    state: Mutex<State<T>>,
}

struct State<T> {
    running: usize,
    /// Requests waiting for another's verification: counted for the tests
    /// alone, which wait until enough are.
    #[cfg(test)]
    waiting: usize,
    flights: HashMap<Key, Arc<Flight<T>>>,
}

/// One verification in progress, and the outcome its waiters read.
struct Flight<T> {
    outcome: Mutex<Option<Option<T>>>,
    done: Condvar,
}

/// What [`Verifier::run`] came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot<T> {
    /// This request's verification, or the one it waited for.
    Done(T),
    /// Every slot is taken (or the one waited for failed to finish).
    Busy,
}

impl<T: Clone> Verifier<T> {
    /// At most `max` (at least 1) verifications at once.
    pub fn new(max: usize) -> Self {
        Verifier {
            max: max.max(1),
            state: Mutex::new(State {
                running: 0,
                #[cfg(test)]
                waiting: 0,
                flights: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `verify` for the header named `key`, or waits for the run
    /// already going on for it, or says `Busy`.
    pub fn run(&self, key: Key, verify: impl FnOnce() -> T) -> Slot<T> {
        let flight = {
            let mut s = self.state();
            if let Some(f) = s.flights.get(&key) {
                let f = f.clone();
                #[cfg(test)]
                {
                    s.waiting += 1;
                }
                drop(s);
                let outcome = wait(&f);
                #[cfg(test)]
                {
                    self.state().waiting -= 1;
                }
                return outcome;
            }
            if s.running >= self.max {
                return Slot::Busy;
            }
            s.running += 1;
            let f = Arc::new(Flight {
                outcome: Mutex::new(None),
                done: Condvar::new(),
            });
            s.flights.insert(key, f.clone());
            f
        };
        // Frees the slot and wakes the waiters even if `verify` panics.
        let mut landing = Landing {
            verifier: self,
            key,
            flight,
            outcome: None,
        };
        let outcome = verify();
        landing.outcome = Some(outcome.clone());
        drop(landing);
        Slot::Done(outcome)
    }

    #[cfg(test)]
    fn running(&self) -> usize {
        self.state().running
    }

    /// Waits (bounded) until `n` requests wait for another's verification.
    #[cfg(test)]
    fn until_waiting(&self, n: usize) {
        let start = std::time::Instant::now();
        while self.state().waiting < n {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "waiters never came"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn wait<T: Clone>(flight: &Flight<T>) -> Slot<T> {
    let guard = flight.outcome.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, _) = flight
        .done
        .wait_timeout_while(guard, WAIT_BOUND, |o| o.is_none())
        .unwrap_or_else(|e| e.into_inner());
    match &*guard {
        Some(Some(outcome)) => Slot::Done(outcome.clone()),
        _ => Slot::Busy,
    }
}

struct Landing<'a, T> {
    verifier: &'a Verifier<T>,
    key: Key,
    flight: Arc<Flight<T>>,
    outcome: Option<T>,
}

impl<T> Drop for Landing<'_, T> {
    fn drop(&mut self) {
        {
            let mut s = self
                .verifier
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            s.running -= 1;
            s.flights.remove(&self.key);
        }
        let mut o = self
            .flight
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *o = Some(self.outcome.take());
        self.flight.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;

    #[test]
    fn runs_at_most_max_at_once_and_refuses_the_rest() {
        let v = Arc::new(Verifier::<bool>::new(2));
        let (started_tx, started) = mpsc::channel();
        let (release_tx, release) = mpsc::channel::<()>();
        let release = Arc::new(Mutex::new(release));
        let runners: Vec<_> = (0..2u8)
            .map(|i| {
                let (v, started_tx, release) = (v.clone(), started_tx.clone(), release.clone());
                thread::spawn(move || {
                    v.run([i; 32], || {
                        started_tx.send(()).unwrap();
                        release.lock().unwrap().recv().unwrap();
                        true
                    })
                })
            })
            .collect();
        started.recv().unwrap();
        started.recv().unwrap();
        assert_eq!(v.running(), 2);
        // A third header while both slots are taken: refused, not queued.
        assert_eq!(v.run([9; 32], || unreachable!()), Slot::Busy);
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        for r in runners {
            assert_eq!(r.join().unwrap(), Slot::Done(true));
        }
        assert_eq!(v.running(), 0);
        assert_eq!(v.run([9; 32], || false), Slot::Done(false));
    }

    /// A verification of header `[1; 32]` that has started and ends with
    /// `outcome` once the returned sender says so.
    fn held<T: Clone + Send + 'static>(
        v: &Arc<Verifier<T>>,
        outcome: impl FnOnce() -> T + Send + 'static,
    ) -> (thread::JoinHandle<Slot<T>>, mpsc::Sender<()>) {
        let (started_tx, started) = mpsc::channel();
        let (release_tx, release) = mpsc::channel::<()>();
        let v = v.clone();
        let first = thread::spawn(move || {
            v.run([1; 32], || {
                started_tx.send(()).unwrap();
                release.recv().unwrap();
                outcome()
            })
        });
        started.recv().unwrap();
        (first, release_tx)
    }

    #[test]
    fn the_same_header_waits_for_the_verification_in_flight() {
        let v = Arc::new(Verifier::<u32>::new(1));
        let (first, release_tx) = held(&v, || 7);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let v = v.clone();
                thread::spawn(move || v.run([1; 32], || unreachable!("a second bcrypt")))
            })
            .collect();
        v.until_waiting(3);
        release_tx.send(()).unwrap();
        assert_eq!(first.join().unwrap(), Slot::Done(7));
        for w in waiters {
            assert_eq!(w.join().unwrap(), Slot::Done(7));
        }
    }

    #[test]
    fn a_panicking_verification_frees_its_slot_and_its_waiters() {
        let v = Arc::new(Verifier::<bool>::new(1));
        let (first, release_tx) = held(&v, || panic!("bcrypt blew up"));
        let waiter = {
            let v = v.clone();
            thread::spawn(move || v.run([1; 32], || true))
        };
        v.until_waiting(1);
        release_tx.send(()).unwrap();
        assert!(first.join().is_err());
        assert_eq!(waiter.join().unwrap(), Slot::Busy);
        assert_eq!(v.running(), 0);
        assert_eq!(v.run([1; 32], || true), Slot::Done(true));
    }
}
