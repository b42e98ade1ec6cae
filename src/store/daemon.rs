//! nix-daemon worker-protocol client (`nix-protocols.md` §7).
//!
//! PLACEHOLDER on branch `local` only, so that `uri.rs` compiles against the
//! constructor the daemon helper is writing; the lead takes the real file at
//! merge.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use super::{Store, StoreError};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{HashPart, StoreDir, StorePath};

pub struct DaemonStore {
    store_dir: StoreDir,
}

impl DaemonStore {
    pub fn new(
        socket: PathBuf,
        store_dir: StoreDir,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let _ = (socket, store_dir, timeout);
        Err(StoreError::Unavailable(
            "daemon backend not built yet".into(),
        ))
    }

    pub fn check(&mut self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "daemon backend not built yet".into(),
        ))
    }
}

impl Store for DaemonStore {
    fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    fn path_info_by_hash(&mut self, _: &HashPart) -> Result<Option<PathInfo>, StoreError> {
        todo!()
    }

    fn path_info(&mut self, _: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        todo!()
    }

    fn is_valid_path(&mut self, _: &StorePath) -> Result<bool, StoreError> {
        todo!()
    }

    fn nar(&mut self, _: &PathInfo, _: u64) -> Result<Box<dyn Read + '_>, StoreError> {
        todo!()
    }
}
