//! nix-daemon worker-protocol client (`docs/protocols.md` §7).
//!
//! One [`DaemonStore`] per worker thread, each with at most one connection,
//! opened on first use. Every failure drops the connection (after anything
//! unexpected, docs/protocols.md §7.6); the next op opens a new one.
//! If the daemon closed an idle connection (it restarted), the op is retried
//! once on a fresh connection: our ops are read-only, so that is safe.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bounded::BoundedMap;
use crate::nix::hash::Sha256;
use crate::nix::nar::listing::{listing_from_nar, NarParseError};
use crate::nix::nar::{NarError, NarReader};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{HashPart, StoreDir, StorePath};

use super::cache::InfoCache;
use super::sqlite::{self, ChangeWatch, DataVersion, Look};
use super::wire;
use super::{Failure, Generation, NarBody, Store, StoreError};

mod add_to_store;
mod connection;
mod nar_stream;
mod stderr;
mod valid_path_info;
mod version;

use connection::{Connection, Op, OpError};
use valid_path_info::PathInfoError;

#[cfg(feature = "testing")]
pub use connection::{DaemonInfo, Trust};
pub use nar_stream::NarStream;
pub use version::{ProtocolVersion, VersionError};

/// A [`Store`] served by nix-daemon over its Unix socket. Not shared between
/// threads: each worker makes its own (through the `Opener`).
pub struct DaemonStore {
    socket: PathBuf,
    store_dir: StoreDir,
    timeout: Option<Duration>,
    conn: Option<Connection>,
    /// Where a finished [`NarStream`] returns the connection it took.
    returned: nar_stream::Home,
    /// Hash part → path, for paths seen valid. A hash part names one path
    /// forever (the name is part of what it hashes), so a remembered one
    /// saves QueryPathFromHashPart: one daemon round trip per narinfo, not
    /// two. Absent paths are never remembered (they may appear).
    paths: BoundedMap<HashPart, StorePath>,
    /// Build logs are files the daemon wrote; read here, as Nix's own
    /// daemon client does (docs/protocols.md §9).
    log_dir: Option<PathBuf>,
    /// Look-ups by hash part, forgotten when [`Self::changes`] says so.
    cache: InfoCache,
    changes: Changes,
}

/// Entries [`DaemonStore::paths`] holds before it starts over: a path is
/// about a hundred bytes, and a worker's hot set of narinfos fits.
const REMEMBERED_PATHS: usize = 4096;

/// How long a daemon store remembers answers when it has no way to see the
/// store change (README "Caching"): far below the hour a proxy in front may
/// keep a narinfo (`Cache-Control: max-age=3600`), long enough that a client
/// asking for a closure's narinfos does not wait on the daemon twice.
pub const STALE_BOUND: Duration = Duration::from_secs(1);

/// How a daemon store learns that the store may have changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeSignal {
    /// The daemon's own database (`<state>/db/db.sqlite`), opened read-only
    /// only to read its commit counter (`PRAGMA data_version`): exact, as
    /// for the local backend.
    Database(PathBuf),
    /// No database we can read: forget every answer after this long (zero:
    /// remember nothing).
    Every(Duration),
}

impl DaemonStore {
    /// Finds the database of the store this daemon serves, if we can read
    /// one and show it is that store's, and from now on learns of changes
    /// through it; the signal for the other workers' connections, or why
    /// there is none. Candidates, in order: the state directory of the
    /// socket (Nix puts it at `<state>/daemon-socket/socket` and the
    /// database at `<state>/db/db.sqlite`, docs/protocols.md §7.1, §8), then `state_dir` (the
    /// machine's, `NIX_STATE_DIR`: a daemon on a socket of its own still
    /// serves it). A candidate counts only if its newest path is one the
    /// daemon reports with the same NAR hash and registration time: a socket
    /// leading to another store (forwarded, in a container) never has its
    /// changes read from our own database. Uses this store's connection (one daemon
    /// handshake at start-up, not two).
    pub fn find_database(&mut self, state_dir: &Path) -> Result<ChangeSignal, String> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(state) = self
            .socket
            .parent()
            .filter(|d| d.file_name().is_some_and(|n| n == "daemon-socket"))
            .and_then(Path::parent)
        {
            candidates.push(state.join("db").join("db.sqlite"));
        }
        let machine = state_dir.join("db").join("db.sqlite");
        if !candidates.contains(&machine) {
            candidates.push(machine);
        }
        let mut why = Vec::new();
        for db in candidates {
            match self.verify_database(&db) {
                Ok(watch) => {
                    self.changes = Changes::Database(watch);
                    self.cache.invalidate();
                    return Ok(ChangeSignal::Database(db));
                }
                Err(e) => why.push(format!("database {}: {e}", db.display())),
            }
        }
        Err(why.join("; "))
    }

    /// Whether `db` is the database of the store this daemon serves (see
    /// [`Self::find_database`]), in WAL mode so that its counter is cheap:
    /// its watch, through the connection that compared, with the counter
    /// as read before the comparison.
    fn verify_database(&mut self, db: &Path) -> Result<ChangeWatch, String> {
        let conn = sqlite::open_read_only(db, DATABASE_BUSY).map_err(|e| e.to_string())?;
        let mode: String = conn
            .query_row("pragma journal_mode", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("journal mode {mode:?}, not WAL"));
        }
        let mut version = DataVersion::default();
        version.changed(&conn).map_err(|e| e.to_string())?;
        let newest = conn.query_row(
            "select path, hash, registrationTime from ValidPaths order by id desc limit 1",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        );
        let (full, hash, time) = match newest {
            Ok(row) => row,
            Err(rusqlite::Error::QueryReturnedNoRows) => {
                return Err("no path in it to compare with the daemon's".into())
            }
            Err(e) => return Err(e.to_string()),
        };
        let path = self
            .store_dir
            .parse_path(&full)
            .map_err(|e| format!("holds {full:?}: {e}"))?;
        let theirs = self
            .path_info(&path)
            .map_err(|e| format!("asking the daemon about {full}: {e}"))?;
        let ours = Sha256::parse_prefixed(&hash).ok();
        let same = theirs.is_some_and(|i| {
            Some(i.nar_hash) == ours && u64::try_from(time) == Ok(i.registration_time)
        });
        if !same {
            return Err(format!(
                "its newest path {full} is not the same in the daemon's store"
            ));
        }
        Ok(ChangeWatch::with_connection(
            db.to_owned(),
            DATABASE_BUSY,
            conn,
            version,
        ))
    }
}

/// How long a read of the daemon's database may wait on Nix's lock: as long
/// as a local store's look-up (`local.rs`), since a worker waits either way.
const DATABASE_BUSY: Duration = Duration::from_secs(1);

/// [`ChangeSignal`] with its state.
enum Changes {
    Database(ChangeWatch),
    Every { period: Duration, since: Instant },
}

impl Changes {
    fn new(signal: ChangeSignal) -> Self {
        match signal {
            ChangeSignal::Database(path) => {
                Changes::Database(ChangeWatch::new(path, DATABASE_BUSY))
            }
            ChangeSignal::Every(period) => Changes::Every {
                period,
                since: Instant::now(),
            },
        }
    }

    /// Whether the store may have changed since the last call. When the
    /// database cannot be read now, yes: a cache without its signal must
    /// not be trusted.
    fn changed(&mut self) -> bool {
        match self {
            Changes::Database(watch) => watch.look() != Look::Same,
            Changes::Every { period, since } => {
                let now = Instant::now();
                let expired = now.duration_since(*since) >= *period;
                if expired {
                    *since = now;
                }
                expired
            }
        }
    }
}

impl DaemonStore {
    /// A client of the daemon listening on `socket`, for paths in `store_dir`.
    /// Nothing is opened yet. `timeout` bounds each read and write on the
    /// socket, so a stuck daemon cannot hang a worker; zero means none.
    /// Remembers no answer unless [`Self::with_change_signal`] says how it learns of
    /// changes (the `Opener` always does).
    pub fn new(socket: PathBuf, store_dir: StoreDir, timeout: Duration) -> Self {
        DaemonStore {
            socket,
            store_dir,
            timeout: Some(timeout).filter(|t| !t.is_zero()),
            conn: None,
            returned: nar_stream::Home::default(),
            paths: BoundedMap::new(REMEMBERED_PATHS),
            log_dir: None,
            cache: InfoCache::default(),
            changes: Changes::new(ChangeSignal::Every(Duration::ZERO)),
        }
    }

    /// Serves build logs from `dir` (none without it).
    pub fn with_log_dir(mut self, dir: PathBuf) -> Self {
        self.log_dir = Some(dir);
        self
    }

    /// Learns of changes to the store through `signal` (see
    /// [`Self::find_database`]).
    pub fn with_change_signal(mut self, signal: ChangeSignal) -> Self {
        self.changes = Changes::new(signal);
        self
    }

    /// Where `info`'s files are on this machine, if the daemon's store is
    /// this machine's (read directly when we can).
    fn files_of(&self, info: &PathInfo) -> PathBuf {
        Path::new(self.store_dir.as_str()).join(info.path.base_name())
    }

    /// Connects and does the handshake now, if not connected yet: used at
    /// start-up so that a wrong socket or an unsupported daemon stops us
    /// before we report ready.
    pub fn check(&mut self) -> Result<(), StoreError> {
        if self.conn.is_none() {
            self.conn = Some(Connection::open(&self.socket, self.timeout)?);
        }
        Ok(())
    }

    /// What the current connection's handshake said, if there is one: for
    /// the tests, which check the handshake and when a connection is kept.
    #[cfg(feature = "testing")]
    pub fn daemon_info(&mut self) -> Option<&DaemonInfo> {
        self.reclaim();
        self.conn.as_ref().map(Connection::info)
    }

    /// Takes back the connection a finished [`NarStream`] returned.
    fn reclaim(&mut self) {
        if self.conn.is_none() {
            self.conn = self
                .returned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
        }
    }

    /// The NAR of `info.path` through NarFromPath (op 38), from byte `offset`,
    /// for stores whose files we cannot read. The path is first checked with
    /// QueryPathInfo on the same connection: NarFromPath on a path that is
    /// not valid (collected meanwhile) sends a corrupt stream (docs/protocols.md §7.6).
    pub fn nar_from_daemon(
        &mut self,
        info: &PathInfo,
        offset: u64,
    ) -> Result<NarStream, StoreError> {
        check_offset(info, offset)?;
        let path = &info.path;
        self.run(|conn, dir| {
            let current = query_path_info(conn, dir, path)?;
            match current {
                None => {
                    return Err(StoreError::Io(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{path} is no longer valid"),
                    ))
                    .into())
                }
                Some(c) if (c.nar_hash, c.nar_size) != (info.nar_hash, info.nar_size) => {
                    return Err(StoreError::Corrupt(
                        format!(
                            "{path} changed: the daemon now reports {} bytes, {}",
                            c.nar_size,
                            c.nar_hash.to_prefixed_nix32()
                        )
                        .into(),
                    )
                    .into())
                }
                Some(_) => {}
            }
            let full = dir.display_path(path);
            conn.call(Op::NarFromPath, |w| wire::put_str(w, full.as_bytes()))?;
            Ok(())
        })?;
        let conn = self
            .conn
            .take()
            .expect("run keeps the connection on success");
        let mut stream = NarStream::new(self.returned.clone(), conn, info.nar_size, info.nar_hash);
        // No way to ask the daemon for part of a NAR: read and drop the head.
        let skipped = io::copy(&mut (&mut stream).take(offset), &mut io::sink())
            .map_err(|e| connection::io_failure("NarFromPath", e))?;
        if skipped != offset {
            // NarStream errors rather than ending early; never trust a
            // stream that did anyway (docs/style.md §8).
            return Err(StoreError::Protocol(
                format!("NarFromPath: the NAR ended after {skipped} bytes, before offset {offset}")
                    .into(),
            ));
        }
        Ok(stream)
    }

    /// Adds the path of `info` to the store from the NAR `nar` yields
    /// (AddToStoreNar, `add_to_store.rs`): the daemon checks the NAR against
    /// `info` and accepts the path only with a signature it trusts (or a
    /// content address that proves it). `reply_timeout` bounds the wait for
    /// its verdict after the last byte. [`StoreError::Daemon`] says why it
    /// refused; the connection is kept then, and dropped on any other error.
    pub fn add_to_store_nar(
        &mut self,
        info: &PathInfo,
        nar: &mut dyn Read,
        reply_timeout: Duration,
    ) -> Result<(), StoreError> {
        self.reclaim();
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = add_to_store::run(&mut conn, &self.store_dir, info, nar, reply_timeout);
        if result
            .as_ref()
            .map_or_else(|e| !e.poisons_connection(), |_| true)
        {
            self.conn = Some(conn);
        }
        result.map(|_| ())
    }

    /// QueryPathInfo alone for a hash part seen before; else
    /// QueryPathFromHashPart then QueryPathInfo, on one connection.
    fn path_info_by_hash_uncached(
        &mut self,
        hash: &HashPart,
    ) -> Result<Option<PathInfo>, StoreError> {
        if let Some(path) = self.paths.get(hash).cloned() {
            let info = self.run(|conn, dir| query_path_info(conn, dir, &path))?;
            if info.is_none() {
                // Collected since: the hash part now names nothing.
                self.paths.remove(hash);
            }
            return Ok(info);
        }
        let info = self.run(
            |conn, dir| match query_path_from_hash_part(conn, dir, hash)? {
                Some(path) => query_path_info(conn, dir, &path),
                None => Ok(None),
            },
        )?;
        if let Some(info) = &info {
            self.paths.insert(*hash, info.path.clone());
        }
        Ok(info)
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        Connection::open(&self.socket, self.timeout)
    }

    /// Runs `op` on the connection (opened if needed). On success the
    /// connection is kept; on any error it is dropped.
    fn run<T>(
        &mut self,
        mut op: impl FnMut(&mut Connection, &StoreDir) -> Result<T, OpError>,
    ) -> Result<T, StoreError> {
        self.reclaim();
        let (mut conn, reused) = match self.conn.take() {
            Some(conn) => (conn, true),
            None => (self.connect()?, false),
        };
        let mut result = op(&mut conn, &self.store_dir);
        if reused && matches!(result, Err(OpError::ClosedIdle)) {
            // The daemon closed the connection while it sat idle (restart,
            // idle timeout): the request never reached a live worker, so
            // send it once more on a fresh connection. A second failure is
            // reported; a request in flight during a restart may fail once.
            conn = self.connect()?;
            result = op(&mut conn, &self.store_dir);
        }
        match result {
            Ok(v) => {
                self.conn = Some(conn);
                Ok(v)
            }
            Err(OpError::ClosedIdle) => Err(StoreError::Unavailable(
                "nix-daemon closed the connection without answering".into(),
            )),
            Err(OpError::Failed(e)) => Err(e),
        }
    }
}

fn check_offset(info: &PathInfo, offset: u64) -> Result<(), StoreError> {
    if offset > info.nar_size {
        return Err(StoreError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "offset {offset} is past the end of the {}-byte NAR of {}",
                info.nar_size, info.path
            ),
        )));
    }
    Ok(())
}

fn path_info_failure(op: Op, e: PathInfoError) -> StoreError {
    match e {
        PathInfoError::Wire(e) => connection::wire_failure(&op.to_string(), e),
        e => StoreError::Corrupt(Failure::because(op.to_string(), e)),
    }
}

/// `None` for an unknown hash part: the daemon answers `""` (docs/protocols.md §7.6).
fn query_path_from_hash_part(
    conn: &mut Connection,
    dir: &StoreDir,
    hash: &HashPart,
) -> Result<Option<StorePath>, OpError> {
    const OP: Op = Op::QueryPathFromHashPart;
    let mut reply = conn.call(OP, |w| wire::put_str(w, hash.as_str().as_bytes()))?;
    let full = reply.string(valid_path_info::path_bound(dir))?;
    let path = valid_path_info::parse_optional_path(dir, "path", full)
        .map_err(|e| path_info_failure(OP, e))?;
    if let Some(p) = &path {
        if p.hash_part() != *hash {
            let what = format!("{OP}: asked for {hash}, got {p}");
            return Err(StoreError::Protocol(what.into()).into());
        }
    }
    Ok(path)
}

fn query_path_info(
    conn: &mut Connection,
    dir: &StoreDir,
    path: &StorePath,
) -> Result<Option<PathInfo>, OpError> {
    const OP: Op = Op::QueryPathInfo;
    let full = dir.display_path(path);
    let mut reply = conn.call(OP, |w| wire::put_str(w, full.as_bytes()))?;
    // From 1.17 on a flag says whether the path is valid (older daemons
    // failed instead; we never speak those).
    if reply.version() >= ProtocolVersion::PATH_INFO_VALID_FLAG && !reply.bool("valid flag")? {
        return Ok(None);
    }
    let (r, version) = reply.payload();
    let info =
        valid_path_info::read(r, version, dir, path).map_err(|e| path_info_failure(OP, e))?;
    Ok(Some(info))
}

/// A failure to read a path's files that the daemon can make up for: not
/// ours to read (permissions), or not on this machine (the socket leads
/// elsewhere). The daemon can still send the NAR.
fn not_here(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound
    )
}

impl Store for DaemonStore {
    fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// The daemon's database commit counter, or a clock (`ChangeSignal`).
    /// The daemon itself answers from the database each time (its worker
    /// for our connection keeps no stale path info: checked with a delete
    /// and a rebuild in tests/narinfo_cache.rs).
    fn generation(&mut self) -> Result<Generation, StoreError> {
        Ok(self.cache.after(self.changes.changed()))
    }

    /// Remembered until the generation changes; else QueryPathInfo alone for
    /// a hash part seen before, or QueryPathFromHashPart then QueryPathInfo,
    /// on one connection.
    fn path_info_by_hash(&mut self, hash: &HashPart) -> Result<Option<PathInfo>, StoreError> {
        self.generation()?;
        if let Some(known) = self.cache.get(hash) {
            return Ok(known.clone());
        }
        let info = self.path_info_by_hash_uncached(hash)?;
        self.cache.insert(*hash, info.clone());
        Ok(info)
    }

    fn path_info(&mut self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        self.run(|conn, dir| query_path_info(conn, dir, path))
    }

    /// From the files when we can read them (no daemon round trip, no copy
    /// through its process), else through NarFromPath.
    fn nar(&mut self, info: &PathInfo, offset: u64) -> Result<NarBody, StoreError> {
        check_offset(info, offset)?;
        let local = self.files_of(info);
        match NarReader::open_store_path_at(&local, offset) {
            Ok(reader) if reader.nar_size() == info.nar_size => Ok(NarBody::Files(reader)),
            Ok(reader) => Err(super::wrong_size(&local, reader.nar_size(), info)),
            Err(NarError::Io { source, .. }) if not_here(&source) => Ok(NarBody::Stream(Box::new(
                self.nar_from_daemon(info, offset)?,
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// From the files when we can read them, as [`Self::nar`]; else made
    /// from the NAR the daemon sends (it has no operation for a listing),
    /// which costs reading the whole NAR through, contents skipped.
    fn nar_listing(&mut self, info: &PathInfo) -> Result<Vec<u8>, StoreError> {
        match super::listing_from_files(&self.files_of(info), info) {
            Err(StoreError::Io(e)) if not_here(&e) => {
                let stream = self.nar_from_daemon(info, 0)?;
                listing_from_nar(stream, info.nar_size).map_err(|e| match e {
                    NarParseError::Io { source, .. } => {
                        connection::io_failure("NarFromPath", source)
                    }
                    e => StoreError::Protocol(Failure::because(
                        format!("NarFromPath {}: the daemon's NAR", info.path),
                        e,
                    )),
                })
            }
            other => other,
        }
    }

    fn log_dir(&self) -> Option<&Path> {
        self.log_dir.as_deref()
    }
}
