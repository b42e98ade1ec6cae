//! The application's statuses: the one place that picks a status and its
//! words for every way a request can fail, and the `Cache-Control` of
//! each kind of reply.
//!
//! Every reply carries a `Cache-Control` that makes a caching proxy in
//! front safe: 200s cacheable, errors `no-store` (Nix clients already cache
//! a 404 for an hour, `docs/protocols.md`; a proxy must not add to it).

use std::sync::Arc;

use crate::server::app::Response;
use crate::store::StoreError;

use super::routes::RouteError;

pub use crate::server::app::NO_STORE as CACHE_NONE;

/// narinfo and nix-cache-info: cacheable, but a path can be deleted or
/// re-signed, so not forever.
pub const CACHE_SHORT: &str = "public, max-age=3600";
/// A NAR is named by its content hash: it never changes.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The same two for a reply that needed `--htpasswd`'s credentials.
pub const CACHE_SHORT_PRIVATE: &str = "private, max-age=3600";
pub const CACHE_IMMUTABLE_PRIVATE: &str = "private, max-age=31536000, immutable";

/// What a request can fail with once its head is parsed.
#[derive(Debug)]
pub enum HandlerError {
    Route(RouteError),
    /// The store failed; whether its connection is dropped is the store
    /// error's to say ([`StoreError::poisons_connection`]).
    Store(StoreError),
    /// Making the reply failed for a reason of our own (a compressor that
    /// could not start, a log file that could not be read): a 500 that
    /// leaves the store connection alone.
    Reply(String),
    /// No credentials where `--htpasswd` asks for them, or credentials
    /// that do not verify (`gate.rs`): all answered alike.
    Unauthorized,
    /// Too many replies of an expensive kind, credentials being verified,
    /// or upstream downloads, at once (`heavy.rs`, `gate.rs`,
    /// `upstream.rs`).
    Busy,
    /// `--upstream`: no upstream cache had the path and at least one gave
    /// no answer, or the download failed before its first byte.
    Upstream(String),
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        HandlerError::Store(e)
    }
}

/// The one exhaustive mapping of errors to statuses. The detail is logged
/// by the caller; the body only says what kind of failure it was.
/// Transient store trouble is 5xx, never 404: clients cache 404s.
pub fn error_response(e: &HandlerError) -> Response {
    match e {
        HandlerError::Route(RouteError::Method) => Response::text(405, "Method not allowed.\n")
            .with_header("Allow", "GET, HEAD".to_owned()),
        HandlerError::Route(RouteError::NotFound) => not_found(),
        HandlerError::Route(RouteError::BadRequest(reason)) => Response::text(400, reason),
        HandlerError::Store(s) => match s {
            StoreError::Unavailable(_) | StoreError::Timeout(_) => {
                retry_later("Store unavailable.\n")
            }
            StoreError::Daemon(_) | StoreError::Protocol(_) => {
                Response::text(502, "Store error.\n")
            }
            StoreError::Corrupt(_) | StoreError::Io(_) => internal(),
        },
        HandlerError::Reply(_) => internal(),
        // RFC 9110 §11.6.1: a 401 carries the challenge; `no-store`, as
        // every error, keeps a proxy in front from serving it to another.
        HandlerError::Unauthorized => Response::text(401, "Unauthorized.\n").with_header(
            "WWW-Authenticate",
            format!("Basic realm=\"{}\"", crate::auth::REALM),
        ),
        HandlerError::Busy => retry_later("Server busy.\n"),
        // RFC 9110 §15.6.3: a gateway that got no valid answer from the
        // server it asked. Not a 404, which a client keeps for an hour
        // (docs/protocols.md §4.4); nor 504, since most failures here are
        // refusals and broken transfers, not time-outs. A Nix client
        // retries a 502 as it does a 503.
        HandlerError::Upstream(_) => Response::text(502, "Upstream cache unavailable.\n"),
    }
}

/// Any URL the route table does not know.
pub fn not_found() -> Response {
    Response::text(404, "File not found.\n")
}

/// The reply to `user` (`--htpasswd`): named in the access log, and kept
/// from shared caches in front: `public` would let one (nginx's
/// `proxy_cache` keys by URL alone) hand it to the next client
/// (RFC 9111 §3.5).
pub fn for_user(mut r: Response, user: Option<Arc<str>>) -> Response {
    if user.is_some() {
        r.cache_control = match r.cache_control {
            CACHE_SHORT => CACHE_SHORT_PRIVATE,
            CACHE_IMMUTABLE => CACHE_IMMUTABLE_PRIVATE,
            other => other,
        };
    }
    r.user = user;
    r
}

/// A store path the store does not have (or may not show): nix-serve's
/// words, on every route that names a path.
pub fn no_such_path() -> Response {
    Response::text(404, "No such path.\n")
}

/// nix-serve's 404 for a NAR URL whose hash is not the path's NAR hash.
pub fn incorrect_nar_hash() -> Response {
    Response::text(
        404,
        "Incorrect NAR hash. Maybe the path has been recreated.\n",
    )
}

/// `/log/…` of a path with no build log here (or none it may show).
pub fn no_such_log() -> Response {
    Response::text(404, "No such log.\n")
}

/// 416 with `Content-Range: bytes */<total>`: a `Range` past the end of a
/// `total`-byte reply (RFC 9110 §15.5.17).
pub fn range_not_satisfiable(total: u64) -> Response {
    Response::text(416, "Range not satisfiable.\n")
        .with_header("Content-Range", format!("bytes */{total}"))
}

fn internal() -> Response {
    Response::text(500, "Internal error.\n")
}

fn retry_later(text: &str) -> Response {
    Response::text(503, text).with_header("Retry-After", "1".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::app::Body;

    #[test]
    fn error_statuses() {
        const D: &str = "xyzzy-detail";
        let io = || std::io::Error::other(D);
        let table: Vec<(HandlerError, u16, bool)> = vec![
            (HandlerError::Route(RouteError::Method), 405, false),
            (HandlerError::Route(RouteError::NotFound), 404, false),
            (
                HandlerError::Route(RouteError::BadRequest("x\n")),
                400,
                false,
            ),
            (
                HandlerError::Store(StoreError::Unavailable(D.into())),
                503,
                true,
            ),
            (
                HandlerError::Store(StoreError::Timeout(D.into())),
                503,
                true,
            ),
            (
                HandlerError::Store(StoreError::Daemon(D.into())),
                502,
                false,
            ),
            (
                HandlerError::Store(StoreError::Protocol(D.into())),
                502,
                true,
            ),
            (
                HandlerError::Store(StoreError::Corrupt(D.into())),
                500,
                false,
            ),
            (HandlerError::Store(StoreError::Io(io())), 500, true),
            (HandlerError::Reply(D.into()), 500, false),
            (HandlerError::Busy, 503, false),
            (HandlerError::Upstream(D.into()), 502, false),
            (HandlerError::Unauthorized, 401, false),
        ];
        for (e, status, poison) in table {
            let r = error_response(&e);
            assert_eq!(r.status, status, "{e:?}");
            assert_eq!(r.cache_control, CACHE_NONE);
            if let HandlerError::Store(s) = &e {
                assert_eq!(s.poisons_connection(), poison, "{e:?}");
            }
            // No internals in the body.
            let Body::Bytes(b) = &r.body else { panic!() };
            assert!(!String::from_utf8_lossy(b).contains(D), "{e:?}");
        }
        let r = error_response(&HandlerError::Route(RouteError::Method));
        assert_eq!(r.extra, vec![("Allow", "GET, HEAD".to_owned())]);
        let r = error_response(&HandlerError::Busy);
        assert_eq!(r.extra, vec![("Retry-After", "1".to_owned())]);
    }
}
