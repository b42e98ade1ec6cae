//! Read-only direct access to a local store: SQLite and the store directory (`docs/protocols.md` §8).
//!
//! The connection is opened read-only (`sqlite.rs`). A read-only WAL reader
//! does not block Nix's writers; each look-up is one short read
//! transaction, so checkpoints are never held back for long.

use std::fs;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Params};

use super::cache::InfoCache;
use super::sqlite::{self, DataVersion};
use super::{Failure, Generation, NarBody, Store, StoreError};
use crate::nix::nar::NarReader;
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{HashPart, StoreDir, StorePath};

mod row;

use row::RawRow;

/// How long one statement may wait on a lock before the look-up fails as
/// `Unavailable`. WAL readers only meet `SQLITE_BUSY` in brief windows (WAL
/// recovery, a non-WAL writer), so a second is plenty and keeps a request
/// from hanging on Nix's one-hour writer timeout.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// Nix's info query (docs/protocols.md §8) with `path` added, in [`RawRow::read`]'s column order.
macro_rules! info_query {
    ($where:literal) => {
        concat!(
            "select id, path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca ",
            "from ValidPaths where ",
            $where
        )
    };
}

/// Nix's hash-part query (docs/protocols.md §8), as a closed range: the row whose path starts
/// with `<dir>/<hash>-` (`'.'` is the byte after `'-'`). A range, unlike
/// Nix's open `>=`, can never return a neighbour.
const BY_HASH: &str = info_query!("path > ?1 and path < ?2 order by path limit 1");
const BY_PATH: &str = info_query!("path = ?1");
const REFS: &str = "select path from Refs join ValidPaths on reference = id where referrer = ?1";

/// Where a local store's files are: the database and the physical store
/// directory. Resolved from the store URI by `uri.rs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalLocation {
    /// The logical store directory, as the database spells paths.
    pub store_dir: StoreDir,
    /// Where the store's files are on this machine (`<root>/nix/store` for
    /// a chroot store).
    pub real_store: PathBuf,
    /// `<state>/db/db.sqlite`.
    pub db: PathBuf,
}

/// A read-only connection to a local store. One per worker thread.
pub struct LocalStore {
    conn: Connection,
    loc: LocalLocation,
    log_dir: Option<PathBuf>,
    /// Look-ups by hash part, forgotten whenever Nix commits (`cache.rs`).
    cache: InfoCache,
    version: DataVersion,
}

impl LocalStore {
    /// Opens the database read-only. Cheap: SQLite reads the schema and the
    /// WAL index on the first query, see [`LocalStore::check`].
    pub fn open(loc: LocalLocation) -> Result<Self, StoreError> {
        let conn =
            sqlite::open_read_only(&loc.db, BUSY_TIMEOUT).map_err(|e| sql_error(&loc.db, e))?;
        Ok(LocalStore {
            conn,
            loc,
            log_dir: None,
            cache: InfoCache::default(),
            version: DataVersion::default(),
        })
    }

    /// Serves build logs from `dir` (none without it).
    pub fn with_log_dir(mut self, dir: PathBuf) -> Self {
        self.log_dir = Some(dir);
        self
    }

    /// Checks once that this store can serve: the database reads, has the
    /// columns we query, is in WAL mode, and the store directory is readable.
    pub fn check(&mut self) -> Result<(), StoreError> {
        let db = &self.loc.db;
        // The first read is where a read-only WAL database without its
        // -shm file fails (docs/protocols.md §8): keep it first so that is the error shown.
        self.conn
            .query_row(
                "select count(*) from (select 1 from ValidPaths limit 1)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| sql_error(db, e))?;
        for sql in [BY_HASH, BY_PATH, REFS, "begin", "commit", "rollback"] {
            self.conn
                .prepare_cached(sql)
                .map_err(|e| sql_error(db, e))?;
        }
        let mode: String = self
            .conn
            .query_row("pragma journal_mode", [], |r| r.get(0))
            .map_err(|e| sql_error(db, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Without WAL Nix locks through the unix-dotfile VFS, which a
            // reader on the default VFS does not see (docs/protocols.md §8).
            return Err(StoreError::Unavailable(
                format!(
                    "local database {}: journal mode is {mode:?}, not WAL: Nix then locks it in a \
                     way a direct reader cannot honour",
                    db.display()
                )
                .into(),
            ));
        }
        fs::read_dir(&self.loc.real_store).map_err(|e| {
            let what = format!("local store directory {}", self.loc.real_store.display());
            StoreError::Unavailable(Failure::because(what, e))
        })?;
        Ok(())
    }

    /// One row and its references, read in one transaction so that a path
    /// deleted between the two queries cannot come back without references
    /// (which would sign a wrong fingerprint).
    fn query_info(&mut self, sql: &str, args: impl Params) -> Result<Option<PathInfo>, StoreError> {
        let found =
            read_row_and_refs(&mut self.conn, sql, args).map_err(|e| sql_error(&self.loc.db, e))?;
        let Some((row, refs)) = found else {
            return Ok(None);
        };
        row.into_info(&self.loc.store_dir, refs)
            .map(Some)
            .map_err(|e| {
                let what = format!("local database {}", self.loc.db.display());
                StoreError::Corrupt(Failure::because(what, e))
            })
    }
}

/// The two queries in one read transaction. `begin` and `commit` are
/// cached statements too: `Connection::transaction` parses them anew on
/// every call.
fn read_row_and_refs(
    conn: &mut Connection,
    sql: &str,
    args: impl Params,
) -> rusqlite::Result<Option<(RawRow, Vec<String>)>> {
    conn.prepare_cached("begin")?.execute([])?;
    let found = (|| -> rusqlite::Result<Option<(RawRow, Vec<String>)>> {
        let Some(row) = conn
            .prepare_cached(sql)?
            .query_row(args, RawRow::read)
            .optional()?
        else {
            return Ok(None);
        };
        let refs = conn
            .prepare_cached(REFS)?
            .query_map([row.id], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some((row, refs)))
    })();
    // A read transaction changes nothing: ending it either way is the same,
    // but after a failed step only a rollback is sure to succeed.
    let end = if found.is_ok() { "commit" } else { "rollback" };
    let ended = conn.prepare_cached(end).and_then(|mut s| s.execute([]));
    let found = found?;
    ended?;
    Ok(found)
}

impl Store for LocalStore {
    fn store_dir(&self) -> &StoreDir {
        &self.loc.store_dir
    }

    /// `PRAGMA data_version`: a new generation whenever Nix has committed
    /// since the last call (`cache.rs`).
    fn generation(&mut self) -> Result<Generation, StoreError> {
        let changed = self
            .version
            .changed(&self.conn)
            .map_err(|e| sql_error(&self.loc.db, e))?;
        Ok(self.cache.after(changed))
    }

    fn path_info_by_hash(&mut self, hash: &HashPart) -> Result<Option<PathInfo>, StoreError> {
        self.generation()?;
        if let Some(known) = self.cache.get(hash) {
            return Ok(known.clone());
        }
        let dir = self.loc.store_dir.as_str();
        let (lo, hi) = (format!("{dir}/{hash}-"), format!("{dir}/{hash}."));
        let info = self.query_info(BY_HASH, params![lo, hi])?;
        // The range already implies it; checked anyway as Nix does (docs/protocols.md §8).
        let info = info.filter(|i| i.path.hash_part() == *hash);
        self.cache.insert(*hash, info.clone());
        Ok(info)
    }

    fn path_info(&mut self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        let full = self.loc.store_dir.display_path(path);
        self.query_info(BY_PATH, [&full])
    }

    /// A path whose files have gone (garbage-collected since the look-up) is
    /// an I/O error, never "absent": the client was just told it exists (docs/protocols.md §8).
    fn nar(&mut self, info: &PathInfo, offset: u64) -> Result<NarBody, StoreError> {
        let path = self.loc.real_store.join(info.path.base_name());
        let reader = NarReader::open_store_path_at(&path, offset)?;
        if reader.nar_size() != info.nar_size {
            // Never send bytes that do not match the promised length and hash.
            return Err(super::wrong_size(&path, reader.nar_size(), info));
        }
        Ok(NarBody::Files(reader))
    }

    fn nar_listing(&mut self, info: &PathInfo) -> Result<Vec<u8>, StoreError> {
        super::listing_from_files(&self.loc.real_store.join(info.path.base_name()), info)
    }

    fn log_dir(&self) -> Option<&Path> {
        self.log_dir.as_deref()
    }
}

/// A [`LocalStore`] with two holders: the opener, which keeps it open for
/// the life of the process (`opener.rs`, `KeepOpen`), and the one worker that
/// serves through it, so the connection start-up checked (schema read,
/// statements prepared) answers the first request too: the first request
/// after socket activation opens no database (bench/README.md, "Cold
/// start"). Only that worker locks it.
pub struct SharedLocal {
    store: Arc<Mutex<LocalStore>>,
    store_dir: StoreDir,
    log_dir: Option<PathBuf>,
}

impl SharedLocal {
    /// The worker's end, and the keeper's.
    pub fn new(store: LocalStore) -> (SharedLocal, Arc<Mutex<LocalStore>>) {
        let shared = SharedLocal {
            store_dir: store.loc.store_dir.clone(),
            log_dir: store.log_dir.clone(),
            store: Arc::new(Mutex::new(store)),
        };
        let keeper = shared.store.clone();
        (shared, keeper)
    }

    fn lock(&self) -> MutexGuard<'_, LocalStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for SharedLocal {
    fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    fn generation(&mut self) -> Result<Generation, StoreError> {
        self.lock().generation()
    }

    fn path_info_by_hash(&mut self, hash: &HashPart) -> Result<Option<PathInfo>, StoreError> {
        self.lock().path_info_by_hash(hash)
    }

    fn path_info(&mut self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        self.lock().path_info(path)
    }

    fn nar(&mut self, info: &PathInfo, offset: u64) -> Result<NarBody, StoreError> {
        self.lock().nar(info, offset)
    }

    fn nar_listing(&mut self, info: &PathInfo) -> Result<Vec<u8>, StoreError> {
        self.lock().nar_listing(info)
    }

    fn log_dir(&self) -> Option<&Path> {
        self.log_dir.as_deref()
    }
}

/// Maps a SQLite failure to what it means for a request.
fn sql_error(db: &Path, e: rusqlite::Error) -> StoreError {
    let at = db.display();
    let unavailable = |what: String, e| StoreError::Unavailable(Failure::because(what, e));
    let corrupt = |what: String, e| StoreError::Corrupt(Failure::because(what, e));
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => unavailable(
                format!(
                    "local database {at}: still locked after {} ms",
                    BUSY_TIMEOUT.as_millis()
                ),
                e,
            ),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                corrupt(format!("local database {at}"), e)
            }
            // docs/protocols.md §8: a WAL database opens read-only only if its -wal and -shm
            // files exist or its directory is writable.
            ErrorCode::ReadOnly | ErrorCode::CannotOpen if db.exists() => unavailable(
                format!(
                    "local database {at} (a WAL database can be read without write access to \
                     its directory only while Nix holds it open)"
                ),
                e,
            ),
            _ => unavailable(format!("local database {at}"), e),
        },
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..) => {
            corrupt(format!("local database {at}: unexpected value"), e)
        }
        _ => unavailable(format!("local database {at}"), e),
    }
}
