//! Streaming NAR encoder (`nix-protocols.md` §3).
//!
//! STUB: interface fixed, bodies to be written.

use std::io::{self, Read};
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NarError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: unsupported file type")]
    FileType { path: String },
}

/// A `Read` over the NAR serialisation of a filesystem path.
pub struct NarReader {}

impl NarReader {
    /// Walks `path` (without reading file contents) to plan the NAR and learn
    /// its size; streaming starts at `offset`.
    pub fn open_at(path: &Path, offset: u64) -> Result<Self, NarError> {
        let _ = (path, offset);
        todo!()
    }

    pub fn open(path: &Path) -> Result<Self, NarError> {
        Self::open_at(path, 0)
    }

    /// Total NAR size, known before the first byte.
    pub fn nar_size(&self) -> u64 {
        todo!()
    }
}

impl Read for NarReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let _ = buf;
        todo!()
    }
}
