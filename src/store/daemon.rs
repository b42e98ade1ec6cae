//! nix-daemon worker-protocol client (`nix-protocols.md` §7).
//!
//! One [`DaemonStore`] per worker thread, each with at most one connection,
//! opened on first use. Every failure drops the connection (§7.6: "on any
//! protocol surprise, discard the connection"); the next op opens a new one.
//! If the daemon closed an idle connection (it restarted), the op is retried
//! once on a fresh connection: our ops are read-only, so that is safe.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::nix::nar::{NarError, NarReader};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{HashPart, StoreDir, StorePath};

use super::wire;
use super::{NarBody, Store, StoreError};

mod connection;
mod nar_stream;
mod stderr;
mod valid_path_info;
mod version;

use connection::{Connection, Op, OpError};
use valid_path_info::PathInfoError;

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
    /// two. Bounded; absent paths are never remembered (they may appear).
    paths: HashMap<HashPart, StorePath>,
    /// Build logs are files the daemon wrote; read here, as Nix's own
    /// daemon client does (§9).
    log_dir: Option<PathBuf>,
}

/// Entries [`DaemonStore::paths`] holds before it starts over.
const PATH_MEMO_CAPACITY: usize = 4096;

impl DaemonStore {
    /// A client of the daemon listening on `socket`, for paths in `store_dir`.
    /// Nothing is opened yet. `timeout` bounds each read and write on the
    /// socket, so a stuck daemon cannot hang a worker; zero means none.
    pub fn new(socket: PathBuf, store_dir: StoreDir, timeout: Duration) -> Self {
        DaemonStore {
            socket,
            store_dir,
            timeout: Some(timeout).filter(|t| !t.is_zero()),
            conn: None,
            returned: nar_stream::Home::default(),
            paths: HashMap::new(),
            log_dir: None,
        }
    }

    /// Serves build logs from `dir` (none without it).
    pub fn with_log_dir(mut self, dir: PathBuf) -> Self {
        self.log_dir = Some(dir);
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
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

    /// What the current connection's handshake said, if there is one.
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
    /// not valid (collected meanwhile) sends a corrupt stream (§7.6).
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
                    return Err(StoreError::Corrupt(format!(
                        "{path} changed: the daemon now reports {} bytes, {}",
                        c.nar_size,
                        c.nar_hash.to_prefixed_nix32()
                    ))
                    .into())
                }
                Some(_) => {}
            }
            let full = dir.display_path(path);
            conn.call(Op::NarFromPath, |w| wire::write_bytes(w, full.as_bytes()))?;
            Ok(())
        })?;
        let conn = self
            .conn
            .take()
            .expect("run keeps the connection on success");
        let mut stream = NarStream::new(self.returned.clone(), conn, info.nar_size);
        // No way to ask the daemon for part of a NAR: read and drop the head.
        let skipped = io::copy(&mut (&mut stream).take(offset), &mut io::sink())
            .map_err(|e| connection::io_failure("NarFromPath", e))?;
        if skipped != offset {
            // NarStream errors rather than ending early; never trust a
            // stream that did anyway (style.md 8).
            return Err(StoreError::Protocol(format!(
                "NarFromPath: the NAR ended after {skipped} bytes, before offset {offset}"
            )));
        }
        Ok(stream)
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
        let returned = self
            .returned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let (mut conn, reused) = match self.conn.take().or(returned) {
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
        e => StoreError::Corrupt(format!("{op}: {e}")),
    }
}

fn is_valid_path(conn: &mut Connection, dir: &StoreDir, path: &StorePath) -> Result<bool, OpError> {
    let full = dir.display_path(path);
    let mut reply = conn.call(Op::IsValidPath, |w| wire::write_bytes(w, full.as_bytes()))?;
    Ok(reply.bool("IsValidPath result")?)
}

/// `None` for an unknown hash part: the daemon answers `""` (§7.6).
fn query_path_from_hash_part(
    conn: &mut Connection,
    dir: &StoreDir,
    hash: &HashPart,
) -> Result<Option<StorePath>, OpError> {
    const OP: Op = Op::QueryPathFromHashPart;
    let mut reply = conn.call(OP, |w| wire::write_bytes(w, hash.as_str().as_bytes()))?;
    let full = reply.string(valid_path_info::path_bound(dir))?;
    let path = valid_path_info::parse_optional_path(dir, "path", full)
        .map_err(|e| path_info_failure(OP, e))?;
    if let Some(p) = &path {
        if p.hash_part() != *hash {
            return Err(StoreError::Protocol(format!("{OP}: asked for {hash}, got {p}")).into());
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
    let mut reply = conn.call(OP, |w| wire::write_bytes(w, full.as_bytes()))?;
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

impl Store for DaemonStore {
    fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// QueryPathInfo alone for a hash part seen before; else
    /// QueryPathFromHashPart then QueryPathInfo, on one connection.
    fn path_info_by_hash(&mut self, hash: &HashPart) -> Result<Option<PathInfo>, StoreError> {
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
            if self.paths.len() >= PATH_MEMO_CAPACITY {
                self.paths.clear();
            }
            self.paths.insert(*hash, info.path.clone());
        }
        Ok(info)
    }

    fn path_info(&mut self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        self.run(|conn, dir| query_path_info(conn, dir, path))
    }

    fn is_valid_path(&mut self, path: &StorePath) -> Result<bool, StoreError> {
        self.run(|conn, dir| is_valid_path(conn, dir, path))
    }

    /// From the files when we can read them (no daemon round trip, no copy
    /// through its process), else through NarFromPath.
    fn nar(&mut self, info: &PathInfo, offset: u64) -> Result<NarBody, StoreError> {
        check_offset(info, offset)?;
        let local = Path::new(self.store_dir.as_str()).join(info.path.base_name());
        match NarReader::open_store_path_at(&local, offset) {
            Ok(reader) if reader.nar_size() == info.nar_size => Ok(NarBody::Files(reader)),
            Ok(reader) => Err(StoreError::Corrupt(format!(
                "{}: the files make a {}-byte NAR, the store says {}",
                local.display(),
                reader.nar_size(),
                info.nar_size
            ))),
            // Not ours to read (permissions), or not on this machine (the
            // socket leads elsewhere): the daemon can still send it.
            Err(NarError::Io { source, .. })
                if matches!(
                    source.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound
                ) =>
            {
                Ok(NarBody::Stream(Box::new(
                    self.nar_from_daemon(info, offset)?,
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// From the files only: the daemon has no operation for a listing, and
    /// making one from NarFromPath would read the whole NAR. Files we cannot
    /// read are an I/O error (500), said in the log.
    fn nar_listing(&mut self, info: &PathInfo) -> Result<Vec<u8>, StoreError> {
        let local = Path::new(self.store_dir.as_str()).join(info.path.base_name());
        super::listing_from_files(&local, info)
    }

    fn log_dir(&self) -> Option<&Path> {
        self.log_dir.as_deref()
    }
}
