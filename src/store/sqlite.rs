//! A Nix database as this process reads it: every connection opened the one
//! read-only way ([`open_read_only`]), and SQLite's commit counter, which
//! says when Nix has committed since ([`DataVersion`], [`ChangeWatch`]).
//!
//! Read-only and never `immutable=1`: an immutable reader skips WAL and
//! locking and would serve stale or torn data while Nix writes
//! (`docs/protocols.md` §8).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

/// Opens `db` read-only. `busy_timeout` is how long a statement may wait
/// on a lock another connection holds before it fails as busy: each caller
/// says how long it can afford (rusqlite's default is five seconds).
pub fn open_read_only(db: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags)?;
    conn.busy_timeout(busy_timeout)?;
    Ok(conn)
}

/// Whether `e` is a lock held by another connection, past the busy timeout.
pub fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

/// SQLite's commit counter as one connection sees it (`PRAGMA data_version`:
/// a new value whenever another connection committed since this one last
/// looked). It opens a read transaction, which in WAL mode reads the WAL
/// index from shared memory: no file is read, the cost is SQLite's two
/// `fcntl` locks and an `fstat` (bench/README.md, "Comparing two builds").
/// Read on the connection its owner queries through (a worker's, the
/// closure's), or on a [`ChangeWatch`]'s own.
#[derive(Default)]
pub struct DataVersion {
    seen: Option<i64>,
}

impl DataVersion {
    /// Whether the database changed since the last call (true on the first,
    /// and on the first after [`Self::forget`]).
    pub fn changed(&mut self, conn: &Connection) -> rusqlite::Result<bool> {
        let now: i64 = conn
            .prepare_cached("pragma data_version")?
            .query_row([], |r| r.get(0))?;
        Ok(self.seen.replace(now) != Some(now))
    }

    /// The next look counts as a change: whatever was committed meanwhile
    /// is then seen.
    pub fn forget(&mut self) {
        self.seen = None;
    }
}

/// The store's change signal read through a read-only connection of its
/// own, used for nothing but `PRAGMA data_version`: an event loop's (which
/// must never wait), and a daemon backend's that found its daemon's
/// database (`daemon.rs`).
pub struct ChangeWatch {
    db: PathBuf,
    busy_timeout: Duration,
    /// Opened on first use, dropped (and opened again) after a failure.
    conn: Option<Connection>,
    version: DataVersion,
}

/// What a [`ChangeWatch`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Look {
    /// Nothing committed since the last look.
    Same,
    /// Something may have been committed since the last look (always so on
    /// the first look, and on the first after a failure).
    Changed,
    /// The database cannot say now (busy, gone): trust nothing remembered.
    Unknown,
}

impl ChangeWatch {
    /// Watches `db`, opened on the first look with `busy_timeout`
    /// ([`open_read_only`]).
    pub fn new(db: PathBuf, busy_timeout: Duration) -> ChangeWatch {
        ChangeWatch {
            db,
            busy_timeout,
            conn: None,
            version: DataVersion::default(),
        }
    }

    /// Watches `db` through `conn`, already open, whose counter `version`
    /// has read: the first look is then a change only if there was one.
    pub fn with_connection(
        db: PathBuf,
        busy_timeout: Duration,
        conn: Connection,
        version: DataVersion,
    ) -> ChangeWatch {
        ChangeWatch {
            db,
            busy_timeout,
            conn: Some(conn),
            version,
        }
    }

    /// Looks at the counter now, within the busy timeout.
    pub fn look(&mut self) -> Look {
        if self.conn.is_none() {
            self.conn = open_read_only(&self.db, self.busy_timeout).ok();
            self.version.forget();
        }
        let Some(db) = &self.conn else {
            return Look::Unknown;
        };
        match self.version.changed(db) {
            Ok(true) => Look::Changed,
            Ok(false) => Look::Same,
            Err(e) => {
                self.version.forget();
                if !is_busy(&e) {
                    self.conn = None;
                }
                Look::Unknown
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nix-serve-sd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Read-only: a write fails, a missing database is not made, and with
    /// no busy timeout a lock another connection holds fails at once.
    #[test]
    fn opens_read_only_and_waits_only_as_told() {
        let dir = scratch("ro");
        let db = dir.join("db.sqlite");
        assert!(open_read_only(&db, Duration::ZERO).is_err());
        assert!(!db.exists(), "a read-only open made the file");
        let writer = Connection::open(&db).unwrap();
        writer.execute_batch("create table t (x integer);").unwrap();
        let reader = open_read_only(&db, Duration::ZERO).unwrap();
        let e = reader.execute("insert into t values (1)", []).unwrap_err();
        assert!(
            matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ReadOnly),
            "{e}"
        );
        // A rollback-journal database mid-commit: readers are locked out.
        writer.execute_batch("begin exclusive;").unwrap();
        let e = reader
            .query_row("select count(*) from t", [], |r| r.get::<_, i64>(0))
            .unwrap_err();
        assert!(is_busy(&e), "{e}");
        writer.execute_batch("commit;").unwrap();
        drop((reader, writer));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Two connections to one WAL database, as Nix and we are: a commit on
    /// one is seen by the other's next look, and only then.
    #[test]
    fn data_version_sees_other_connections_commits() {
        let dir = scratch("dv");
        let db = dir.join("db.sqlite");
        let writer = Connection::open(&db).unwrap();
        writer
            .execute_batch("pragma journal_mode=wal; create table t (x integer);")
            .unwrap();
        let reader = open_read_only(&db, Duration::ZERO).unwrap();
        let mut dv = DataVersion::default();
        assert!(dv.changed(&reader).unwrap(), "first look");
        assert!(!dv.changed(&reader).unwrap(), "nothing committed");
        writer.execute("insert into t values (1)", []).unwrap();
        assert!(dv.changed(&reader).unwrap(), "a commit");
        assert!(!dv.changed(&reader).unwrap(), "seen once");
        dv.forget();
        assert!(dv.changed(&reader).unwrap(), "forgotten");

        // A watch of its own: the same, and never waiting on a lock.
        let mut watch = ChangeWatch::new(db.clone(), Duration::ZERO);
        assert_eq!(watch.look(), Look::Changed, "first look");
        assert_eq!(watch.look(), Look::Same);
        writer.execute("insert into t values (2)", []).unwrap();
        assert_eq!(watch.look(), Look::Changed);
        assert_eq!(watch.look(), Look::Same);
        // Handed a connection that has looked already: no change to report.
        let mut seen = DataVersion::default();
        assert!(seen.changed(&reader).unwrap());
        let mut handed = ChangeWatch::with_connection(db.clone(), Duration::ZERO, reader, seen);
        assert_eq!(handed.look(), Look::Same);
        writer.execute("insert into t values (3)", []).unwrap();
        assert_eq!(handed.look(), Look::Changed);
        drop(writer);

        // A writer holding the exclusive lock (a database in rollback mode,
        // mid-commit): busy, and seen as a change once the lock is gone.
        let rollback = dir.join("rollback.sqlite");
        let writer = Connection::open(&rollback).unwrap();
        writer.execute_batch("create table t (x integer);").unwrap();
        let mut watch = ChangeWatch::new(rollback, Duration::ZERO);
        assert_eq!(watch.look(), Look::Changed, "first look");
        writer.execute_batch("begin exclusive;").unwrap();
        writer.execute("insert into t values (1)", []).unwrap();
        assert_eq!(watch.look(), Look::Unknown, "locked out");
        writer.execute_batch("commit;").unwrap();
        assert_eq!(watch.look(), Look::Changed, "after a failure");
        assert_eq!(watch.look(), Look::Same);
        drop(writer);

        // A database that is not there (yet): unknown, never "same".
        let mut missing = ChangeWatch::new(dir.join("missing.sqlite"), Duration::ZERO);
        assert_eq!(missing.look(), Look::Unknown);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
