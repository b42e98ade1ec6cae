//! The narinfo replies the event loop answers by itself (issue 15): rendered,
//! signed bytes (`None`: 404) that the workers file after answering, and
//! that the loop sends in the turn it parsed the head, with no hand-off to a
//! worker and back. Only a miss goes to a worker.
//!
//! # Why a reply served from here is never stale
//!
//! The guarantee is the one of `store/cache.rs`: once a transaction that
//! deletes (or re-registers) a path has committed, no request whose head is
//! parsed afterwards gets the old answer. It rests on an *epoch* that only
//! the loop advances, and on two rules:
//!
//! 1. The loop, for every request, first reads the store's change signal
//!    through its own [`ChangeWatch`](crate::store::sqlite::ChangeWatch)
//!    (its own read-only connection, `PRAGMA data_version`), and if it says
//!    "changed" it starts a new epoch (forgetting every reply) *before* it
//!    looks a reply up. A signal it cannot read (`Look::Unknown`) sends the
//!    request to a worker.
//! 2. A worker takes a [`Ticket`] (the epoch now) *before* its own look-up
//!    (before it even reads its store's generation), and its reply is filed
//!    only if the epoch is still that one when it files.
//!
//! Say a transaction C committed before the loop's look at the signal for a
//! request R, and R is answered from here with a reply filed under epoch e.
//! Let L be the loop's first look after C committed; L comes no later than
//! R's look. `data_version` differs from the previous look whenever another
//! connection committed in between, so L started an epoch e_L. Epochs only
//! grow, and a reply is filed only under the epoch current when it is filed
//! and is forgotten when the next one starts; the reply is still there at R,
//! so e >= e_L. The worker read e from [`SharedNarinfos::ticket`], which the loop
//! published (release; the worker acquires) after L; so the worker's
//! look-up, which followed its ticket, started after L and hence after C
//! committed, and saw C: its reply is no older than C. A worker whose
//! look-up began before C holds a ticket below e_L, and its filing is
//! refused, however late it arrives.
//!
//! Without a database to read (the daemon backend with
//! `ChangeSignal::Every(d)`), there is no epoch to start on a change: a
//! reply is used only while younger than d, counted from the start of the
//! worker's store generation it was computed under
//! ([`crate::store::Generation::born`]), which the worker's own answers are
//! bounded by too; so the README's bound holds for the loop's answers.
//!
//! `--serve-closure-of`: a reply is filed with the closure its worker
//! filtered by, and the loop serves it only while that same closure (the
//! same `Arc`, never freed while held here) is current; a new closure starts
//! a new epoch as a change of the store does.
//!
//! Bounded as a worker's `WorkerNarinfos` is: [`SHARED_REPLIES`] replies,
//! then it starts over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bounded::BoundedMap;
use crate::nix::store_path::HashPart;
use crate::store::closure::Closure;
use crate::store::daemon::ChangeSignal;

/// Replies held for all the loops before they start over: a rendered
/// narinfo is about 500 bytes, so a couple of megabytes in all, and the
/// hot set of a busy cache (a closure's few thousand paths) fits.
const SHARED_REPLIES: usize = 4096;

/// The replies, shared by the workers (who file) and the loop (who reads).
/// One lock, held for a map operation: the loop takes it once a request,
/// a worker once a miss.
pub struct SharedNarinfos {
    /// The current epoch, for the workers' tickets without the lock.
    epoch: AtomicU64,
    state: Mutex<State>,
    /// `Some(d)`: no change signal; a reply older than d is not used.
    max_age: Option<Duration>,
}

struct State {
    epoch: u64,
    /// The closure the replies were filtered by (`--serve-closure-of`).
    closure: Option<Arc<Closure>>,
    by_hash: BoundedMap<HashPart, Entry>,
}

struct Entry {
    body: Option<Vec<u8>>,
    /// The start of the store generation it was computed under.
    as_of: Instant,
}

/// What a worker read before its look-up: the epoch and the closure its
/// reply will be filed under.
pub struct Ticket {
    epoch: u64,
    closure: Option<Arc<Closure>>,
}

fn same(a: &Option<Arc<Closure>>, b: &Option<Arc<Closure>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

impl SharedNarinfos {
    /// The replies for a store that tells of its changes by `signal`: with
    /// a database to read, kept until a change; without, for at most the
    /// signal's period.
    pub fn for_signal(signal: &ChangeSignal) -> Self {
        SharedNarinfos::new(match signal {
            ChangeSignal::Database(_) => None,
            ChangeSignal::Every(period) => Some(*period),
        })
    }

    /// `max_age`: see [`SharedNarinfos::max_age`].
    pub fn new(max_age: Option<Duration>) -> Self {
        SharedNarinfos {
            epoch: AtomicU64::new(0),
            state: Mutex::new(State {
                epoch: 0,
                closure: None,
                by_hash: BoundedMap::new(SHARED_REPLIES),
            }),
            max_age,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A worker's ticket, taken before its look-up; `closure` is the one
    /// it filters by.
    pub fn ticket(&self, closure: Option<Arc<Closure>>) -> Ticket {
        Ticket {
            epoch: self.epoch.load(Ordering::Acquire),
            closure,
        }
    }

    /// Files a worker's reply for `hash`, computed under `ticket` from a
    /// store generation born at `as_of`; dropped if the loop has started
    /// another epoch since the ticket.
    pub fn file(&self, ticket: Ticket, hash: HashPart, body: Option<Vec<u8>>, as_of: Instant) {
        let mut s = self.state();
        if s.epoch != ticket.epoch || !same(&s.closure, &ticket.closure) {
            return;
        }
        s.by_hash.insert(hash, Entry { body, as_of });
    }

    /// The loop's look-up, after its look at the change signal said
    /// `changed` or not, with `closure` current: the reply to send, if one
    /// is known valid now (`Some(None)`: 404).
    pub fn get(
        &self,
        hash: &HashPart,
        changed: bool,
        closure: Option<Arc<Closure>>,
        now: Instant,
    ) -> Option<Option<Vec<u8>>> {
        let mut s = self.state();
        if changed || !same(&s.closure, &closure) {
            self.next_epoch(&mut s, closure);
            return None;
        }
        let entry = s.by_hash.get(hash)?;
        if self
            .max_age
            .is_some_and(|max| now.saturating_duration_since(entry.as_of) >= max)
        {
            return None;
        }
        Some(entry.body.clone())
    }

    /// A loop's first look at the change signal, which cannot tell what
    /// changed before it: a new epoch, as any change starts.
    pub fn first_look(&self, closure: Option<Arc<Closure>>) {
        let mut s = self.state();
        self.next_epoch(&mut s, closure);
    }

    fn next_epoch(&self, s: &mut State, closure: Option<Arc<Closure>>) {
        s.epoch += 1;
        self.epoch.store(s.epoch, Ordering::Release);
        s.by_hash.clear();
        s.closure = closure;
    }

    /// `Some(d)` when there is no change signal and a reply is trusted for
    /// d at most (zero: never).
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_computed_before_a_change_is_never_filed_after_it() {
        let a = HashPart::repeating('a');
        let r = SharedNarinfos::new(None);
        let now = Instant::now();
        // The loop's first look always says "changed".
        assert_eq!(r.get(&a, true, None, now), None);
        let before = r.ticket(None);
        r.file(r.ticket(None), a, Some(b"old".to_vec()), now);
        assert_eq!(r.get(&a, false, None, now), Some(Some(b"old".to_vec())));
        // A commit, seen by the loop: forgotten, and a late filing of a
        // look-up that started before it is refused.
        assert_eq!(r.get(&a, true, None, now), None);
        r.file(before, a, Some(b"old".to_vec()), now);
        assert_eq!(r.get(&a, false, None, now), None);
        r.file(r.ticket(None), a, None, now);
        assert_eq!(r.get(&a, false, None, now), Some(None));
    }

    #[test]
    fn another_closure_is_another_epoch() {
        let a = HashPart::repeating('a');
        let r = SharedNarinfos::new(None);
        let now = Instant::now();
        let (c1, c2) = (Arc::new(Closure::default()), Arc::new(Closure::default()));
        assert_eq!(r.get(&a, true, Some(c1.clone()), now), None);
        r.file(r.ticket(Some(c2.clone())), a, None, now);
        assert_eq!(r.get(&a, false, Some(c1.clone()), now), None);
        r.file(r.ticket(Some(c1.clone())), a, None, now);
        assert_eq!(r.get(&a, false, Some(c1.clone()), now), Some(None));
        assert_eq!(r.get(&a, false, Some(c2), now), None, "switched");
        assert_eq!(r.get(&a, false, Some(c1), now), None);
    }

    #[test]
    fn without_a_signal_a_reply_ages_out() {
        let a = HashPart::repeating('a');
        let r = SharedNarinfos::new(Some(Duration::from_secs(1)));
        let born = Instant::now();
        r.file(r.ticket(None), a, None, born);
        assert_eq!(r.get(&a, false, None, born), Some(None));
        let later = born + Duration::from_millis(999);
        assert_eq!(r.get(&a, false, None, later), Some(None));
        let late = born + Duration::from_secs(1);
        assert_eq!(r.get(&a, false, None, late), None);
    }
}
