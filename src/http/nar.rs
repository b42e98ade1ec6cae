//! `/nar/…`: the NAR of a path, streamed with `Content-Length` = NarSize
//! (never chunked) and byte ranges (`nix-protocols.md` §4.3, §4.4, §10.4).

use std::io::Read;

use crate::nix::hash::Sha256;
use crate::nix::store_path::HashPart;
use crate::store::{NarBody, Store, StoreError};

use super::range::{self, RangeOutcome};
use super::response::{Body, HandlerError, Response, CACHE_IMMUTABLE, CACHE_SHORT};

pub const CONTENT_TYPE: &str = "application/x-nix-nar";

pub struct NarRequest<'r> {
    pub hash: HashPart,
    /// From the URL; `None` for the legacy `/nar/<hash>.nar`.
    pub nar_hash: Option<Sha256>,
    pub range: Option<&'r str>,
    /// HEAD: headers only, the NAR is never opened.
    pub head_only: bool,
}

pub fn handle(store: &mut dyn Store, req: &NarRequest<'_>) -> Result<Response, HandlerError> {
    let Some(info) = store.path_info_by_hash(&req.hash)? else {
        return Ok(Response::text(404, "No such path.\n"));
    };
    // Re-checked on every request, as nix-serve does (§10.4): a narinfo cached
    // by a client may name a NAR hash that no longer exists here.
    let cache_control = match req.nar_hash {
        Some(h) if h != info.nar_hash => {
            return Ok(Response::text(
                404,
                "Incorrect NAR hash. Maybe the path has been recreated.\n",
            ))
        }
        Some(_) => CACHE_IMMUTABLE,
        // The legacy URL names the path, not the content.
        None => CACHE_SHORT,
    };
    let total = info.nar_size;
    let (status, start, len) = match range::parse(req.range, total) {
        RangeOutcome::Full => (200, 0, total),
        RangeOutcome::Partial { start, len } => (206, start, len),
        RangeOutcome::Unsatisfiable => {
            return Ok(Response::text(416, "Range not satisfiable.\n")
                .with_header("Content-Range", format!("bytes */{total}")))
        }
    };
    // HEAD opens the NAR too (plans it, reads no contents), so HEAD and GET
    // agree on a path whose files are gone.
    let nar = match store.nar(&info, start) {
        Ok(nar) => nar,
        Err(e) if is_not_found(&e) => {
            // Collected between the look-up and now (the garbage collector
            // invalidates a path, then deletes its files): absent, as the
            // look-up now says; a path still valid with its files gone is
            // the store's problem (500).
            if store.path_info_by_hash(&req.hash)?.is_none() {
                return Ok(Response::text(404, "No such path.\n"));
            }
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let body = match nar {
        _ if req.head_only => Body::Omitted { len: Some(len) },
        NarBody::Files(reader) => Body::Nar { reader, len },
        NarBody::Stream(reader) => Body::Stream {
            reader: Box::new(reader.take(len)),
            len: Some(len),
        },
    };
    let mut r = Response::new(status, CONTENT_TYPE, cache_control, body)
        .with_header("Accept-Ranges", "bytes".to_owned());
    if status == 206 {
        r = r.with_header(
            "Content-Range",
            format!("bytes {start}-{}/{total}", start + len - 1),
        );
    }
    Ok(r)
}

/// Whether `e` says the path's files are not there (any more).
fn is_not_found(e: &StoreError) -> bool {
    matches!(e, StoreError::Io(io) if io.kind() == std::io::ErrorKind::NotFound)
}
