//! What a worker remembers of the store between requests, and when it must
//! forget it: [`Generation`]s and the per-connection [`InfoCache`].
//!
//! A cached answer is only as good as the signal that says the store has
//! changed. The local backend reads SQLite's `PRAGMA data_version`, which
//! changes whenever another connection (Nix) has committed since this one
//! last read (`docs/protocols.md` §8); the daemon backend reads the same
//! counter from the daemon's database when it can, else forgets on a short
//! clock (`daemon.rs`). Either way the signal is read *before* the look-up it
//! guards, so an answer can only be newer than its generation says, never
//! older: a path deleted by a committed transaction is never served again.
//!
//! The event loop reads the same signal through a
//! [`ChangeWatch`](super::sqlite::ChangeWatch) of its own, so that it can
//! answer a repeated narinfo request itself (`cache/narinfo/shared.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::bounded::BoundedMap;
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::HashPart;

/// One state of the store as a connection has seen it. Equal generations
/// mean "nothing has been committed in between", so whatever was true in one
/// is true in the other. Unique in the process: a new connection (after a
/// reconnect) never reuses one, so a cache kept outside the connection (the
/// rendered narinfo replies, `cache/narinfo.rs`) cannot outlive it by mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Generation {
    id: u64,
    born: Instant,
}

impl Generation {
    /// A generation no one has seen before. One atomic increment and a
    /// clock read, taken only when the store changed, never per request.
    pub fn fresh() -> Generation {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Generation {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            born: Instant::now(),
        }
    }

    /// When it began. Whatever a connection remembers under it was looked
    /// up after this (a new generation starts with an empty cache), so an
    /// answer given under it is at most `born.elapsed()` old: what a store
    /// that knows changes only by the clock (`ChangeSignal::Every`) bounds.
    pub fn born(&self) -> Instant {
        self.born
    }
}

/// Entries an [`InfoCache`] holds before it starts over (a PathInfo is a few
/// hundred bytes: about a megabyte per worker at most).
const INFOS: usize = 4096;

/// Look-ups by hash part, positive and negative, valid for one
/// [`Generation`]. One per store connection, so no lock.
pub struct InfoCache {
    generation: Generation,
    by_hash: BoundedMap<HashPart, Option<PathInfo>>,
}

impl Default for InfoCache {
    fn default() -> Self {
        InfoCache {
            generation: Generation::fresh(),
            by_hash: BoundedMap::new(INFOS),
        }
    }
}

impl InfoCache {
    #[cfg(test)]
    fn generation(&self) -> Generation {
        self.generation
    }

    /// The generation after the store's change signal said `changed`: a new
    /// one, with everything forgotten, if it did.
    pub fn after(&mut self, changed: bool) -> Generation {
        if changed {
            self.invalidate();
        }
        self.generation
    }

    /// The store may have changed: forget everything, under a new generation.
    pub fn invalidate(&mut self) {
        self.generation = Generation::fresh();
        self.by_hash.clear();
    }

    /// `Some(None)` is a remembered "absent".
    pub fn get(&self, hash: &HashPart) -> Option<&Option<PathInfo>> {
        self.by_hash.get(hash)
    }

    pub fn insert(&mut self, hash: HashPart, info: Option<PathInfo>) {
        self.by_hash.insert(hash, info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_unique() {
        let a = Generation::fresh();
        let b = Generation::fresh();
        assert_ne!(a, b);
        let hash = HashPart::repeating('a');
        let mut cache = InfoCache::default();
        let before = cache.generation();
        assert_ne!(before, InfoCache::default().generation());
        cache.insert(hash, None);
        cache.invalidate();
        assert_ne!(cache.generation(), before);
        assert!(cache.get(&hash).is_none());
    }

    #[test]
    fn remembers_absent() {
        let a = HashPart::repeating('a');
        let b = HashPart::repeating('b');
        let mut cache = InfoCache::default();
        cache.insert(a, None);
        assert_eq!(cache.get(&a), Some(&None));
        assert_eq!(cache.get(&b), None);
    }
}
