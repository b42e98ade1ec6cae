//! narinfo: rendering as nix-serve does (`nix-protocols.md` §4.3) and parsing
//! as Nix does (§4.1).
//!
//! STUB: interface fixed, bodies to be written.

use thiserror::Error;

use super::hash::Sha256;
use super::path_info::PathInfo;
use super::store_path::{StoreDir, StorePath};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NarInfoError {
    #[error("narinfo line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("narinfo lacks {0}")]
    Missing(&'static str),
}

/// A parsed narinfo (what a binary cache serves for `/<hash>.narinfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: StorePath,
    pub url: String,
    pub compression: String,
    pub file_hash: Option<String>,
    pub file_size: Option<u64>,
    pub nar_hash: Sha256,
    pub nar_size: u64,
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    pub system: Option<String>,
    pub sigs: Vec<String>,
    pub ca: Option<String>,
}

/// Renders `info` exactly as nix-serve does, with the `Sig:` lines given and a
/// `CA:` line when the path is content-addressed.
pub fn render(info: &PathInfo, store_dir: &StoreDir, sigs: &[String]) -> String {
    let _ = (info, store_dir, sigs);
    todo!()
}

impl NarInfo {
    /// Parses with Nix's own line rules (§4.1).
    pub fn parse(text: &str, store_dir: &StoreDir) -> Result<NarInfo, NarInfoError> {
        let _ = (text, store_dir);
        todo!()
    }
}
