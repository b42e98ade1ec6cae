//! The synchronous store layer: one small trait, two backends (`nix-protocols.md`
//! §7 daemon protocol, §8 SQLite).
//!
//! Every worker thread owns one `Box<dyn Store>`, made by [`Opener::open`]; no
//! lock is taken on the hot path.

use std::io::{self, Read};
use std::path::Path;

use thiserror::Error;

use crate::nix::nar::listing::store_path_listing;
use crate::nix::nar::{NarError, NarReader};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{HashPart, StoreDir, StorePath};

pub mod daemon;
pub mod local;
pub mod log;
pub mod slot;
pub mod uri;
pub mod wire;

pub use slot::{Counted, OpenStore, StoreSlot};
pub use uri::Opener;

/// What can go wrong asking the store. The HTTP layer maps each variant to a
/// status in one exhaustive `match`; the text goes to the log, never the body.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store cannot be reached now (daemon down, socket missing, database
    /// locked past the retry budget). Transient: clients should retry (503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The daemon answered with an error message (ANSI escapes stripped).
    #[error("nix-daemon: {0}")]
    Daemon(String),
    /// The peer broke the protocol; the connection has been dropped.
    #[error("daemon protocol: {0}")]
    Protocol(String),
    /// A read or write on the store connection timed out.
    #[error("store timed out: {0}")]
    Timeout(String),
    /// Data in the store that does not parse (bad hash, bad path in the DB).
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// I/O on the store's files (a path that vanished mid-request, say).
    #[error("store I/O: {0}")]
    Io(#[from] io::Error),
}

impl StoreError {
    /// Whether the connection that produced this error must be dropped:
    /// after a transport or protocol failure its state is unknown
    /// (`style.md` 8). An error the daemon reported, or bad data in the
    /// store, leaves the connection in step.
    pub fn poisons_connection(&self) -> bool {
        match self {
            StoreError::Unavailable(_)
            | StoreError::Timeout(_)
            | StoreError::Protocol(_)
            | StoreError::Io(_) => true,
            StoreError::Daemon(_) | StoreError::Corrupt(_) => false,
        }
    }
}

/// A NAR that cannot be made from the files: I/O keeps its kind (a vanished
/// path is still an I/O error, never "absent"); anything else means the files
/// are not what the store recorded.
impl From<NarError> for StoreError {
    fn from(e: NarError) -> Self {
        match e {
            NarError::Io { path, source } => {
                StoreError::Io(io::Error::new(source.kind(), format!("{path}: {source}")))
            }
            other => StoreError::Corrupt(other.to_string()),
        }
    }
}

/// One connection to a Nix store. Not shared between threads.
pub trait Store: Send {
    /// The logical store directory (`/nix/store` usually).
    fn store_dir(&self) -> &StoreDir;

    /// Hot path: the info of the valid path whose hash part is `hash`, or
    /// `None` when there is none. One round trip where the backend allows it.
    fn path_info_by_hash(&mut self, hash: &HashPart) -> Result<Option<PathInfo>, StoreError>;

    /// The info of `path`, or `None` when it is not valid.
    fn path_info(&mut self, path: &StorePath) -> Result<Option<PathInfo>, StoreError>;

    fn is_valid_path(&mut self, path: &StorePath) -> Result<bool, StoreError>;

    /// The NAR of the valid path `info`, starting at byte `offset`: exactly
    /// `info.nar_size - offset` bytes, or an error (never short or wrong bytes).
    /// It owns what it reads from, so it can outlive the request's worker.
    fn nar(&mut self, info: &PathInfo, offset: u64) -> Result<NarBody, StoreError>;

    /// The NAR listing (`<hash>.ls`) of the valid path `info`, made from its
    /// files without reading them (`nix::nar::listing`).
    fn nar_listing(&mut self, info: &PathInfo) -> Result<Vec<u8>, StoreError>;

    /// Where Nix keeps this store's build logs ([`log::open`]), if known.
    fn log_dir(&self) -> Option<&Path>;
}

/// [`Store::nar_listing`] from the files of `info` at `real`: a tree that no
/// longer makes the recorded NarSize is corrupt, since its offsets would not
/// match the NAR a client gets.
fn listing_from_files(real: &Path, info: &PathInfo) -> Result<Vec<u8>, StoreError> {
    let (json, size) = store_path_listing(real)?;
    if size != info.nar_size {
        return Err(StoreError::Corrupt(format!(
            "{}: the files make a {size}-byte NAR, the store says {}",
            real.display(),
            info.nar_size
        )));
    }
    Ok(json)
}

/// Where a NAR's bytes come from.
pub enum NarBody {
    /// Encoded here from the files: framing rendered from the plan, file
    /// contents straight from the files (`sendfile(2)` by the server).
    Files(NarReader),
    /// Made elsewhere and read as a stream (the nix-daemon's NarFromPath).
    Stream(Box<dyn Read + Send>),
}

impl Read for NarBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            NarBody::Files(r) => r.read(buf),
            NarBody::Stream(r) => r.read(buf),
        }
    }
}
