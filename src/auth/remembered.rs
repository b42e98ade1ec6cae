//! Credentials verified once, remembered for the life of the process, so
//! that a client's next requests cost a SHA-256 and a map look-up instead
//! of a bcrypt (milliseconds), and the event loop can let them through
//! without a worker. Only successes are remembered, under the hash of the
//! header value ([`super::basic::key`]), never the password.
//!
//! Bounded per user: a user's credentials can be spelled in several
//! headers (`Basic` or `basic`, more spaces, bytes past bcrypt's 72 that
//! bcrypt ignores), each verified on its own. A user keeps the last
//! [`PER_USER`] of them, so the map holds at most that many entries per
//! line of the file, however a client (even one with a valid password)
//! varies its headers; a spelling pushed out is verified again when it
//! comes back, which costs only its own sender time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::basic::Key;

/// Header spellings remembered per user. A real client sends one.
pub const PER_USER: usize = 4;

#[derive(Default)]
pub struct Remembered {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_key: HashMap<Key, Arc<str>>,
    /// Each user's keys, oldest first.
    by_user: HashMap<Arc<str>, VecDeque<Key>>,
}

impl Remembered {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The user a header with this key was verified for.
    pub fn get(&self, key: &Key) -> Option<Arc<str>> {
        self.state().by_key.get(key).cloned()
    }

    /// Remembers that `key` verified as `user`.
    pub fn insert(&self, key: Key, user: Arc<str>) {
        let mut s = self.state();
        if s.by_key.contains_key(&key) {
            return;
        }
        let keys = s.by_user.entry(user.clone()).or_default();
        keys.push_back(key);
        let dropped = (keys.len() > PER_USER).then(|| keys.pop_front()).flatten();
        if let Some(old) = dropped {
            s.by_key.remove(&old);
        }
        s.by_key.insert(key, user);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state().by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> Key {
        [i; 32]
    }

    #[test]
    fn remembers_what_verified() {
        let r = Remembered::default();
        let alice: Arc<str> = "alice".into();
        assert_eq!(r.get(&key(1)), None);
        r.insert(key(1), alice.clone());
        r.insert(key(1), alice.clone());
        assert_eq!(r.get(&key(1)).as_deref(), Some("alice"));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_user_keeps_the_last_few_spellings() {
        let r = Remembered::default();
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        r.insert(key(200), bob.clone());
        for i in 0..100 {
            r.insert(key(i), alice.clone());
            assert!(r.len() <= PER_USER + 1);
        }
        for i in 96..100 {
            assert_eq!(r.get(&key(i)).as_deref(), Some("alice"), "{i}");
        }
        assert_eq!(r.get(&key(95)), None);
        assert_eq!(r.get(&key(0)), None);
        // Another user's entry is untouched by alice's churn.
        assert_eq!(r.get(&key(200)).as_deref(), Some("bob"));
    }
}
