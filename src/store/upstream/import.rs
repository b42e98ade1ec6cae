//! Adding a downloaded path to this machine's store through the nix-daemon
//! (AddToStoreNar), fed from the same bytes the clients get.
//!
//! The daemon decides: it adds the path only with a signature by a key in
//! its own `trusted-public-keys` (or a content address that proves it), and
//! only once every reference is valid. We ask for nothing more.
//!
//! References not yet valid: Nix clients copy a closure references first
//! (`copyPaths` starts a path once its references are done), so the
//! reference is usually downloading through us at that moment, its import
//! a step behind its last byte. The import therefore waits for the imports
//! in flight here of the path's references (bounded by `REFERENCE_WAIT`),
//! then asks the daemon which are valid. If one still is not (the client
//! had it already, or it came from elsewhere), the path is served but not
//! imported: fetching a closure nobody asked for, for our store's sake,
//! could cost far more upstream traffic than the path itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::download::{Download, Outcome};
use crate::log;
use crate::nix::store_path::{HashPart, StoreDir};
use crate::store::daemon::DaemonStore;
use crate::store::{Store, StoreError};

/// How long an import waits for its references' imports in flight here.
pub const REFERENCE_WAIT: Duration = Duration::from_secs(600);
/// How long the daemon may take after the last byte to check the NAR and
/// register the path (it hashes and may deduplicate the files first).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// Where imports go: the nix-daemon's socket.
#[derive(Clone, Debug)]
pub struct ImportTarget {
    pub socket: PathBuf,
    pub store_dir: StoreDir,
    /// Bounds each read and write on the daemon connection but the wait for
    /// the verdict (see [`REPLY_TIMEOUT`]).
    pub timeout: Duration,
}

/// How an import ended, one metric label each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imported {
    /// The path is valid in the store now.
    Added,
    /// It was already valid (another client's import, a build).
    AlreadyValid,
    /// The daemon said no (no trusted signature, a full disk…).
    Refused,
    /// A reference is not valid here, and none was on its way.
    MissingReference,
    /// The download failed, or the transfer to the daemon broke.
    Failed,
}

impl Imported {
    pub fn label(self) -> &'static str {
        match self {
            Imported::Added => "added",
            Imported::AlreadyValid => "already-valid",
            Imported::Refused => "refused",
            Imported::MissingReference => "missing-reference",
            Imported::Failed => "failed",
        }
    }
}

/// Imports `download`'s path into `target`'s store; `in_flight` finds the
/// download here of a reference, if any. The reason a path is not added is
/// logged once, here.
pub fn import(
    target: &ImportTarget,
    download: &Arc<Download>,
    in_flight: &dyn Fn(&HashPart) -> Option<Arc<Download>>,
) -> Imported {
    let info = &download.found.info;
    let full = target.store_dir.display_path(&info.path);
    let mut daemon = DaemonStore::new(
        target.socket.clone(),
        target.store_dir.clone(),
        target.timeout,
    );
    let deadline = Instant::now() + REFERENCE_WAIT;
    for r in info.references.iter().filter(|r| **r != info.path) {
        if let Some(other) = in_flight(&r.hash_part()) {
            other.wait_finished(deadline);
        }
    }
    let valid = |daemon: &mut DaemonStore, what| match daemon.path_info(what) {
        Ok(found) => Ok(found.is_some()),
        Err(e) => Err(e),
    };
    let checked: Result<Option<String>, StoreError> = (|| {
        if valid(&mut daemon, &info.path)? {
            return Ok(Some(String::new()));
        }
        for r in info.references.iter().filter(|r| **r != info.path) {
            if !valid(&mut daemon, r)? {
                return Ok(Some(target.store_dir.display_path(r)));
            }
        }
        Ok(None)
    })();
    match checked {
        Ok(Some(missing)) if missing.is_empty() => return Imported::AlreadyValid,
        Ok(Some(missing)) => {
            log::warn(&format!(
                "{full} is served but not added to the store: its reference {missing} is not valid here"
            ));
            return Imported::MissingReference;
        }
        Ok(None) => {}
        Err(e) => {
            log::warn(&format!(
                "{full} is served but not added to the store: {}",
                log::chain(&e)
            ));
            return Imported::Failed;
        }
    }
    let mut nar = download.reader();
    match daemon.add_to_store_nar(info, &mut nar, REPLY_TIMEOUT) {
        Ok(()) => Imported::Added,
        Err(StoreError::Daemon(why)) => {
            log::warn(&format!(
                "{full} is served but not added to the store: the nix-daemon refused it: {why}"
            ));
            Imported::Refused
        }
        Err(e) => {
            // The download's own failure is logged where it happened.
            if download.outcome() == Outcome::Verified {
                log::warn(&format!(
                    "{full} is served but not added to the store: {}",
                    log::chain(&e)
                ));
            }
            Imported::Failed
        }
    }
}
