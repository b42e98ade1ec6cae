//! `/log/<…>`: a derivation's build log, plain text, decompressed while it
//! streams when Nix stored it as `.bz2` (`nix-protocols.md` §9).

use crate::store::{log, Store};

use super::response::{Body, HandlerError, Response, CACHE_IMMUTABLE};
use super::routes::LogName;

pub const CONTENT_TYPE: &str = "text/plain; charset=utf-8";

pub fn handle(store: &mut dyn Store, name: &LogName) -> Result<Response, HandlerError> {
    // Nix's own lookup: a derivation names its log; any other path, its
    // deriver's. A derivation need not be valid: its log outlives it.
    let drv = match name {
        LogName::Path(p) if p.is_derivation() => Some(p.clone()),
        LogName::Path(p) => store.path_info(p)?.and_then(|i| i.deriver),
        LogName::Hash(h) => store.path_info_by_hash(h)?.and_then(|i| {
            if i.path.is_derivation() {
                Some(i.path)
            } else {
                i.deriver
            }
        }),
    };
    let found = match (drv, store.log_dir()) {
        (Some(drv), Some(dir)) => log::open(dir, &drv)?,
        _ => None,
    };
    let Some(found) = found else {
        return Ok(Response::text(404, "No such log.\n"));
    };
    Ok(Response::new(
        200,
        CONTENT_TYPE,
        CACHE_IMMUTABLE,
        Body::Stream {
            reader: found.reader,
            len: found.len,
        },
    ))
}
