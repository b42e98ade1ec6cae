//! Responses: the one place that picks statuses for errors, and the bytes of
//! a response head.
//!
//! Every reply carries `Content-Length` (NARs too: never chunked, so a client
//! checks NarSize against it, `docs/protocols.md` §4.4) and a `Cache-Control`
//! that makes a caching proxy in front safe: 200s cacheable, errors `no-store`
//! (clients already cache a 404 for an hour, docs/protocols.md §4.4; a proxy must not add to it).

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::nix::nar::NarReader;
use crate::store::StoreError;

use super::request::RequestError;
use super::routes::RouteError;

/// narinfo and nix-cache-info: cacheable, but a path can be deleted or
/// re-signed, so not forever.
pub const CACHE_SHORT: &str = "public, max-age=3600";
/// A NAR is named by its content hash: it never changes.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
pub const CACHE_NONE: &str = "no-store";

pub enum Body {
    Bytes(Vec<u8>),
    /// Exactly `len` bytes of the NAR `reader` encodes from the files, from
    /// its cursor on: the server sends framing bytes with `write` and file
    /// contents with `sendfile(2)`, never copying them through user space.
    Nar {
        reader: NarReader,
        len: u64,
    },
    /// Bytes computed by `reader`, read chunk by chunk by a worker when the
    /// socket can take them. With a length, exactly that many or the
    /// connection is aborted (`docs/style.md` §8); without, sent chunked (HTTP/1.1)
    /// or until the connection closes (HTTP/1.0).
    Stream {
        reader: Box<dyn Read + Send>,
        len: Option<u64>,
    },
    /// The reply to HEAD for a streamed body: the length without the bytes.
    Omitted {
        len: Option<u64>,
    },
}

impl Body {
    /// The length the head announces, when it is known.
    pub fn length(&self) -> Option<u64> {
        match self {
            Body::Bytes(b) => Some(b.len() as u64),
            Body::Nar { len, .. } => Some(*len),
            Body::Stream { len, .. } | Body::Omitted { len } => *len,
        }
    }
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    pub extra: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(
        status: u16,
        content_type: &'static str,
        cache_control: &'static str,
        body: Body,
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

/// What a request can fail with, from its head to its handler.
#[derive(Debug)]
pub enum HandlerError {
    /// The head itself (malformed, too large, too slow): the connection is
    /// closed after the reply.
    Request(RequestError),
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
/// store trouble is 5xx, never 404: clients cache 404s (`docs/protocols.md` §4.4).
pub fn error_response(e: &HandlerError) -> Response {
    match e {
        HandlerError::Request(RequestError::Timeout) => Response::text(408, "Request timeout.\n"),
        HandlerError::Request(r) => match r.status() {
            414 => Response::text(414, "Request target too long.\n"),
            431 => Response::text(431, "Request header too large.\n"),
            505 => Response::text(505, "HTTP version not supported.\n"),
            501 => Response::text(501, "Transfer coding not implemented.\n"),
            status => Response::text(status, "Bad request.\n"),
        },
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

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// How the body's end is marked: the head says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` (every body whose length is known: NARs are never
    /// chunked, so a client checks NarSize against it, docs/protocols.md §4.4).
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1, length unknown).
    Chunked,
    /// Neither: the body ends when the connection closes (HTTP/1.0).
    Close,
}

/// The response head: status line and headers, blank line included,
/// appended to `out`.
pub fn head_bytes(r: &Response, framing: Framing, keep_alive: bool, date: &str, out: &mut Vec<u8>) {
    use std::fmt::Write;
    let mut h = String::with_capacity(256);
    let _ = write!(
        h,
        "HTTP/1.1 {} {}\r\nDate: {date}\r\nContent-Type: {}\r\n",
        r.status,
        reason(r.status),
        r.content_type,
    );
    match framing {
        Framing::Length(n) => {
            let _ = write!(h, "Content-Length: {n}\r\n");
        }
        Framing::Chunked => h.push_str("Transfer-Encoding: chunked\r\n"),
        Framing::Close => {}
    }
    let _ = write!(h, "Cache-Control: {}\r\n", r.cache_control);
    for (name, value) in &r.extra {
        let _ = write!(h, "{name}: {value}\r\n");
    }
    h.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    out.extend_from_slice(h.as_bytes());
}

/// A moment as calendar fields, UTC.
struct Civil {
    year: i64,
    month: &'static str,
    day: u32,
    weekday: &'static str,
    hour: u64,
    minute: u64,
    second: u64,
}

impl Civil {
    fn at(t: SystemTime) -> Civil {
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let days = secs / 86_400;
        let (year, month, day) = civil_from_days(days as i64);
        let rem = secs % 86_400;
        Civil {
            year,
            month: MONTHS[(month - 1) as usize],
            day,
            weekday: DAYS[(days % 7) as usize],
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
        }
    }
}

/// RFC 9110 IMF-fixdate, e.g. `Wed, 25 Nov 2026 14:51:38 GMT`.
pub fn http_date(t: SystemTime) -> String {
    let c = Civil::at(t);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        c.weekday, c.day, c.month, c.year, c.hour, c.minute, c.second
    )
}

/// Common Log Format time, as Starman's access log writes it:
/// `25/Nov/2026:14:51:38 +0000`.
pub fn clf_date(t: SystemTime) -> String {
    let c = Civil::at(t);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        c.day, c.month, c.year, c.hour, c.minute, c.second
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
        let head = |r: &Response, framing, keep| {
            let mut out = Vec::new();
            head_bytes(r, framing, keep, "D", &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            head(&r, Framing::Length(3), true),
            "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Type: text/x-nix-cache-info\r\n\
             Content-Length: 3\r\nCache-Control: public, max-age=3600\r\n\
             Connection: keep-alive\r\n\r\n"
        );
        let r = Response::new(
            200,
            "application/x-nix-nar",
            CACHE_IMMUTABLE,
            Body::Omitted { len: Some(99) },
        )
        .with_header("Accept-Ranges", "bytes".into());
        assert_eq!(
            head(&r, Framing::Length(99), false),
            "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Type: application/x-nix-nar\r\n\
             Content-Length: 99\r\nCache-Control: public, max-age=31536000, immutable\r\n\
             Accept-Ranges: bytes\r\nConnection: close\r\n\r\n"
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
            (HandlerError::Request(RequestError::Timeout), 408, false),
            (HandlerError::Request(RequestError::RequestLine), 400, false),
            (
                HandlerError::Request(RequestError::HeadTooLarge),
                431,
                false,
            ),
            (
                HandlerError::Request(RequestError::TargetTooLong),
                414,
                false,
            ),
            (
                HandlerError::Request(RequestError::Version(D.into())),
                505,
                false,
            ),
            (
                HandlerError::Request(RequestError::TransferCoding(D.into())),
                501,
                false,
            ),
        ];
        for (e, status, poison) in table {
            let r = error_response(&e);
            assert_eq!(r.status, status, "{e:?}");
            assert_eq!(r.cache_control, CACHE_NONE);
            if let HandlerError::Store(s) = &e {
                assert_eq!(s.poisons_connection(), poison, "{e:?}");
            }
            // No internals in the body (docs/style.md §7).
            let Body::Bytes(b) = &r.body else { panic!() };
            assert!(!String::from_utf8_lossy(b).contains(D), "{e:?}");
        }
        let r = error_response(&HandlerError::Route(RouteError::Method));
        assert_eq!(r.extra, vec![("Allow", "GET, HEAD".to_owned())]);
    }
}
