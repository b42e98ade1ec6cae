//! Responses: the one place that picks statuses for errors, and the bytes of
//! a response head.
//!
//! Every reply carries `Content-Length` (NARs too: never chunked, so a client
//! checks NarSize against it, `nix-protocols.md` §4.4) and a `Cache-Control`
//! that makes a caching proxy in front safe: 200s cacheable, errors `no-store`
//! (clients already cache a 404 for an hour, §4.4; a proxy must not add to it).

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::store::StoreError;

use super::routes::RouteError;

/// narinfo and nix-cache-info: cacheable, but a path can be deleted or
/// re-signed, so not forever.
pub const CACHE_SHORT: &str = "public, max-age=3600";
/// A NAR is named by its content hash: it never changes.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
pub const CACHE_NONE: &str = "no-store";

pub enum Body<'a> {
    Bytes(Vec<u8>),
    /// Exactly `len` bytes to stream from `reader`; fewer is an error that
    /// aborts the connection (`style.md` 8). `len: None`: as many as it
    /// gives, sent chunked (HTTP/1.1) or closing the connection (HTTP/1.0).
    Stream {
        reader: Box<dyn Read + 'a>,
        len: Option<u64>,
    },
    /// The reply to HEAD for a streamed body: the length without the bytes.
    Omitted {
        len: u64,
    },
}

impl Body<'_> {
    /// `None` for a stream of unknown length.
    pub fn known_len(&self) -> Option<u64> {
        match self {
            Body::Bytes(b) => Some(b.len() as u64),
            Body::Stream { len, .. } => *len,
            Body::Omitted { len } => Some(*len),
        }
    }
}

pub struct Response<'a> {
    pub status: u16,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    pub extra: Vec<(&'static str, String)>,
    pub body: Body<'a>,
}

impl<'a> Response<'a> {
    pub fn new(
        status: u16,
        content_type: &'static str,
        cache_control: &'static str,
        body: Body<'a>,
    ) -> Self {
        Response {
            status,
            content_type,
            cache_control,
            extra: Vec::new(),
            body,
        }
    }

    /// A short `text/plain` reply that no cache may keep.
    pub fn text(status: u16, text: &str) -> Self {
        Response::new(
            status,
            "text/plain",
            CACHE_NONE,
            Body::Bytes(text.as_bytes().to_vec()),
        )
    }

    pub fn not_found() -> Self {
        Response::text(404, "File not found.\n")
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.extra.push((name, value));
        self
    }
}

/// What a handler can fail with.
#[derive(Debug)]
pub enum HandlerError {
    Route(RouteError),
    Store(StoreError),
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        HandlerError::Store(e)
    }
}

/// The one exhaustive mapping of errors to statuses. The detail is logged by
/// the caller; the body only says what kind of failure it was. Transient
/// store trouble is 5xx, never 404: clients cache 404s (`nix-protocols.md` §4.4).
pub fn error_response(e: &HandlerError) -> Response<'static> {
    match e {
        HandlerError::Route(RouteError::Method) => Response::text(405, "Method not allowed.\n")
            .with_header("Allow", "GET, HEAD".to_owned()),
        HandlerError::Route(RouteError::NotFound) => Response::not_found(),
        HandlerError::Route(RouteError::BadRequest(reason)) => Response::text(400, reason),
        HandlerError::Store(s) => match s {
            StoreError::Unavailable(_) | StoreError::Timeout(_) => {
                Response::text(503, "Store unavailable.\n")
                    .with_header("Retry-After", "1".to_owned())
            }
            StoreError::Daemon(_) | StoreError::Protocol(_) => {
                Response::text(502, "Store error.\n")
            }
            StoreError::Corrupt(_) | StoreError::Io(_) => Response::text(500, "Internal error.\n"),
        },
    }
}

/// Whether the worker must drop its store connection after `e`: after a
/// protocol or transport failure its state is unknown (`style.md` 8).
pub fn poisons_store(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(_)
        | StoreError::Timeout(_)
        | StoreError::Protocol(_)
        | StoreError::Io(_) => true,
        StoreError::Daemon(_) | StoreError::Corrupt(_) => false,
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The response head: status line and headers, blank line included. A body
/// of unknown length is announced chunked when `chunked` (HTTP/1.1), else by
/// no length at all (HTTP/1.0: the connection's close ends it).
pub fn head_bytes(r: &Response<'_>, keep_alive: bool, chunked: bool, date: &str) -> Vec<u8> {
    let length = match r.body.known_len() {
        Some(n) => format!("Content-Length: {n}\r\n"),
        None if chunked => "Transfer-Encoding: chunked\r\n".to_owned(),
        None => String::new(),
    };
    let mut h = format!(
        "HTTP/1.1 {} {}\r\nDate: {date}\r\nContent-Type: {}\r\n{length}Cache-Control: {}\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.cache_control,
    );
    for (name, value) in &r.extra {
        h.push_str(name);
        h.push_str(": ");
        h.push_str(value);
        h.push_str("\r\n");
    }
    h.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    h.into_bytes()
}

/// RFC 9110 IMF-fixdate, e.g. `Wed, 25 Nov 2026 14:51:38 GMT`.
pub fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[((secs / 86_400) % 7) as usize],
        MONTHS[(mo - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Common Log Format time, as Starman's access log writes it:
/// `25/Nov/2026:14:51:38 +0000`.
pub fn clf_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(mo - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic
/// Gregorian (the well-known era/day-of-era arithmetic).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        let at = |s| http_date(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(at(1_795_618_298), "Wed, 25 Nov 2026 14:51:38 GMT");
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(
            clf_date(UNIX_EPOCH + Duration::from_secs(1_795_618_298)),
            "25/Nov/2026:14:51:38 +0000"
        );
    }

    #[test]
    fn head_is_byte_exact() {
        let r = Response::new(
            200,
            "text/x-nix-cache-info",
            CACHE_SHORT,
            Body::Bytes(b"abc".to_vec()),
        );
        assert_eq!(
            String::from_utf8(head_bytes(&r, true, true, "D")).unwrap(),
            "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Type: text/x-nix-cache-info\r\n\
             Content-Length: 3\r\nCache-Control: public, max-age=3600\r\n\
             Connection: keep-alive\r\n\r\n"
        );
        let r = Response::new(
            200,
            "application/x-nix-nar",
            CACHE_IMMUTABLE,
            Body::Omitted { len: 99 },
        )
        .with_header("Accept-Ranges", "bytes".into());
        assert_eq!(
            String::from_utf8(head_bytes(&r, false, true, "D")).unwrap(),
            "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Type: application/x-nix-nar\r\n\
             Content-Length: 99\r\nCache-Control: public, max-age=31536000, immutable\r\n\
             Accept-Ranges: bytes\r\nConnection: close\r\n\r\n"
        );
        let stream = |len| Body::Stream {
            reader: Box::new(std::io::empty()),
            len,
        };
        let r = Response::new(200, "text/plain", CACHE_NONE, stream(None));
        assert_eq!(
            String::from_utf8(head_bytes(&r, true, true, "D")).unwrap(),
            "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Type: text/plain\r\n\
             Transfer-Encoding: chunked\r\nCache-Control: no-store\r\n\
             Connection: keep-alive\r\n\r\n"
        );
        assert_eq!(
            String::from_utf8(head_bytes(&r, false, false, "D")).unwrap(),
            "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Type: text/plain\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        );
    }

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
        ];
        for (e, status, poison) in table {
            let r = error_response(&e);
            assert_eq!(r.status, status, "{e:?}");
            assert_eq!(r.cache_control, CACHE_NONE);
            if let HandlerError::Store(s) = &e {
                assert_eq!(poisons_store(s), poison, "{e:?}");
                // No internals in the body (style.md 7).
                let Body::Bytes(b) = &r.body else { panic!() };
                assert!(!String::from_utf8_lossy(b).contains(D));
            }
        }
        let r = error_response(&HandlerError::Route(RouteError::Method));
        assert_eq!(r.extra, vec![("Allow", "GET, HEAD".to_owned())]);
    }
}
