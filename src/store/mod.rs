//! The synchronous store layer: one small trait, two backends (the daemon
//! protocol and SQLite, `docs/protocols.md` §7 and §8).
//!
//! Every worker thread owns one `Box<dyn Store>`, made by [`Opener::open`]; no
//! lock is taken on the hot path.

use std::error::Error;
use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use crate::nix::nar::listing::store_path_listing;
use crate::nix::nar::{NarError, NarReader};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{HashPart, StoreDir, StorePath};

pub mod build_log;
pub mod cache;
pub mod closure;
pub mod daemon;
pub mod local;
pub mod opener;
pub mod slot;
pub mod sqlite;
pub mod upstream;
pub mod uri;
pub mod wire;

pub use cache::Generation;
pub use opener::Opener;
pub use slot::{CountingOpener, OpenStore, StoreSlot};

/// What can go wrong asking the store. The HTTP layer maps each variant to a
/// status in one exhaustive `match`; the text goes to the log, never the body.
///
/// Each variant but `Io` carries a [`Failure`]: what failed, shown in the
/// message, and the error that made it fail, kept as the `source()` so that
/// the log prints the whole chain ([`crate::log::chain`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached now (daemon down, socket missing, database
    /// locked past the retry budget). Transient: clients should retry (503).
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Failure),
    /// The daemon answered with an error message (ANSI escapes stripped).
    #[error("nix-daemon: {0}")]
    Daemon(#[source] Failure),
    /// The peer broke the protocol; the connection has been dropped.
    #[error("daemon protocol: {0}")]
    Protocol(#[source] Failure),
    /// A read or write on the store connection timed out.
    #[error("store timed out: {0}")]
    Timeout(#[source] Failure),
    /// Data in the store that does not parse (bad hash, bad path in the DB).
    #[error("corrupt store data: {0}")]
    Corrupt(#[source] Failure),
    /// I/O on the store's files (a path that vanished mid-request, say).
    #[error("store I/O: {0}")]
    Io(#[from] io::Error),
}

impl StoreError {
    /// Whether the connection that produced this error must be dropped:
    /// after a transport or protocol failure its state is unknown
    /// (`docs/style.md` §8). An error the daemon reported, or bad data in the
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

/// What failed (the `Display`) and, when another error made it fail, that
/// error (the `source()`, left out of the `Display`).
#[derive(Debug)]
pub struct Failure {
    what: String,
    cause: Option<Box<dyn Error + Send + Sync>>,
}

impl Failure {
    /// A failure with no underlying error (a reply that makes no sense, a
    /// size that does not match).
    pub fn new(what: impl Into<String>) -> Self {
        Failure {
            what: what.into(),
            cause: None,
        }
    }

    /// `what` failed because of `cause`.
    pub fn because(
        what: impl Into<String>,
        cause: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        Failure {
            what: what.into(),
            cause: Some(cause.into()),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl Error for Failure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause.as_deref().map(|c| c as &(dyn Error + 'static))
    }
}

impl From<String> for Failure {
    fn from(what: String) -> Self {
        Failure::new(what)
    }
}

impl From<&str> for Failure {
    fn from(what: &str) -> Self {
        Failure::new(what)
    }
}

/// A NAR that cannot be made from the files: I/O keeps its kind (a vanished
/// path is still an I/O error, never "absent"); anything else means the files
/// are not what the store recorded.
impl From<NarError> for StoreError {
    fn from(e: NarError) -> Self {
        match e {
            NarError::Io { path, source } => StoreError::Io(io::Error::new(
                source.kind(),
                Failure::because(path, source),
            )),
            other => StoreError::Corrupt(Failure::because(
                "the files are not what the store recorded",
                other,
            )),
        }
    }
}

/// One connection to a Nix store. Not shared between threads.
pub trait Store: Send {
    /// The logical store directory (`/nix/store` usually).
    fn store_dir(&self) -> &StoreDir;

    /// Which state of the store this connection's answers reflect: the same
    /// [`Generation`] as before means nothing was committed to the store in
    /// between, so an answer remembered under it is still true. Read it
    /// *before* the look-ups it is to guard (`cache.rs`). Cheap: no round
    /// trip to the store.
    fn generation(&mut self) -> Result<Generation, StoreError>;

    /// Hot path: the info of the valid path whose hash part is `hash`, or
    /// `None` when there is none. Remembered per connection, positive and
    /// negative, until the [`Generation`] changes.
    fn path_info_by_hash(&mut self, hash: &HashPart) -> Result<Option<PathInfo>, StoreError>;

    /// The info of `path`, or `None` when it is not valid. Asked for an
    /// output's deriver (`/log/<output>`, `cache/build_log.rs`), for each path
    /// of a `--serve-closure-of` closure through the daemon
    /// (`closure::closure_by_path_info`), and by the daemon backend to tell
    /// whether a database is its daemon's (`DaemonStore::find_database`).
    fn path_info(&mut self, path: &StorePath) -> Result<Option<PathInfo>, StoreError>;

    /// The NAR of the valid path `info`, starting at byte `offset`: exactly
    /// `info.nar_size - offset` bytes, or an error (never short or wrong bytes).
    /// It owns what it reads from, so it can outlive the request's worker.
    fn nar(&mut self, info: &PathInfo, offset: u64) -> Result<NarBody, StoreError>;

    /// The NAR listing (`<hash>.ls`) of the valid path `info`, made from its
    /// files without reading them (`nix::nar::listing`), or from its NAR
    /// when the files are not here (a daemon's store elsewhere).
    fn nar_listing(&mut self, info: &PathInfo) -> Result<Vec<u8>, StoreError>;

    /// Where Nix keeps this store's build logs ([`build_log::open`]), if known.
    fn log_dir(&self) -> Option<&Path>;

    /// Whether things named by `path` (a derivation's build log, which
    /// outlives the derivation) may be served at all: everything, unless
    /// `--serve-closure-of` narrows it ([`closure::Filtered`]).
    fn serves(&self, _path: &StorePath) -> bool {
        true
    }
}

/// [`Store::nar_listing`] from the files of `info` at `real`: a tree that no
/// longer makes the recorded NarSize is corrupt, since its offsets would not
/// match the NAR a client gets.
fn listing_from_files(real: &Path, info: &PathInfo) -> Result<Vec<u8>, StoreError> {
    let (json, size) = store_path_listing(real)?;
    if size != info.nar_size {
        return Err(wrong_size(real, size, info));
    }
    Ok(json)
}

/// The files at `real` make a `size`-byte NAR where the store recorded
/// another: changed behind Nix's back, never to be sent as they are.
fn wrong_size(real: &Path, size: u64, info: &PathInfo) -> StoreError {
    StoreError::Corrupt(
        format!(
            "{}: the files make a {size}-byte NAR, the store says {}",
            real.display(),
            info.nar_size
        )
        .into(),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_the_source_not_the_message() {
        let cause = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        let e = StoreError::Unavailable(Failure::because("cannot connect to /s", cause));
        assert_eq!(e.to_string(), "store unavailable: cannot connect to /s");
        assert_eq!(
            crate::log::chain(&e),
            "store unavailable: cannot connect to /s: connection refused"
        );
        let io = StoreError::from(NarError::Io {
            path: "/nix/store/x".into(),
            source: io::Error::new(io::ErrorKind::NotFound, "No such file"),
        });
        match &io {
            StoreError::Io(e) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            crate::log::chain(&io),
            "store I/O: /nix/store/x: No such file"
        );
    }
}
