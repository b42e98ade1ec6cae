//! Choosing the store: `--store URI` / `NIX_REMOTE`, Nix's conventions.
//!
//! STUB: interface fixed, bodies to be written.

use super::{Store, StoreError};

/// Makes one store connection per worker, all to the same store.
#[derive(Clone, Debug)]
pub struct Opener {}

impl Opener {
    /// Resolves `uri` (`auto`, `daemon`, `unix://…`, `local`, `local?root=…`, an
    /// absolute path) with `NIX_STORE_DIR`/`NIX_STATE_DIR`/`NIX_DAEMON_SOCKET_PATH`
    /// from `env`, and checks once that the store can be reached.
    pub fn resolve(uri: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, StoreError> {
        let _ = (uri, env);
        todo!()
    }

    pub fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        todo!()
    }
}
