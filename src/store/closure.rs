//! `--serve-closure-of`: only the closure of some roots is served; every
//! other path is answered exactly as an absent one (issue 12 part 2).
//!
//! The closure is computed once, away from the request path, and swapped
//! in whole: workers read an `Arc` of a finished set under a read lock held
//! for a pointer copy, so a recompute never delays a request. It is computed
//! again only when a root resolves to another store path or, for the local
//! backend, when the database changed (`PRAGMA data_version`): a valid
//! path's references never change, so with the daemon a change of root is
//! the only change that matters.
//!
//! Here: the set, how workers see it, and how it is computed; the roots and
//! the thread that keeps it current are `closure/refresh.rs`.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rusqlite::{params_from_iter, Connection};

use super::local::LocalLocation;
use super::sqlite::{self, DataVersion};
use super::{Failure, Generation, NarBody, Store, StoreError};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{HashPart, StoreDir, StorePath, HASH_PART_LEN};

mod refresh;

pub use refresh::{resolve_root, Refresher, RootError, Roots, CHECK_EVERY};

/// The hash parts of every path in the closure of the roots.
#[derive(Debug, Default)]
pub struct Closure {
    members: HashSet<HashPart>,
}

impl Closure {
    pub fn contains(&self, hash: &HashPart) -> bool {
        self.members.contains(hash)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// The closure every worker reads: replaced whole, never edited.
#[derive(Debug, Default)]
pub struct Allowed {
    current: RwLock<Arc<Closure>>,
}

impl Allowed {
    pub fn new(closure: Closure) -> Self {
        Allowed {
            current: RwLock::new(Arc::new(closure)),
        }
    }

    /// The closure now; the lock is held only to copy the pointer.
    pub fn current(&self) -> Arc<Closure> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, closure: Closure) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(closure);
    }
}

/// A store that sees only the paths of `allowed`: any other answers as
/// absent. A path the store lacks is not in the closure either, so an
/// outside path and an absent one take the very same branch here, with no
/// store look-up at all: the same reply after the same work, whatever the
/// backend (a look-up first would not be the same work: through the daemon
/// a present path costs two round trips on a worker that has not seen it,
/// an absent one, one). Only what is served can be told apart, and that is
/// public anyway.
pub struct Filtered<'a> {
    pub inner: &'a mut dyn Store,
    pub allowed: &'a Closure,
}

impl Store for Filtered<'_> {
    fn store_dir(&self) -> &StoreDir {
        self.inner.store_dir()
    }

    fn path_info_by_hash(&mut self, hash: &HashPart) -> Result<Option<PathInfo>, StoreError> {
        if !self.allowed.contains(hash) {
            return Ok(None);
        }
        self.inner.path_info_by_hash(hash)
    }

    fn path_info(&mut self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        if !self.allowed.contains(&path.hash_part()) {
            return Ok(None);
        }
        self.inner.path_info(path)
    }

    /// The store's: a change of closure is the worker's to notice
    /// (`cache::Worker`), since it is not a change of the store.
    fn generation(&mut self) -> Result<Generation, StoreError> {
        self.inner.generation()
    }

    fn nar(&mut self, info: &PathInfo, offset: u64) -> Result<NarBody, StoreError> {
        // Only reached with an info this store gave out, so an allowed path.
        self.inner.nar(info, offset)
    }

    fn nar_listing(&mut self, info: &PathInfo) -> Result<Vec<u8>, StoreError> {
        self.inner.nar_listing(info)
    }

    fn log_dir(&self) -> Option<&Path> {
        self.inner.log_dir()
    }

    /// A derivation's log is public only when the `.drv` itself is in the
    /// closure: a closure of outputs (a system, a profile) holds no `.drv`,
    /// so its build logs, which can hold anything a build printed, stay
    /// private unless a root names the derivations.
    fn serves(&self, path: &StorePath) -> bool {
        self.allowed.contains(&path.hash_part()) && self.inner.serves(path)
    }
}

/// The closure of `roots` through any store, one `path_info` a path
/// (the daemon's `QueryPathInfo`, `docs/protocols.md` §7). A root that is
/// not valid adds nothing.
pub fn closure_by_path_info(
    store: &mut dyn Store,
    roots: &[StorePath],
) -> Result<Closure, StoreError> {
    let mut members = HashSet::new();
    let mut queue: VecDeque<StorePath> = roots.iter().cloned().collect();
    while let Some(path) = queue.pop_front() {
        if members.contains(&path.hash_part()) {
            continue;
        }
        let Some(info) = store.path_info(&path)? else {
            continue;
        };
        members.insert(path.hash_part());
        queue.extend((info.references.into_iter()).filter(|r| !members.contains(&r.hash_part())));
    }
    Ok(Closure { members })
}

/// The local backend's own read-only connection for closures: one
/// recursive query over `Refs`, and `PRAGMA data_version` to tell when
/// another connection (Nix) has written since (`docs/protocols.md` §8).
pub struct LocalClosure {
    conn: Connection,
    loc: LocalLocation,
    version: DataVersion,
}

/// How long a closure query may wait on Nix's lock.
const CLOSURE_BUSY: Duration = Duration::from_secs(1);

/// Every valid path reachable from the roots through `Refs`, in one
/// recursive query (`union`, not `union all`: each id is visited once, so
/// cycles and shared references cost nothing extra). The roots' `?, ?, …`
/// go between head and tail ([`LocalClosure::closure`]).
const CLOSURE_HEAD: &str =
    "with recursive closure(id) as (select id from ValidPaths where path in (";
const CLOSURE_TAIL: &str =
    ") union select reference from Refs join closure on referrer = closure.id) \
     select path from ValidPaths join closure using (id)";

impl LocalClosure {
    pub fn open(loc: &LocalLocation) -> Result<Self, StoreError> {
        // Off the request path, so it may wait on Nix's lock as a worker's
        // look-up does; a failure only postpones the recompute.
        let conn = sqlite::open_read_only(&loc.db, CLOSURE_BUSY).map_err(|e| sql(loc, e))?;
        Ok(LocalClosure {
            conn,
            loc: loc.clone(),
            version: DataVersion::default(),
        })
    }

    /// Whether another connection (Nix) committed since the last call.
    pub fn changed(&mut self) -> Result<bool, StoreError> {
        self.version
            .changed(&self.conn)
            .map_err(|e| sql(&self.loc, e))
    }

    pub fn is_valid(&self, path: &StorePath) -> Result<bool, StoreError> {
        let full = self.loc.store_dir.display_path(path);
        self.conn
            .prepare_cached("select 1 from ValidPaths where path = ?1")
            .and_then(|mut st| st.exists([&full]))
            .map_err(|e| sql(&self.loc, e))
    }

    /// The closure of `roots` in one query, in one read transaction.
    pub fn closure(&self, roots: &[StorePath]) -> Result<Closure, StoreError> {
        if roots.is_empty() {
            return Ok(Closure::default());
        }
        let marks = vec!["?"; roots.len()].join(",");
        let query = format!("{CLOSURE_HEAD}{marks}{CLOSURE_TAIL}");
        let full: Vec<String> = roots
            .iter()
            .map(|p| self.loc.store_dir.display_path(p))
            .collect();
        let mut stmt = self.conn.prepare(&query).map_err(|e| sql(&self.loc, e))?;
        let mut rows = stmt
            .query(params_from_iter(full.iter()))
            .map_err(|e| sql(&self.loc, e))?;
        let dir_len = self.loc.store_dir.as_str().len() + 1;
        let mut members = HashSet::new();
        while let Some(row) = rows.next().map_err(|e| sql(&self.loc, e))? {
            let path = row.get_ref(0).map_err(|e| sql(&self.loc, e))?;
            let path = path.as_str().map_err(|e| sql(&self.loc, e.into()))?;
            let hash = path
                .get(dir_len..dir_len + HASH_PART_LEN)
                .and_then(|h| HashPart::parse(h).ok())
                .ok_or_else(|| {
                    StoreError::Corrupt(Failure::new(format!(
                        "local database {}: {path:?} is not a store path",
                        self.loc.db.display()
                    )))
                })?;
            members.insert(hash);
        }
        Ok(Closure { members })
    }
}

fn sql(loc: &LocalLocation, e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(Failure::because(
        format!("local database {} (closure)", loc.db.display()),
        e,
    ))
}

/// Where closures are computed from.
pub enum Source {
    Local(LocalClosure),
    /// Any store, through `path_info` (the daemon backend).
    Any(Box<dyn Store>),
}

impl Source {
    /// The local backend's own connection, or a store connection of
    /// `opener`'s for the daemon.
    pub fn of(opener: &super::Opener) -> Result<Self, StoreError> {
        match opener.local_location() {
            Some(loc) => LocalClosure::open(loc).map(Source::Local),
            None => opener.open().map(Source::Any),
        }
    }

    fn store_dir(&self) -> &StoreDir {
        match self {
            Source::Local(l) => &l.loc.store_dir,
            Source::Any(s) => s.store_dir(),
        }
    }

    /// Whether the store may have changed since the last call: never said
    /// through the daemon, where a valid path's references never change
    /// and only a change of root matters.
    fn changed(&mut self) -> Result<bool, StoreError> {
        match self {
            Source::Local(l) => l.changed(),
            Source::Any(_) => Ok(false),
        }
    }

    /// The next [`Self::changed`] says yes: a closure that could not be
    /// computed is owed.
    fn forget(&mut self) {
        if let Source::Local(l) = self {
            l.version.forget();
        }
    }

    fn is_valid(&mut self, path: &StorePath) -> Result<bool, StoreError> {
        match self {
            Source::Local(l) => l.is_valid(path),
            Source::Any(s) => Ok(s.path_info(path)?.is_some()),
        }
    }

    fn closure(&mut self, roots: &[StorePath]) -> Result<Closure, StoreError> {
        match self {
            Source::Local(l) => l.closure(roots),
            Source::Any(s) => closure_by_path_info(s.as_mut(), roots),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "wmm9hngfwxsjqpiy50lligndn8n83f6w-a";
    const B: &str = "0a5iwmfqmmbk6dfk6qk3k2xpgjqzg8a7-b";

    #[test]
    fn a_swap_is_seen_by_the_next_reader_and_not_by_one_holding_the_old() {
        let a = StorePath::from_base_name(A).unwrap().hash_part();
        let b = StorePath::from_base_name(B).unwrap().hash_part();
        let allowed = Allowed::new(Closure {
            members: HashSet::from([a]),
        });
        let before = allowed.current();
        allowed.replace(Closure {
            members: HashSet::from([b]),
        });
        assert!(before.contains(&a) && !before.contains(&b));
        let after = allowed.current();
        assert!(after.contains(&b) && !after.contains(&a));
    }
}
