//! The HTTP/1.x request head: bytes in, a typed [`Head`] or a status out.
//! Pure: no sockets here; the server collects the bytes.
//!
//! Tokenizing is `httparse`'s (the parser hyper uses, fuzzed upstream); the
//! limits and the semantics a cache server needs are ours, on top:
//! RFC 9112's rules for `Host`, `Content-Length` and `Transfer-Encoding`,
//! versions, and what a binary cache keeps of a request (method, target,
//! keep-alive, `Range`, `Accept-Encoding`, whether a body follows: we never
//! read bodies; GET and HEAD have none, the connection is closed after any).

use thiserror::Error;

use super::super::app::{Authorization, Method, Request};

/// Longest request head we read (request line and all headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Longest request target; a Nix client's longest is well under 200 bytes.
pub const MAX_TARGET: usize = 4 * 1024;
/// Most header lines we accept.
pub const MAX_HEADERS: usize = 100;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("malformed request line")]
    RequestLine,
    #[error("malformed header {0}")]
    Header(&'static str),
    #[error("request target longer than {MAX_TARGET} bytes")]
    TargetTooLong,
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("request head longer than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("HTTP version {0:?} not supported")]
    Version(String),
    #[error("{0}")]
    Framing(&'static str),
    #[error("transfer coding {0:?} not implemented")]
    TransferCoding(String),
    /// Part of a head arrived, then its deadline passed (the server's word,
    /// never the parser's).
    #[error("request head not complete in time")]
    Timeout,
}

impl RequestError {
    /// The status it is answered with (`response::request_error`): for the
    /// tests and the fuzzer.
    #[cfg(any(test, feature = "testing"))]
    pub fn status(&self) -> u16 {
        super::response::request_error(self).status
    }
}

/// A parsed head: what the application gets ([`Request`]) and what only
/// the engine needs (version, keep-alive, a body to refuse, the log's
/// User-Agent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub request: Request,
    /// Minor version: 0 or 1 (a later HTTP/1.x is served as 1.1).
    pub minor: u8,
    /// Whether the client allows the connection to stay open afterwards.
    pub keep_alive: bool,
    /// A request body follows (Content-Length > 0 or Transfer-Encoding).
    pub has_body: bool,
    /// As sent, for the access log (escaped there byte by byte).
    pub user_agent: Option<Vec<u8>>,
}

/// What a buffer that starts a request holds so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole head of this many bytes (its blank line included).
    Complete(Head, usize),
    /// Not a whole head yet, and nothing wrong so far: read more.
    Partial,
}

/// Parses the head at the start of `buf`. An error comes as soon as the
/// bytes seen are wrong (a TLS ClientHello is refused at its first byte, not
/// after the head deadline); `Partial` past [`MAX_HEAD`] is the caller's 431.
pub fn parse(buf: &[u8]) -> Result<Parsed, RequestError> {
    parse_as(buf, Versions::Any)
}

/// Which versions [`parse_as`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Versions {
    /// Any; a later HTTP/1.x goes through [`later_version`].
    Any,
    /// Only what httparse reads (1.0, 1.1): a copy [`later_version`] made.
    Patched,
}

fn parse_as(buf: &[u8], versions: Versions) -> Result<Parsed, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let (n, minor) = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => (n, req.version.unwrap_or(1)),
        Ok(httparse::Status::Partial) => return partial(buf),
        Err(httparse::Error::Version) if versions == Versions::Any => return later_version(buf),
        Err(e) => return Err(tokenizer_error(e)),
    };
    if n > MAX_HEAD {
        return Err(RequestError::HeadTooLarge);
    }
    let (method, target) = (req.method.unwrap_or(""), req.path.unwrap_or(""));
    head(method, target, minor, req.headers).map(|h| Parsed::Complete(h, n))
}

/// Where httparse said the version is wrong: a later HTTP/1.x, which RFC
/// 9110 §6.2 says to serve as the highest 1.x we implement (httparse knows
/// only 1.0 and 1.1, so its minor digit is read as `1` in a copy, parsed
/// once more, never again: no recursion on what a client sends); a version
/// we do not speak (505); an unfinished line whose bytes could still be a
/// version (wait); or a malformed line (400), refused as soon as its bytes
/// are wrong, so the answer never depends on how TCP split them.
fn later_version(buf: &[u8]) -> Result<Parsed, RequestError> {
    let line_end = buf.iter().position(|&b| b == b'\n');
    let line = &buf[..line_end.unwrap_or(buf.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Method, target, version: exactly two spaces (RFC 9112 §3).
    let mut tokens = line.split(|&b| b == b' ');
    let (Some(_), Some(_), Some(version), None) =
        (tokens.next(), tokens.next(), tokens.next(), tokens.next())
    else {
        return Err(RequestError::RequestLine);
    };
    let shown = || String::from_utf8_lossy(&version[..version.len().min(16)]).into_owned();
    let digit = |b: &u8| b.is_ascii_digit();
    match version {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', d] if digit(d) && *d >= b'2' => {
            let at = line.len() - 1;
            let mut copy = buf[..buf.len().min(MAX_HEAD + 4)].to_vec();
            copy[at] = b'1';
            match parse_as(&copy, Versions::Patched)? {
                Parsed::Complete(h, n) => Ok(Parsed::Complete(h, n)),
                Parsed::Partial => partial(buf),
            }
        }
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if digit(major) && digit(minor) => {
            Err(RequestError::Version(shown()))
        }
        // The line is not finished and could still end as `HTTP/d.d`.
        _ if line_end.is_none() && could_become_version(version) => partial(buf),
        _ => Err(RequestError::RequestLine),
    }
}

/// Whether `v` is a prefix of some `HTTP/<digit>.<digit>`.
fn could_become_version(v: &[u8]) -> bool {
    const SHAPE: &[u8] = b"HTTP/0.0";
    v.len() <= SHAPE.len()
        && v.iter().zip(SHAPE).all(|(b, s)| match s {
            b'0' => b.is_ascii_digit(),
            s => b == s,
        })
}

fn partial(buf: &[u8]) -> Result<Parsed, RequestError> {
    if buf.len() > MAX_HEAD {
        return Err(RequestError::HeadTooLarge);
    }
    // httparse reads the target before it can say anything about it.
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(buf);
    if line.len() > MAX_TARGET + 32 {
        return Err(RequestError::TargetTooLong);
    }
    Ok(Parsed::Partial)
}

fn tokenizer_error(e: httparse::Error) -> RequestError {
    use httparse::Error as E;
    match e {
        E::HeaderName => RequestError::Header("name"),
        E::HeaderValue => RequestError::Header("value"),
        E::NewLine => RequestError::Header("line end"),
        E::TooManyHeaders => RequestError::TooManyHeaders,
        E::Version => RequestError::RequestLine,
        E::Token | E::Status => RequestError::RequestLine,
    }
}

fn head(
    method: &str,
    target: &str,
    minor: u8,
    headers: &[httparse::Header<'_>],
) -> Result<Head, RequestError> {
    if target.len() > MAX_TARGET {
        return Err(RequestError::TargetTooLong);
    }
    // httparse lets bytes above 0x7f through in the target; a cache's URLs
    // are ASCII, and the access log should not carry raw bytes.
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RequestError::RequestLine);
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        m => Method::Other(m.to_owned()),
    };
    let mut out = Head {
        request: Request {
            method,
            target: target.to_owned(),
            range: None,
            accept_encoding: None,
            authorization: None,
        },
        minor,
        keep_alive: minor == 1,
        has_body: false,
        user_agent: None,
    };
    let mut if_range = false;
    let (mut hosts, mut content_length, mut chunked) = (0, None::<u64>, false);
    for h in headers {
        let name = h.name;
        let value = std::str::from_utf8(h.value).ok();
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("host") {
            // RFC 9112 §3.2: an invalid Host is a 400 like a missing one.
            if !valid_host(h.value) {
                return Err(RequestError::Framing("invalid Host"));
            }
            hosts += 1;
        } else if is("connection") {
            for token in value.unwrap_or("").split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    out.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && minor == 0 {
                    out.keep_alive = true;
                }
            }
        } else if is("range") {
            out.request.range = value.map(str::to_owned);
        } else if is("if-range") {
            if_range = true;
        } else if is("accept-encoding") {
            out.request.accept_encoding = value.map(|v| v.chars().take(200).collect());
        } else if is("content-length") {
            // RFC 9112 §6.3: one valid decimal, once; anything else is an
            // unrecoverable framing error (a smuggling opening behind a proxy).
            let v = value.unwrap_or("");
            let valid = !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit());
            if !valid || content_length.is_some() {
                return Err(RequestError::Framing("invalid or repeated Content-Length"));
            }
            content_length = v.parse().ok();
        } else if is("transfer-encoding") {
            // RFC 9112 §6.1: only `chunked`, last; we do not implement any
            // other coding (501).
            for coding in value.unwrap_or("").split(',').map(str::trim) {
                if coding.eq_ignore_ascii_case("chunked") && !chunked {
                    chunked = true;
                } else {
                    let shown = coding.chars().take(32).collect();
                    return Err(RequestError::TransferCoding(shown));
                }
            }
        } else if is("authorization") {
            // RFC 9110 §11.6.2 gives one credential a request; nginx
            // refuses a second header too.
            if out.request.authorization.is_some() {
                return Err(RequestError::Header("Authorization (repeated)"));
            }
            out.request.authorization = Some(Authorization::new(h.value));
        } else if is("user-agent") {
            out.user_agent = Some(h.value[..h.value.len().min(200)].to_vec());
        }
    }
    if chunked && content_length.is_some() {
        return Err(RequestError::Framing(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    // RFC 9112 §3.2: a 1.1 request has exactly one Host; any request has
    // at most one.
    if hosts > 1 || (minor >= 1 && hosts == 0) {
        return Err(RequestError::Framing("missing or repeated Host"));
    }
    out.has_body = chunked || content_length.is_some_and(|n| n > 0);
    if if_range {
        // We send no validators (no ETag, no Last-Modified), so no If-Range
        // can match: the whole representation is due (RFC 9110 §13.1.5).
        out.request.range = None;
    }
    Ok(out)
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a
/// reg-name (unreserved, pct-encoded, sub-delims; possibly empty), an IPv4
/// address (a reg-name by its characters) or an IP-literal in brackets,
/// then an optional port of digits.
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = match v.iter().rposition(|&b| b == b':') {
        // A colon inside brackets belongs to an IPv6 literal.
        Some(i) if !v[i..].contains(&b']') => (&v[..i], Some(&v[i + 1..])),
        _ => (v, None),
    };
    if !port.is_none_or(|p| p.iter().all(u8::is_ascii_digit)) {
        return false;
    }
    let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(b);
    match host {
        [b'[', inner @ .., b']'] => {
            !inner.is_empty()
                && inner
                    .iter()
                    .all(|b| b.is_ascii_hexdigit() || b":.vV".contains(b) || reg_name(b))
        }
        _ => host.iter().all(reg_name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8]) -> (Head, usize) {
        match parse(raw) {
            Ok(Parsed::Complete(h, n)) => (h, n),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    fn status(raw: &[u8]) -> u16 {
        match parse(raw) {
            Err(e) => e.status(),
            Ok(p) => panic!("{:?}: accepted as {p:?}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn parses_a_nix_client_request() {
        let raw = b"HEAD /abc.narinfo HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/7.88 Nix/2.8.0\r\nAccept: */*\r\n\r\nGET";
        let (h, n) = complete(raw);
        assert_eq!(n, raw.len() - 3);
        assert_eq!(h.request.method, Method::Head);
        assert_eq!(h.request.target, "/abc.narinfo");
        assert!(h.keep_alive);
        assert_eq!(h.user_agent.as_deref(), Some(&b"curl/7.88 Nix/2.8.0"[..]));
        assert!(!h.has_body);
        assert_eq!(h.request.authorization, None);
        let (h, _) =
            complete(b"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization:  Basic YTo=  \r\n\r\n");
        assert_eq!(h.request.authorization.unwrap().as_bytes(), b"Basic YTo=");
    }

    #[test]
    fn partial_heads_wait_for_more() {
        for raw in [
            &b""[..],
            b"G",
            b"GET / HTTP/1.1\r\nHost: x\r\n",
            b"GET / HTTP/1.",
            b"GET / HTTP/1.2",
            b"GET / HTT",
        ] {
            assert_eq!(parse(raw), Ok(Parsed::Partial), "{raw:?}");
        }
    }

    #[test]
    fn connection_rules() {
        let table: [(&[u8], bool); 5] = [
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nconnection: TE, close\r\n\r\n",
                false,
            ),
        ];
        for (raw, keep) in table {
            assert_eq!(complete(raw).0.keep_alive, keep, "{raw:?}");
        }
    }

    #[test]
    fn range_accept_encoding_and_body() {
        let (h, _) = complete(
            b"GET /nar/x.nar HTTP/1.1\r\nHost: x\r\nRange: bytes=10-\r\nAccept-Encoding: zstd\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(h.request.range.as_deref(), Some("bytes=10-"));
        assert_eq!(h.request.accept_encoding.as_deref(), Some("zstd"));
        assert!(h.has_body);
        let (h, _) = complete(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.request.method, Method::Other("POST".into()));
        assert!(h.has_body);
        let (h, _) = complete(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.has_body);
    }

    #[test]
    fn if_range_drops_the_range_and_authorization_is_kept() {
        let (h, _) = complete(
            b"GET /nar/x.nar HTTP/1.1\r\nHost: x\r\nRange: bytes=10-\r\nIf-Range: \"abc\"\r\n\r\n",
        );
        assert_eq!(h.request.range, None);
        let (h, _) = complete(
            b"GET /nar/x.nar HTTP/1.1\r\nHost: x\r\nIf-Range: Wed, 21 Oct 2015 07:28:00 GMT\r\nRange: bytes=1-\r\n\r\n",
        );
        assert_eq!(h.request.range, None);
        let (h, _) = complete(b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\n\r\n");
        assert_eq!(h.request.authorization.unwrap().as_bytes(), b"Basic dTpw");
    }

    #[test]
    fn host_values() {
        for ok in [
            &b"example.org"[..],
            b"example.org:5000",
            b"127.0.0.1:80",
            b"[::1]:5000",
            b"[fe80::1%25eth0]",
            b"",
            b"a-b_c~d",
        ] {
            let raw = [&b"GET / HTTP/1.1\r\nHost: "[..], ok, b"\r\n\r\n"].concat();
            complete(&raw);
        }
        for bad in [
            &b"exa mple"[..],
            b"a/b",
            b"a@b",
            b"host:80x",
            b"[::1",
            b"[]",
            b"a\"b",
            b"\xc3\xa9",
        ] {
            let raw = [&b"GET / HTTP/1.1\r\nHost: "[..], bad, b"\r\n\r\n"].concat();
            assert_eq!(status(&raw), 400, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// What RFC 9110/9112 ask a server to accept (issue: connection core).
    #[test]
    fn accepts_what_the_rfcs_allow() {
        // A blank line before the request line (RFC 9112 §2.2).
        let (h, _) = complete(b"\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.request.target, "/x");
        // A later HTTP/1.x is served as 1.1 (RFC 9110 §6.2).
        let (h, n) = complete(b"GET /x HTTP/1.2\r\nHost: x\r\n\r\n");
        assert_eq!((h.minor, n), (1, 28));
        // obs-text in a header value.
        let (h, _) = complete(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: caf\xe9\r\n\r\n");
        // Kept as sent: the access log escapes the byte itself.
        assert_eq!(h.user_agent.as_deref(), Some(&b"caf\xe9"[..]));
        // Bare LF line ends.
        complete(b"GET / HTTP/1.1\nHost: x\n\n");
        // HTTP/1.0 needs no Host.
        complete(b"GET / HTTP/1.0\r\n\r\n");
        // Identical duplicates of other headers are nobody's business.
        complete(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: a\r\nAccept: a\r\n\r\n");
        // Methods are case-sensitive tokens: `get` is some other method
        // (405 from the route table), not a malformed line.
        let (h, _) = complete(b"get / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.request.method, Method::Other("get".into()));
    }

    /// What RFC 9110/9112 ask a server to reject, with the status each gets.
    #[test]
    fn rejects_bad_heads() {
        let long_target = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(MAX_TARGET)
        );
        let many = format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        let table: Vec<(Vec<u8>, u16)> = vec![
            (b"GET /\r\n\r\n".to_vec(), 400),
            (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(), 505),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), 505),
            (b"GET / FTP/1.0\r\n\r\n".to_vec(), 400),
            (b"GET /\x01 HTTP/1.1\r\n\r\n".to_vec(), 400),
            (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n".to_vec(), 400),
            // Bare CR and NUL in a header value: smuggling openings.
            (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\rc\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\0c\r\n\r\n".to_vec(), 400),
            // obs-fold (RFC 9112 §5.2 lets a server reject it).
            (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n".to_vec(), 400),
            // Content-Length: invalid, doubled, listed, with Transfer-Encoding.
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 501),
            (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec(), 501),
            // Host: missing in 1.1, doubled anywhere.
            (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.0\r\nHost: x\r\nHost: x\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YTo=\r\nauthorization: Basic YTo=\r\n\r\n".to_vec(), 400),
            (long_target.into_bytes(), 414),
            (many.into_bytes(), 431),
        ];
        for (raw, want) in table {
            assert_eq!(status(&raw), want, "{:?}", String::from_utf8_lossy(&raw));
        }
    }

    // The request-line defects the fuzzer found are kept in
    // tests/request_head_fuzz_regressions.rs.

    #[test]
    fn refuses_at_once_what_is_not_http() {
        // A TLS ClientHello: refused at its first bytes, not at a deadline.
        assert_eq!(status(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), 400);
        // A target that will not fit, before its line ends.
        let long = format!("GET /{}", "a".repeat(MAX_TARGET + 64));
        assert_eq!(status(long.as_bytes()), 414);
        // A head that will not fit.
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nA: {}", "b".repeat(MAX_HEAD));
        assert_eq!(status(big.as_bytes()), 431);
    }
}
