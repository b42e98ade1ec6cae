//! `/nar/…`: the NAR of a path, streamed with `Content-Length` = NarSize
//! (never chunked) and byte ranges (`docs/protocols.md` §4.3, §4.4, §10.4).

use std::io::{self, Read};
use std::sync::Arc;

use crate::nix::compression::Compression;
use crate::nix::hash::Sha256;
use crate::nix::nar::{self as nar_format, NarReader};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::HashPart;
use crate::server::app::{Body, Request, Response, Segment, Segments};
use crate::store::upstream::Upstream;
use crate::store::{Failure, NarBody, Store, StoreError};

use super::heavy::{self, Heavy, Holding};
use super::primed::Primed;
use super::range;
use super::response::{self, HandlerError, CACHE_IMMUTABLE, CACHE_SHORT};
use super::routes::RouteError;
use super::ReplySettings;

pub const CONTENT_TYPE: &str = "application/x-nix-nar";
/// A NAR up to this size is read here, by the worker, and goes back to the
/// loop as bytes: sent by a body thread, it would cost one more hand-off
/// (loop, worker, loop, body thread, loop) for a few hundred bytes, most
/// of an empty NAR's time. The size is what a NAR going out holds of
/// framing anyway (README "Limits").
const SMALL: u64 = 16 * 1024;

pub struct NarRequest<'r> {
    pub hash: HashPart,
    /// From the URL; `None` for the legacy `/nar/<hash>.nar`.
    pub nar_hash: Option<Sha256>,
    pub range: Option<&'r str>,
    /// HEAD: headers only, the NAR is never opened.
    pub head_only: bool,
    pub encoding: Encoding,
    /// Whether the reply depends on `Accept-Encoding` (compression on): a
    /// cache in front must key on it.
    pub vary: bool,
    /// The memory budget a zstd encoder takes its share of.
    pub heavy: &'r Arc<Heavy>,
}

/// How the NAR's bytes go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The NAR itself, with ranges.
    Identity,
    /// `/nar/….nar.zst`: the body is a zstd stream at this level.
    ZstdFile { level: i32 },
    /// The plain `.nar` URL, `Content-Encoding: zstd` because the client
    /// asked for it (see [`negotiate`]).
    ZstdContent { level: i32 },
}

/// The encoding of a plain `.nar` reply. Only with `--compression zstd`
/// (the operator chose to spend the CPU), only when `Accept-Encoding` lists
/// `zstd` with a non-zero weight (Nix 2.8 sends none, curl none unless told:
/// both get the NAR's bytes), and never for a `Range`, which names bytes of
/// the NAR itself (docs/protocols.md §4.4: Nix resumes only identity downloads).
pub fn negotiate(
    compression: Compression,
    accept_encoding: Option<&str>,
    range: Option<&str>,
) -> Encoding {
    match compression {
        Compression::Zstd { level } if range.is_none() && accepts_zstd(accept_encoding) => {
            Encoding::ZstdContent { level }
        }
        _ => Encoding::Identity,
    }
}

/// RFC 9110 §12.5.3: `zstd` listed without `q=0`. A bare `*` does not
/// count: a client that names no coding gets the NAR itself.
fn accepts_zstd(header: Option<&str>) -> bool {
    header.into_iter().flat_map(|h| h.split(',')).any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .or_else(|| p.strip_prefix("Q="))
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        coding.eq_ignore_ascii_case("zstd") && !refused
    })
}

/// The NAR `req` asks for; a path this store lacks from `upstream`, if
/// any (`cache/upstream.rs`).
/// `/nar/…` as a worker routes it (`zstd`: `/nar/….nar.zst`, a route that
/// exists only when the operator chose to spend the CPU, and the memory,
/// on compression).
pub fn for_route(
    store: &mut dyn Store,
    settings: &ReplySettings,
    request: &Request,
    hash: HashPart,
    nar_hash: Option<Sha256>,
    zstd: bool,
    upstream: Option<&Upstream>,
) -> Result<Response, HandlerError> {
    let compression = settings.compression;
    let (range, encoding, vary) = match (zstd, compression) {
        (false, _) => {
            let range = request.range.as_deref();
            let accept = request.accept_encoding.as_deref();
            let vary = compression != Compression::None;
            (range, negotiate(compression, accept, range), vary)
        }
        (true, Compression::None) => return Err(HandlerError::Route(RouteError::NotFound)),
        (true, Compression::Zstd { level }) => (None, Encoding::ZstdFile { level }, false),
    };
    let req = NarRequest {
        hash,
        nar_hash,
        range,
        head_only: request.is_head(),
        encoding,
        vary,
        heavy: &settings.heavy,
    };
    handle(store, &req, upstream)
}

pub fn handle(
    store: &mut dyn Store,
    req: &NarRequest<'_>,
    upstream: Option<&Upstream>,
) -> Result<Response, HandlerError> {
    let Some(info) = store.path_info_by_hash(&req.hash)? else {
        return match upstream {
            Some(up) => super::upstream::nar(up, req),
            None => Ok(response::no_such_path()),
        };
    };
    // Re-checked on every request, as nix-serve does (docs/protocols.md §10.4): a narinfo cached
    // by a client may name a NAR hash that no longer exists here.
    let cache_control = match req.nar_hash {
        Some(h) if h != info.nar_hash => return Ok(response::incorrect_nar_hash()),
        Some(_) => CACHE_IMMUTABLE,
        // The legacy URL names the path, not the content.
        None => CACHE_SHORT,
    };
    if let Encoding::ZstdFile { level } | Encoding::ZstdContent { level } = req.encoding {
        match req
            .heavy
            .take(heavy::zstd_encoder_bytes(level) + heavy::STREAM_BUFFERS)
        {
            Some(permit) => return compressed(store, &info, req, level, cache_control, permit),
            // A client that only allowed zstd gets the NAR itself.
            None if matches!(req.encoding, Encoding::ZstdContent { .. }) => {}
            None => return Err(HandlerError::Busy),
        }
    }
    let total = info.nar_size;
    let Some((status, start, len)) = range::select(req.range, total) else {
        return Ok(response::range_not_satisfiable(total));
    };
    let Some(nar) = open_nar(store, req, &info, start)? else {
        return Ok(response::no_such_path());
    };
    let body = match nar {
        NarBody::Files(_) if req.head_only => Body::Omitted { len: Some(len) },
        NarBody::Files(reader) if len <= SMALL => Body::Bytes(read_small(reader, len)?),
        NarBody::Files(reader) => Body::Segments {
            source: Box::new(NarSegments(reader)),
            len,
        },
        NarBody::Stream(reader) => {
            let permit = req
                .heavy
                .take(heavy::STREAM_BUFFERS)
                .ok_or(HandlerError::Busy)?;
            // A stream that fails before its first byte (the daemon closes
            // it when the path's files are gone) is a status, not a cut
            // 200; HEAD asks as GET does, so the two agree.
            let primed = Primed::new(reader.take(len)).map_err(daemon_stream_failed)?;
            if req.head_only {
                Body::Omitted { len: Some(len) }
            } else {
                Body::Stream {
                    reader: Box::new(Holding {
                        reader: primed,
                        _permit: permit,
                    }),
                    len: Some(len),
                }
            }
        }
    };
    let mut r = Response::new(status, CONTENT_TYPE, cache_control, body);
    if req.vary {
        r = r.with_header("Vary", "Accept-Encoding".to_owned());
    }
    Ok(range::with_headers(r, start, len, total))
}

/// The whole NAR, compressed while it streams: the length is unknown until
/// the end, so the body goes chunked, and there are no ranges.
fn compressed(
    store: &mut dyn Store,
    info: &PathInfo,
    req: &NarRequest<'_>,
    level: i32,
    cache_control: &'static str,
    permit: heavy::Permit,
) -> Result<Response, HandlerError> {
    let Some(nar) = open_nar(store, req, info, 0)? else {
        return Ok(response::no_such_path());
    };
    let from_daemon = matches!(nar, NarBody::Stream(_));
    let body = if req.head_only && !from_daemon {
        Body::Omitted { len: None }
    } else {
        let encoder = zstd_encoder(nar, level).map_err(|e| {
            HandlerError::Reply(format!("cannot start a zstd encoder at level {level}: {e}"))
        })?;
        // The first compressed bytes need the first NAR bytes: a NAR that
        // fails at once fails here, with its status.
        let primed = Primed::new(encoder).map_err(|e| match from_daemon {
            true => daemon_stream_failed(e),
            false => HandlerError::Store(StoreError::Io(e)),
        })?;
        if req.head_only {
            Body::Omitted { len: None }
        } else {
            Body::Stream {
                reader: Box::new(Holding {
                    reader: primed,
                    _permit: permit,
                }),
                len: None,
            }
        }
    };
    let r = Response::new(200, CONTENT_TYPE, cache_control, body);
    Ok(match req.encoding {
        Encoding::ZstdContent { .. } => r
            .with_header("Content-Encoding", "zstd".to_owned())
            .with_header("Vary", "Accept-Encoding".to_owned()),
        _ => r,
    })
}

/// The `len` bytes of a small NAR, checked as a streamed one is (a file
/// that changed is an error, never other bytes under the same length). A
/// failure is the files', not the store connection's: a 500 that keeps it.
fn read_small(mut reader: NarReader, len: u64) -> Result<Vec<u8>, HandlerError> {
    let mut out = Vec::with_capacity(len as usize);
    let read = (&mut reader).take(len).read_to_end(&mut out);
    match read {
        Ok(n) if n as u64 == len => Ok(out),
        Ok(n) => Err(HandlerError::Reply(format!(
            "the NAR ended after {n} of {len} bytes"
        ))),
        Err(e) => Err(HandlerError::Reply(format!("reading the NAR: {e}"))),
    }
}

/// A zstd encoder at `level` over `nar`, its memory capped as
/// [`heavy::zstd_params`] says.
fn zstd_encoder(
    nar: NarBody,
    level: i32,
) -> io::Result<zstd::stream::read::Encoder<'static, io::BufReader<NarBody>>> {
    use zstd::zstd_safe::CParameter;
    let mut e = zstd::stream::read::Encoder::new(nar, level)?;
    let (window, chain, hash) = heavy::zstd_params(level);
    e.set_parameter(CParameter::WindowLog(window))?;
    e.set_parameter(CParameter::ChainLog(chain))?;
    e.set_parameter(CParameter::HashLog(hash))?;
    Ok(e)
}

/// The daemon's NAR stream failed before its first byte: the daemon took
/// the request and then could not make the NAR (its files gone).
fn daemon_stream_failed(e: io::Error) -> HandlerError {
    HandlerError::Store(StoreError::Daemon(Failure::because(
        "the NAR stream from the nix-daemon failed before its first byte",
        e,
    )))
}

/// A NAR encoded from the files, as the engine sends it: framing bytes,
/// and file regions it sends with `sendfile(2)`.
struct NarSegments(NarReader);

impl Segments for NarSegments {
    fn segment(&mut self) -> io::Result<Option<Segment<'_>>> {
        Ok(match self.0.segment().map_err(io::Error::other)? {
            None => None,
            Some(nar_format::Segment::Bytes(b)) => Some(Segment::Bytes(b)),
            Some(nar_format::Segment::File { file, offset, len }) => {
                Some(Segment::File { file, offset, len })
            }
        })
    }

    fn consume(&mut self, n: u64) -> io::Result<()> {
        self.0.consume(n).map_err(io::Error::other)
    }
}

/// The NAR of `info` from byte `start`, or `None` when the path was
/// collected since the look-up. HEAD opens the NAR too (plans it, reads no
/// contents), so HEAD and GET agree on a path whose files are gone.
fn open_nar(
    store: &mut dyn Store,
    req: &NarRequest<'_>,
    info: &PathInfo,
    start: u64,
) -> Result<Option<NarBody>, HandlerError> {
    match store.nar(info, start) {
        Ok(nar) => Ok(Some(nar)),
        Err(e) if is_not_found(&e) => {
            // Collected between the look-up and now (the garbage collector
            // invalidates a path, then deletes its files): absent, as the
            // look-up now says; a path still valid with its files gone is
            // the store's problem (500).
            if store.path_info_by_hash(&req.hash)?.is_none() {
                return Ok(None);
            }
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether `e` says the path's files are not there (any more).
fn is_not_found(e: &StoreError) -> bool {
    matches!(e, StoreError::Io(io) if io.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_only_when_asked_and_enabled() {
        let on = Compression::Zstd { level: 3 };
        let z = Encoding::ZstdContent { level: 3 };
        let table: [(Compression, Option<&str>, Option<&str>, Encoding); 10] = [
            (on, None, None, Encoding::Identity),
            (on, Some("gzip, deflate"), None, Encoding::Identity),
            (on, Some("gzip, zstd"), None, z),
            (on, Some("ZSTD;q=0.5"), None, z),
            (on, Some("zstd;q=0"), None, Encoding::Identity),
            (on, Some("zstd; q=0.0, gzip"), None, Encoding::Identity),
            (on, Some("zstdx"), None, Encoding::Identity),
            (on, Some("zstd"), Some("bytes=0-"), Encoding::Identity),
            (Compression::None, Some("zstd"), None, Encoding::Identity),
            (on, Some("deflate, gzip, br, zstd"), None, z),
        ];
        for (c, ae, range, want) in table {
            assert_eq!(negotiate(c, ae, range), want, "{ae:?} {range:?}");
        }
    }
}
