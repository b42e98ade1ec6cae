//! The one kind of memory kept here between requests: a map that never
//! holds more than its bound, and starts over when a new key finds it full.
//!
//! Starting over is crude, but bounded and O(1) amortised, and what is
//! remembered (narinfo replies, path infos, signatures, upstream answers)
//! is a cache of a hot set that refills at once: a scan of a large store
//! cannot grow it, and no per-entry bookkeeping (an LRU's list) is paid on
//! the hot path. Each user names its own bound and says why that size.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

pub struct BoundedMap<K, V> {
    map: HashMap<K, V>,
    bound: usize,
}

impl<K: Eq + Hash, V> BoundedMap<K, V> {
    /// An empty map that holds at most `bound` entries (at least one).
    pub fn new(bound: usize) -> Self {
        BoundedMap {
            map: HashMap::new(),
            bound: bound.max(1),
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.get(key)
    }

    /// Remembers `value` under `key`, forgetting everything first if the
    /// map is full and `key` is new.
    pub fn insert(&mut self, key: K, value: V) {
        self.make_room(&key, |_, _| false);
        self.map.insert(key, value);
    }

    /// As [`Self::insert`], but a full map first drops the entries `stale`
    /// picks, and starts over only if that leaves it full.
    pub fn insert_or_prune(&mut self, key: K, value: V, stale: impl FnMut(&K, &V) -> bool) {
        self.make_room(&key, stale);
        self.map.insert(key, value);
    }

    /// The value under `key`, made by `make` (and remembered as
    /// [`Self::insert`] does) when there is none.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce(&K) -> V) -> &mut V {
        self.make_room(&key, |_, _| false);
        self.map.entry(key).or_insert_with_key(make)
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.remove(key)
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn make_room(&mut self, key: &K, mut stale: impl FnMut(&K, &V) -> bool) {
        if self.map.len() < self.bound || self.map.contains_key(key) {
            return;
        }
        self.map.retain(|k, v| !stale(k, v));
        if self.map.len() >= self.bound {
            self.map.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_holds_more_than_its_bound_and_starts_over_when_full() {
        let mut m = BoundedMap::new(3);
        for i in 0..3 {
            m.insert(i, i * 10);
        }
        assert_eq!(m.len(), 3);
        // A key already there is replaced, nothing forgotten.
        m.insert(2, 21);
        assert_eq!((m.len(), m.get(&0), m.get(&2)), (3, Some(&0), Some(&21)));
        // A new key finds it full: everything else is forgotten.
        m.insert(3, 30);
        assert_eq!((m.len(), m.get(&0), m.get(&3)), (1, None, Some(&30)));
        for i in 0..100 {
            m.insert(i, i);
            assert!(m.len() <= 3);
        }
        assert_eq!(m.remove(&99), Some(99));
        assert_eq!(m.get(&99), None);
        m.clear();
        assert!(m.is_empty());
    }

    #[test]
    fn get_or_insert_with_makes_a_value_only_when_missing() {
        let mut m = BoundedMap::new(2);
        assert_eq!(*m.get_or_insert_with("a", |k| k.len()), 1);
        assert_eq!(*m.get_or_insert_with("a", |_| 99), 1);
        m.get_or_insert_with("bb", |k| k.len());
        assert_eq!(*m.get_or_insert_with("ccc", |k| k.len()), 3);
        assert_eq!((m.len(), m.get("a")), (1, None));
    }

    #[test]
    fn a_full_map_drops_what_is_stale_before_it_starts_over() {
        let mut m = BoundedMap::new(3);
        for (k, expires) in [(1, 5), (2, 50), (3, 5)] {
            m.insert(k, expires);
        }
        let now = 10;
        m.insert_or_prune(4, 60, |_, expires| *expires <= now);
        assert_eq!((m.len(), m.get(&2), m.get(&4)), (2, Some(&50), Some(&60)));
        // Nothing stale: it starts over as `insert` does.
        m.insert(5, 70);
        m.insert_or_prune(6, 80, |_, expires| *expires <= now);
        assert_eq!((m.len(), m.get(&6)), (1, Some(&80)));
    }

    #[test]
    fn a_bound_of_zero_still_keeps_the_last_entry() {
        let mut m = BoundedMap::new(0);
        m.insert(1, ());
        m.insert(2, ());
        assert_eq!((m.len(), m.get(&2)), (1, Some(&())));
    }
}
