//! `/log/<…>`: a derivation's build log, plain text, decompressed while it
//! streams when Nix stored it as `.bz2` (`docs/protocols.md` §9). A plain log
//! has a length, so it takes a `Range` (the end of a long log, say); a
//! `.bz2` one is sent whole, chunked.

use std::sync::Arc;

use crate::server::app::{Body, Response};
use crate::store::build_log::{self, BuildLog};
use crate::store::Store;

use super::heavy::{self, Heavy, Holding};
use super::primed::Primed;
use super::range;
use super::response::{self, HandlerError, CACHE_IMMUTABLE};
use super::routes::LogName;

pub const CONTENT_TYPE: &str = "text/plain; charset=utf-8";

pub fn handle(
    store: &mut dyn Store,
    name: &LogName,
    range_header: Option<&str>,
    head_only: bool,
    heavy: &Arc<Heavy>,
) -> Result<Response, HandlerError> {
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
    // A log is served only if its derivation may be (`--serve-closure-of`);
    // looked for first either way, so a refusal costs what an absence does
    // (an absent log's .drv is outside the closure too, and looked for).
    let found = match (drv, store.log_dir()) {
        (Some(drv), Some(dir)) => build_log::open(dir, &drv)?.filter(|_| store.serves(&drv)),
        _ => None,
    };
    let Some(found) = found else {
        return Ok(response::no_such_log());
    };
    let (status, start, len, total) = match &found {
        BuildLog::Plain { len: total, .. } => match range::select(range_header, *total) {
            Some((status, start, len)) => (status, start, Some(len), Some(*total)),
            None => return Ok(response::range_not_satisfiable(*total)),
        },
        BuildLog::Bzip2(_) => (200, 0, None, None),
    };
    let body = match found {
        BuildLog::Plain { .. } if head_only => Body::Omitted { len },
        BuildLog::Plain { .. } => {
            let permit = heavy
                .take(heavy::STREAM_BUFFERS)
                .ok_or(HandlerError::Busy)?;
            Body::Stream {
                reader: Box::new(Holding {
                    reader: found.into_reader(start).map_err(read_failed)?,
                    _permit: permit,
                }),
                len,
            }
        }
        BuildLog::Bzip2(_) => {
            let permit = heavy
                .take(heavy::BZIP2_DECODER + heavy::STREAM_BUFFERS)
                .ok_or(HandlerError::Busy)?;
            // A corrupt `.bz2` fails in its first block: a 500, not a 200
            // cut short. HEAD decodes it too, so the two agree.
            let reader = found.into_reader(start).map_err(read_failed)?;
            let primed = Primed::new(reader).map_err(read_failed)?;
            if head_only {
                Body::Omitted { len }
            } else {
                Body::Stream {
                    reader: Box::new(Holding {
                        reader: primed,
                        _permit: permit,
                    }),
                    len,
                }
            }
        }
    };
    let r = Response::new(status, CONTENT_TYPE, CACHE_IMMUTABLE, body);
    Ok(match (len, total) {
        (Some(len), Some(total)) => range::with_headers(r, start, len, total),
        _ => r,
    })
}

/// A log file that cannot be read is our failure, not the store
/// connection's: a 500 that keeps the connection.
fn read_failed(e: std::io::Error) -> HandlerError {
    HandlerError::Reply(format!("reading the build log: {e}"))
}
