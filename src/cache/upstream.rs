//! Pull-through (`--upstream`): the replies for a path this store lacks
//! and an upstream cache has (`crate::store::upstream` fetches it).
//!
//! - narinfo: the upstream's, pointing to our NAR route, `Compression:
//!   none`, with the upstream's signatures and never ours (we do not vouch
//!   for a path that is not in our store). 404 only when every upstream
//!   said it has no such path; when one failed and none had it, 502
//!   (`HandlerError::Upstream`).
//! - NAR: the shared download's bytes as they arrive, `Content-Length` =
//!   NarSize, ranges from the download's file; HEAD starts no download.
//!   Each reply takes its chunk buffers from the memory budget of computed
//!   bodies (`heavy.rs`), and each download its decoder's window and
//!   buffers (`store::upstream::Budget`): past it, 503.
//!
//! None of these replies is filed for the event loops (`narinfo/shared.rs`
//! rests on the store's change signal; an upstream answer has its own short
//! life, `store/upstream/narinfo.rs`), and a miss of the local store is
//! not filed either: with upstreams, every narinfo this store lacks goes to
//! a worker, which never blocks a loop on the network. Once the path is
//! imported it is an ordinary local path and the loops answer it as any.

use crate::nix::store_path::HashPart;
use crate::server::app::{Body, Response};
use crate::store::upstream::{Lookup, Upstream, UpstreamError};

use super::heavy::{self, Holding};
use super::nar::{Encoding, NarRequest, CONTENT_TYPE};
use super::narinfo;
use super::primed::Primed;
use super::range;
use super::response::{self, HandlerError, CACHE_IMMUTABLE, CACHE_SHORT};

/// The narinfo of `hash`, which this store lacks.
pub fn narinfo(up: &Upstream, hash: &HashPart) -> Result<Response, HandlerError> {
    match up.narinfo(hash) {
        Lookup::Found(found) => Ok(narinfo::reply_of(Some(up.render(&found).into_bytes()))),
        Lookup::Absent => Ok(narinfo::reply_of(None)),
        Lookup::Failed(why) => Err(HandlerError::Upstream(format!(
            "no upstream cache has {hash}.narinfo, and not every one answered: {why}"
        ))),
    }
}

/// The NAR of `req.hash`, which this store lacks.
pub fn nar(up: &Upstream, req: &NarRequest<'_>) -> Result<Response, HandlerError> {
    // Our narinfo for an upstream path names the plain `.nar`: a
    // `.nar.zst` URL for it comes from no narinfo of ours. And the plain
    // one goes out as the NAR itself even to a client that allows zstd
    // (an encoding is the server's choice, RFC 9110 §12.5.3).
    if let Encoding::ZstdFile { .. } = req.encoding {
        return Ok(response::no_such_path());
    }
    let cache_control = match req.nar_hash {
        Some(_) => CACHE_IMMUTABLE,
        None => CACHE_SHORT,
    };
    // Taken before the download starts, so that a refusal fetches nothing.
    let permit = match req.head_only {
        true => None,
        false => Some(
            req.heavy
                .take(heavy::STREAM_BUFFERS)
                .ok_or(HandlerError::Busy)?,
        ),
    };
    let (info, body) = if req.head_only {
        match up.nar_info(&req.hash, req.nar_hash.as_ref()) {
            Ok(found) => (found.info.clone(), None),
            Err(e) => return refused(e),
        }
    } else {
        match up.nar(&req.hash, req.nar_hash.as_ref()) {
            Ok(fetched) => (fetched.info, Some(fetched.reader)),
            Err(e) => return refused(e),
        }
    };
    let total = info.nar_size;
    let Some((status, start, len)) = range::select(req.range, total) else {
        return Ok(response::range_not_satisfiable(total));
    };
    let body = match (body, permit) {
        (Some(reader), Some(permit)) => {
            // A download that fails before its first byte (the upstream
            // is down, or lost the file) is a status, not a cut 200. Only
            // the first bytes are awaited: a worker must not wait for a
            // whole chunk over a slow link.
            let primed = Primed::first(reader.starting_at(start))
                .map_err(|e| HandlerError::Upstream(e.to_string()))?;
            Body::Stream {
                reader: Box::new(Holding {
                    reader: std::io::Read::take(primed, len),
                    _permit: permit,
                }),
                len: Some(len),
            }
        }
        _ => Body::Omitted { len: Some(len) },
    };
    let mut r = Response::new(status, CONTENT_TYPE, cache_control, body);
    if req.vary {
        r = r.with_header("Vary", "Accept-Encoding".to_owned());
    }
    Ok(range::with_headers(r, start, len, total))
}

/// The reply, or the error, for a NAR the upstreams cannot give now.
fn refused(e: UpstreamError) -> Result<Response, HandlerError> {
    match e {
        UpstreamError::Absent => Ok(response::no_such_path()),
        UpstreamError::OtherNar => Ok(response::incorrect_nar_hash()),
        UpstreamError::Failed(why) => Err(HandlerError::Upstream(format!(
            "no upstream cache has the NAR, and not every one answered: {why}"
        ))),
        UpstreamError::Busy(_) | UpstreamError::NoMemory => Err(HandlerError::Busy),
        UpstreamError::TempFile(e) => Err(HandlerError::Reply(format!(
            "an upstream download cannot start: {e}"
        ))),
    }
}
