//! Response heads on the wire: the status line, the headers the engine
//! adds (`Date`, the framing, `Connection`), and the dates of the head and
//! the access log. Also the engine's own replies: to a head that cannot be
//! served (RFC 9112's 4xx and 5xx) and to a client past the connection limit.

use std::time::{SystemTime, UNIX_EPOCH};

use super::super::app::{Body, Response};
use super::request::RequestError;

/// The reply to a head that cannot be served; the connection is closed
/// after it. The one place these statuses and words are chosen.
pub fn request_error(e: &RequestError) -> Response {
    let (status, text) = match e {
        RequestError::Timeout => (408, "Request timeout.\n"),
        RequestError::TargetTooLong => (414, "Request target too long.\n"),
        RequestError::TooManyHeaders | RequestError::HeadTooLarge => {
            (431, "Request header too large.\n")
        }
        RequestError::Version(_) => (505, "HTTP version not supported.\n"),
        RequestError::TransferCoding(_) => (501, "Transfer coding not implemented.\n"),
        RequestError::RequestLine | RequestError::Header(_) | RequestError::Framing(_) => {
            (400, "Bad request.\n")
        }
    };
    Response::text(status, text)
}

/// The whole reply, head and body, to a client over the connection limit:
/// written once, best effort, right after the accept, then the connection
/// is closed. `Retry-After`: the limit is a moment's load, not a refusal.
pub fn busy(date: &str) -> Vec<u8> {
    let r = Response::text(503, "Server busy.\n").with_header("Retry-After", "1".to_owned());
    let mut out = Vec::with_capacity(256);
    let len = r.body.length().unwrap_or(0);
    head_bytes(&r, Framing::Length(len), false, date, &mut out);
    if let Body::Bytes(b) = &r.body {
        out.extend_from_slice(b);
    }
    out
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
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
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// How the body's end is marked: the head says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`: every body whose length is known (a Nix client
    /// checks a NAR's length against its NarSize).
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
    use super::super::super::app::NO_STORE;
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
            "public, max-age=3600",
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
            "public, max-age=31536000, immutable",
            Body::Omitted { len: Some(99) },
        )
        .with_header("Accept-Ranges", "bytes".into());
        assert_eq!(
            head(&r, Framing::Length(99), false),
            "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Type: application/x-nix-nar\r\n\
             Content-Length: 99\r\nCache-Control: public, max-age=31536000, immutable\r\n\
             Accept-Ranges: bytes\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            head(&r, Framing::Chunked, true),
            "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Type: application/x-nix-nar\r\n\
             Transfer-Encoding: chunked\r\nCache-Control: public, max-age=31536000, immutable\r\n\
             Accept-Ranges: bytes\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn request_errors_have_their_status_and_no_detail() {
        const D: &str = "xyzzy-detail";
        let table = [
            (RequestError::Timeout, 408),
            (RequestError::RequestLine, 400),
            (RequestError::Header("name"), 400),
            (RequestError::Framing("x"), 400),
            (RequestError::HeadTooLarge, 431),
            (RequestError::TooManyHeaders, 431),
            (RequestError::TargetTooLong, 414),
            (RequestError::Version(D.into()), 505),
            (RequestError::TransferCoding(D.into()), 501),
        ];
        for (e, status) in table {
            let r = request_error(&e);
            assert_eq!(r.status, status, "{e:?}");
            assert_eq!(r.cache_control, NO_STORE);
            let Body::Bytes(b) = &r.body else { panic!() };
            assert!(!String::from_utf8_lossy(b).contains(D), "{e:?}");
        }
    }

    #[test]
    fn busy_is_a_whole_503() {
        let b = String::from_utf8(busy("D")).unwrap();
        assert_eq!(
            b,
            "HTTP/1.1 503 Service Unavailable\r\nDate: D\r\nContent-Type: text/plain\r\n\
             Content-Length: 13\r\nCache-Control: no-store\r\nRetry-After: 1\r\n\
             Connection: close\r\n\r\nServer busy.\n"
        );
    }
}
