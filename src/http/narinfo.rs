//! `/<hash>.narinfo`: nix-serve's body (`nix-protocols.md` §4.3) plus `CA:`.
//!
//! Signatures: with keys, one fresh `Sig:` per key and the stored ones
//! dropped, as nix-serve does with one key; without keys, the stored ones, so
//! a cache of signed paths stays usable with no key here (§4.3, §5).

use crate::nix::compression::Compression;
use crate::nix::narinfo;
use crate::nix::sig_cache::SigCache;
use crate::nix::signing::SecretKey;
use crate::nix::store_path::HashPart;
use crate::store::Store;

use super::response::{Body, HandlerError, Response, CACHE_SHORT};

pub fn handle(
    store: &mut dyn Store,
    keys: &[SecretKey],
    memo: &mut SigCache,
    hash: &HashPart,
    compression: Compression,
) -> Result<Response, HandlerError> {
    let Some(info) = store.path_info_by_hash(hash)? else {
        // nix-serve's words. A 404 is only for "definitely absent" (§4.4).
        return Ok(Response::text(404, "No such path.\n"));
    };
    let store_dir = store.store_dir();
    let sigs: &[String] = if keys.is_empty() {
        &info.sigs
    } else {
        memo.signatures(keys, info.fingerprint(store_dir))
    };
    let body = narinfo::render_compressed(&info, store_dir, sigs, compression);
    Ok(Response::new(
        200,
        "text/x-nix-narinfo",
        CACHE_SHORT,
        Body::Bytes(body.into_bytes()),
    ))
}
