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
//! The event loop reads the same signal through a [`Watch`] of its own, so
//! that it can answer a repeated narinfo request itself
//! (`http/narinfo/replies.rs`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::bounded::BoundedMap;
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::HashPart;

/// One state of the store as a connection has seen it. Equal generations
/// mean "nothing has been committed in between", so whatever was true in one
/// is true in the other. Unique in the process: a new connection (after a
/// reconnect) never reuses one, so a cache kept outside the connection (the
/// rendered narinfo replies, `http/narinfo.rs`) cannot outlive it by mistake.
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
    pub fn generation(&self) -> Generation {
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

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// SQLite's commit counter as one connection sees it (`PRAGMA data_version`:
/// a new value whenever another connection committed since this one last
/// looked). It opens a read transaction, which in WAL mode reads the WAL
/// index from shared memory: no file is read, the cost is SQLite's two
/// `fcntl` locks and an `fstat` (bench/README.md, "Comparing two builds").
#[derive(Default)]
pub struct DataVersion {
    seen: Option<i64>,
}

impl DataVersion {
    /// Whether the database changed since the last call (true on the first).
    pub fn changed(&mut self, conn: &Connection) -> rusqlite::Result<bool> {
        let now: i64 = conn
            .prepare_cached("pragma data_version")?
            .query_row([], |r| r.get(0))?;
        Ok(self.seen.replace(now) != Some(now))
    }
}

/// The event loop's own reading of the store's change signal: one more
/// read-only connection to the database, used for nothing but `PRAGMA
/// data_version`, or the clock when there is no database to read.
pub enum Watch {
    Database {
        path: PathBuf,
        /// Opened on first use, dropped (and opened again) after a failure.
        conn: Option<Connection>,
        version: DataVersion,
    },
    /// No signal: an answer older than this is not to be trusted.
    Every(Duration),
}

/// What a [`Watch`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Look {
    /// Nothing committed since the last look.
    Same,
    /// Something may have been committed since the last look (always so on
    /// the first look, and on the first after a failure).
    Changed,
    /// The database cannot say now (busy, gone): trust nothing remembered,
    /// and do not wait for it.
    Unknown,
}

impl Watch {
    /// Reads `db`'s commit counter.
    pub fn database(db: PathBuf) -> Watch {
        Watch::Database {
            path: db,
            conn: None,
            version: DataVersion::default(),
        }
    }

    /// The longest an answer may be trusted without a signal, if the watch
    /// has none.
    pub fn max_age(&self) -> Option<Duration> {
        match self {
            Watch::Database { .. } => None,
            Watch::Every(period) => Some(*period),
        }
    }

    /// Looks at the signal now. Never waits: SQLite's busy timeout is zero,
    /// so a lock held by someone else is `Unknown` at once, not a stall of
    /// the thread that calls it (the event loop).
    pub fn look(&mut self) -> Look {
        let Watch::Database {
            path,
            conn,
            version,
        } = self
        else {
            return Look::Same;
        };
        if conn.is_none() {
            *conn = open_watch(path).ok();
            *version = DataVersion::default();
        }
        let Some(db) = conn else {
            return Look::Unknown;
        };
        match version.changed(db) {
            Ok(true) => Look::Changed,
            Ok(false) => Look::Same,
            Err(e) => {
                // The next successful look counts as a change: whatever was
                // committed meanwhile is then seen.
                *version = DataVersion::default();
                if !is_busy(&e) {
                    *conn = None;
                }
                Look::Unknown
            }
        }
    }
}

fn open_watch(db: &std::path::Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags)?;
    // rusqlite's default is five seconds; the event loop must never wait.
    conn.busy_timeout(Duration::ZERO)?;
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(c: char) -> HashPart {
        HashPart::parse(&c.to_string().repeat(32)).unwrap()
    }

    #[test]
    fn generations_are_unique() {
        let a = Generation::fresh();
        let b = Generation::fresh();
        assert_ne!(a, b);
        let mut cache = InfoCache::default();
        let before = cache.generation();
        assert_ne!(before, InfoCache::default().generation());
        cache.insert(hash('a'), None);
        cache.invalidate();
        assert_ne!(cache.generation(), before);
        assert!(cache.get(&hash('a')).is_none());
    }

    #[test]
    fn remembers_absent() {
        let mut cache = InfoCache::default();
        cache.insert(hash('a'), None);
        assert_eq!(cache.get(&hash('a')), Some(&None));
        assert_eq!(cache.get(&hash('b')), None);
    }

    /// Two connections to one WAL database, as Nix and we are: a commit on
    /// one is seen by the other's next look, and only then.
    #[test]
    fn data_version_sees_other_connections_commits() {
        let dir = std::env::temp_dir().join(format!("nix-serve-sd-dv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("db.sqlite");
        let writer = Connection::open(&db).unwrap();
        writer
            .execute_batch("pragma journal_mode=wal; create table t (x integer);")
            .unwrap();
        let reader =
            Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let mut dv = DataVersion::default();
        assert!(dv.changed(&reader).unwrap(), "first look");
        assert!(!dv.changed(&reader).unwrap(), "nothing committed");
        writer.execute("insert into t values (1)", []).unwrap();
        assert!(dv.changed(&reader).unwrap(), "a commit");
        assert!(!dv.changed(&reader).unwrap(), "seen once");

        // The loop's watch: the same, and never waiting on a lock.
        let mut watch = Watch::database(db.clone());
        assert_eq!(watch.look(), Look::Changed, "first look");
        assert_eq!(watch.look(), Look::Same);
        writer.execute("insert into t values (2)", []).unwrap();
        assert_eq!(watch.look(), Look::Changed);
        assert_eq!(watch.look(), Look::Same);
        drop((reader, writer));

        // A writer holding the exclusive lock (a database in rollback mode,
        // mid-commit): busy, and seen as a change once the lock is gone.
        let rollback = dir.join("rollback.sqlite");
        let writer = Connection::open(&rollback).unwrap();
        writer.execute_batch("create table t (x integer);").unwrap();
        let mut watch = Watch::database(rollback);
        assert_eq!(watch.look(), Look::Changed, "first look");
        writer.execute_batch("begin exclusive;").unwrap();
        writer.execute("insert into t values (1)", []).unwrap();
        assert_eq!(watch.look(), Look::Unknown, "locked out");
        writer.execute_batch("commit;").unwrap();
        assert_eq!(watch.look(), Look::Changed, "after a failure");
        assert_eq!(watch.look(), Look::Same);
        drop(writer);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
