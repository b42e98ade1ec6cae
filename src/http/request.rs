//! The HTTP/1.x request head, parsed from bytes with every length bounded
//! (`style.md` 9). Pure: no sockets here; `conn.rs` collects the bytes.
//!
//! Only what a binary cache needs is kept: method, target, version, whether
//! the connection may stay open, `Range`, and whether a body follows (we never
//! read bodies: GET and HEAD have none, anything else is refused and closed).

use thiserror::Error;

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
    #[error("malformed header line {0}")]
    Header(usize),
    #[error("request target longer than {MAX_TARGET} bytes")]
    TargetTooLong,
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("request head longer than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("HTTP version {0:?} not supported")]
    Version(String),
}

impl RequestError {
    /// The status to answer before closing the connection.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::RequestLine | RequestError::Header(_) => 400,
            RequestError::TargetTooLong => 414,
            RequestError::TooManyHeaders | RequestError::HeadTooLarge => 431,
            RequestError::Version(_) => 505,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Other(m) => m,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    /// Raw request target (origin form), undecoded; `routes::parse` reads it.
    pub target: String,
    /// Minor version: 0 or 1 (HTTP/1.x only).
    pub minor: u8,
    /// Whether the client allows the connection to stay open afterwards.
    pub keep_alive: bool,
    pub range: Option<String>,
    /// A request body follows (Content-Length > 0 or Transfer-Encoding).
    pub has_body: bool,
    pub user_agent: Option<String>,
    /// For `Accept-Encoding: zstd` on NARs (`nar.rs`).
    pub accept_encoding: Option<String>,
}

/// The length of the head at the start of `buf`, terminator included, once
/// the blank line has arrived.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    // Accept a bare LF as line end too (RFC 9112 §2.2 allows it).
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\n") {
            return Some(nl + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        i = nl + 1;
    }
    None
}

/// Parses a complete head as found by [`head_len`].
pub fn parse(head: &[u8]) -> Result<Head, RequestError> {
    if head.len() > MAX_HEAD {
        return Err(RequestError::HeadTooLarge);
    }
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().ok_or(RequestError::RequestLine)?;
    let request_line = std::str::from_utf8(request_line).map_err(|_| RequestError::RequestLine)?;
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() => (m, t, v),
        _ => return Err(RequestError::RequestLine),
    };
    if target.len() > MAX_TARGET {
        return Err(RequestError::TargetTooLong);
    }
    if !method
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
    {
        return Err(RequestError::RequestLine);
    }
    if target
        .bytes()
        .any(|b| b.is_ascii_control() || !b.is_ascii())
    {
        return Err(RequestError::RequestLine);
    }
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        v if v.starts_with("HTTP/") => {
            return Err(RequestError::Version(v.chars().take(16).collect()))
        }
        _ => return Err(RequestError::RequestLine),
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        m => Method::Other(m.to_owned()),
    };
    let mut out = Head {
        method,
        target: target.to_owned(),
        minor,
        keep_alive: minor == 1,
        range: None,
        has_body: false,
        user_agent: None,
        accept_encoding: None,
    };
    let mut count = 0;
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            break;
        }
        count += 1;
        if count > MAX_HEADERS {
            return Err(RequestError::TooManyHeaders);
        }
        let line = std::str::from_utf8(line).map_err(|_| RequestError::Header(i + 1))?;
        let (name, value) = line.split_once(':').ok_or(RequestError::Header(i + 1))?;
        if name.is_empty() || name.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err(RequestError::Header(i + 1));
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    out.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && minor == 0 {
                    out.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("range") {
            out.range = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("content-length") {
            out.has_body |= value != "0";
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            out.has_body = true;
        } else if name.eq_ignore_ascii_case("user-agent") {
            out.user_agent = Some(value.chars().take(200).collect());
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            out.accept_encoding = Some(value.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_of_the_head() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_len(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_len(b""), None);
    }

    #[test]
    fn parses_a_nix_client_request() {
        let h = parse(
            b"HEAD /abc.narinfo HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/7.88 Nix/2.8.0\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.method, Method::Head);
        assert_eq!(h.target, "/abc.narinfo");
        assert!(h.keep_alive);
        assert_eq!(h.user_agent.as_deref(), Some("curl/7.88 Nix/2.8.0"));
        assert!(!h.has_body);
    }

    #[test]
    fn connection_rules() {
        let table: [(&[u8], bool); 5] = [
            (b"GET / HTTP/1.1\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nconnection: TE, close\r\n\r\n", false),
        ];
        for (raw, keep) in table {
            assert_eq!(parse(raw).unwrap().keep_alive, keep, "{raw:?}");
        }
    }

    #[test]
    fn range_and_body() {
        let h = parse(b"GET /nar/x.nar HTTP/1.1\r\nRange: bytes=10-\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
        assert_eq!(h.range.as_deref(), Some("bytes=10-"));
        assert!(h.has_body);
        let h = parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(h.method, Method::Other("POST".into()));
        assert!(h.has_body);
    }

    #[test]
    fn rejects_bad_heads() {
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        let table: Vec<(Vec<u8>, u16)> = vec![
            (b"GET /\r\n\r\n".to_vec(), 400),
            (b"GET  / HTTP/1.1\r\n\r\n".to_vec(), 400),
            (b"get / HTTP/1.1\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/2.0\r\n\r\n".to_vec(), 505),
            (b"GET / FTP/1.0\r\n\r\n".to_vec(), 400),
            (b"GET /\x01 HTTP/1.1\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n".to_vec(), 400),
            (long_target.into_bytes(), 414),
            (many.into_bytes(), 431),
            (vec![b'a'; MAX_HEAD + 1], 431),
        ];
        for (raw, status) in table {
            assert_eq!(
                parse(&raw).unwrap_err().status(),
                status,
                "{:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(40)])
            );
        }
    }
}
