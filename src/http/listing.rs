//! `/<hash>.ls`: the NAR listing, as Nix writes it with `write-nar-listing`,
//! with every file's `narOffset` in the NAR we serve (`nix::nar::listing`).

use crate::nix::store_path::HashPart;
use crate::store::Store;

use super::response::{Body, HandlerError, Response, CACHE_SHORT};

pub fn handle(store: &mut dyn Store, hash: &HashPart) -> Result<Response, HandlerError> {
    let Some(info) = store.path_info_by_hash(hash)? else {
        return Ok(Response::text(404, "No such path.\n"));
    };
    let json = store.nar_listing(&info)?;
    // Named by the hash part like a narinfo, so cached like one: the path
    // can be deleted and built again.
    Ok(Response::new(
        200,
        "application/json",
        CACHE_SHORT,
        Body::Bytes(json),
    ))
}
