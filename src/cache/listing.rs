//! `/<hash>.ls`: the NAR listing, as Nix writes it with `write-nar-listing`,
//! with every file's `narOffset` in the NAR we serve (`nix::nar::listing`).

use crate::nix::store_path::HashPart;
use crate::store::Store;

use super::range;
use crate::server::app::{Body, Response};

use super::response::{self, HandlerError, CACHE_SHORT};

pub fn handle(
    store: &mut dyn Store,
    hash: &HashPart,
    range_header: Option<&str>,
) -> Result<Response, HandlerError> {
    let Some(info) = store.path_info_by_hash(hash)? else {
        return Ok(response::no_such_path());
    };
    let mut json = store.nar_listing(&info)?;
    let total = json.len() as u64;
    let Some((status, start, len)) = range::select(range_header, total) else {
        return Ok(response::range_not_satisfiable(total));
    };
    // Within a Vec's length, so these fit in usize.
    json.truncate((start + len) as usize);
    json.drain(..start as usize);
    // Named by the hash part like a narinfo, so cached like one: the path
    // can be deleted and built again.
    let r = Response::new(status, "application/json", CACHE_SHORT, Body::Bytes(json));
    Ok(range::with_headers(r, start, len, total))
}
