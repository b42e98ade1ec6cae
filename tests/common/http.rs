//! The tests' one HTTP client, written here from RFC 9112 rather than taken
//! from the server: a test must not trust the code it checks. Requests are
//! built as bytes ([`Request`]) or sent as given ([`send`], [`send_raw`]);
//! replies are read by their framing (RFC 9112 §6.3) and checked on the
//! way: a framed body is read to its last byte, and after a reply on a
//! connection that closes nothing more may come.
//!
//! One request a connection ([`get`], [`head`], [`Request::send`]), or
//! several on one kept-alive connection, pipelined or not ([`connect`],
//! [`Request::keep_alive`], [`read_reply`]); or the head alone, leaving the
//! body to a test that reads it at its own pace ([`Request::open`],
//! [`read_head`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long a read waits for the server before the test fails: a bug must
/// fail the test, not hang the run.
pub const LIMIT: Duration = Duration::from_secs(60);

/// The most a response head may take: far more than any this server sends,
/// so that a server that never ends its head fails the test, bounded.
const HEAD_MAX: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// The status line and the header lines as received, CRLF between
    /// them, without the blank line that ends the head.
    pub head: String,
    /// The header fields in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The first field `name` (any case), if the head has one.
    pub fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Content-Length`, if the head has one.
    pub fn content_length(&self) -> Option<usize> {
        (self.header("Content-Length"))
            .map(|v| v.parse().unwrap_or_else(|_| panic!("Content-Length {v:?}")))
    }

    /// The whole reply but its `Date:` line, which only says when: what
    /// two replies that must be the same are compared by.
    pub fn without_date(&self) -> (u16, String, Vec<u8>) {
        let head: Vec<&str> = (self.head.split("\r\n"))
            .filter(|l| !l.starts_with("Date: "))
            .collect();
        (self.status, head.join("\r\n"), self.body.clone())
    }
}

/// A request as a client sends it: HTTP/1.1, `Host: test` and
/// `Connection: close` unless told otherwise, no body.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    http10: bool,
    close: bool,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: Vec::new(),
            http10: false,
            close: true,
        }
    }

    pub fn get(target: &str) -> Request {
        Request::new("GET", target)
    }

    pub fn head(target: &str) -> Request {
        Request::new("HEAD", target)
    }

    /// One more header line, after `Host` and `Connection`.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// [`Request::header`] for each of `headers`.
    pub fn headers(self, headers: &[(&str, &str)]) -> Request {
        (headers.iter()).fold(self, |r, (n, v)| r.header(n, v))
    }

    /// An HTTP/1.0 request: the body may then end with the connection.
    pub fn http10(mut self) -> Request {
        self.http10 = true;
        self
    }

    /// Without `Connection: close`: for a connection that carries more.
    pub fn keep_alive(mut self) -> Request {
        self.close = false;
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let version = if self.http10 { "1.0" } else { "1.1" };
        let mut req = format!(
            "{} {} HTTP/{version}\r\nHost: test\r\n",
            self.method, self.target
        );
        if self.close {
            req.push_str("Connection: close\r\n");
        }
        for (n, v) in &self.headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.into_bytes()
    }

    /// On a new connection to `addr`: the reply, read whole.
    pub fn send(&self, addr: SocketAddr) -> Reply {
        self.send_on(connect(addr))
    }

    /// On a new connection to the Unix socket `path`.
    pub fn send_unix(&self, path: &Path) -> Reply {
        let s =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_read_timeout(Some(LIMIT)).unwrap();
        self.send_on(s)
    }

    /// On `stream`, a connection of the caller's (a read time-out set).
    pub fn send_on(&self, stream: impl Read + Write) -> Reply {
        exchange(stream, &self.bytes())
    }

    /// Sends it on a new connection and reads the reply's head: the reply
    /// without its body, and the connection where the body starts, for a
    /// test that reads it at its own pace (or not at all).
    pub fn open(&self, addr: SocketAddr) -> (Reply, TcpStream) {
        let mut s = connect(addr);
        s.write_all(&self.bytes()).unwrap();
        (read_head(&mut s), s)
    }
}

/// A connection to `addr` whose reads give up after [`LIMIT`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

/// `GET target` on a new connection.
pub fn get(addr: SocketAddr, target: &str) -> Reply {
    Request::get(target).send(addr)
}

/// `HEAD target` on a new connection.
pub fn head(addr: SocketAddr, target: &str) -> Reply {
    Request::head(target).send(addr)
}

/// Sends `raw`, a request as it is, on a new connection: the reply, read
/// whole.
pub fn send(addr: SocketAddr, raw: &[u8]) -> Reply {
    exchange(connect(addr), raw)
}

/// Sends `raw` on a new connection and returns every byte that comes back
/// until the server closes (or resets): for requests whose reply is not
/// read as a reply (garbage in, an error out, then the close).
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(raw).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

/// The status code of raw reply bytes, 0 if they do not start with a
/// status line.
pub fn status_of(raw: &[u8]) -> u16 {
    (raw.get(9..12))
        .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Writes `raw` on `s` and reads the reply; the request's method and
/// version say how its body ends. A reply that closes the connection (as
/// every reply to `Connection: close` must) is followed by nothing.
fn exchange(mut s: impl Read + Write, raw: &[u8]) -> Reply {
    s.write_all(raw).unwrap();
    let line = raw.split(|b| *b == b'\n').next().unwrap_or_default();
    let head_only = raw.starts_with(b"HEAD ");
    let http10 = line.trim_ascii_end().ends_with(b" HTTP/1.0");
    let mut reply = read_head(&mut s);
    reply.body = read_body(&mut s, &reply, head_only, http10);
    if http10 || reply.header("Connection") == Some("close") {
        let mut rest = Vec::new();
        if let Err(e) = s.read_to_end(&mut rest) {
            panic!("after the reply, no close but {e}: {}", reply.head);
        }
        assert!(rest.is_empty(), "{} bytes after the reply", rest.len());
    }
    reply
}

/// Reads one reply on a connection that stays open (kept alive,
/// pipelined): its body must be framed. `head_only` for the reply to a HEAD.
pub fn read_reply(s: &mut impl Read, head_only: bool) -> Reply {
    let mut reply = read_head(s);
    reply.body = read_body(s, &reply, head_only, false);
    reply
}

/// Reads a reply's head, a byte at a time so that nothing after it is
/// taken from `s`: the reply with an empty body.
pub fn read_head(s: &mut impl Read) -> Reply {
    let mut raw = Vec::new();
    let mut byte = [0u8];
    while !raw.ends_with(b"\r\n\r\n") {
        assert!(raw.len() < HEAD_MAX, "a head of over {HEAD_MAX} bytes");
        match s.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            Ok(_) => panic!(
                "connection closed inside the head: {:?}",
                String::from_utf8_lossy(&raw)
            ),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("{e} inside the head: {:?}", String::from_utf8_lossy(&raw)),
        }
    }
    raw.truncate(raw.len() - 4);
    let head = String::from_utf8(raw).unwrap_or_else(|e| panic!("a head not UTF-8: {e}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(
        status_line.starts_with("HTTP/1.") && status_line.as_bytes().get(8) == Some(&b' '),
        "not a status line: {status_line:?}"
    );
    let status = (status_line.get(9..12))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {status_line:?}"));
    let headers = lines
        .map(|l| {
            let (n, v) = (l.split_once(": ")).unwrap_or_else(|| panic!("not a field: {l:?}"));
            (n.to_owned(), v.to_owned())
        })
        .collect();
    Reply {
        status,
        head,
        headers,
        body: Vec::new(),
    }
}

/// The body after `reply`'s head (RFC 9112 §6.3): none for HEAD, chunks
/// decoded, `Content-Length` bytes, or (only where the request was
/// HTTP/1.0: `close_ends`) all until the close.
fn read_body(s: &mut impl Read, reply: &Reply, head_only: bool, close_ends: bool) -> Vec<u8> {
    if head_only {
        return Vec::new();
    }
    let chunked =
        (reply.header("Transfer-Encoding")).is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        return read_chunked(s);
    }
    if let Some(len) = reply.content_length() {
        let mut body = vec![0; len];
        if let Err(e) = s.read_exact(&mut body) {
            panic!("{e} within the {len} bytes of the body: {}", reply.head);
        }
        return body;
    }
    assert!(
        close_ends,
        "no Content-Length and not chunked, to an HTTP/1.1 request: {}",
        reply.head
    );
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    body
}

/// A chunked body (RFC 9112 §7.1), decoded: no trailers expected.
fn read_chunked(s: &mut impl Read) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        let mut b = [0u8];
        while !line.ends_with(b"\r\n") {
            assert!(line.len() < 100, "a chunk size line of over 100 bytes");
            s.read_exact(&mut b).unwrap();
            line.push(b[0]);
        }
        let size = std::str::from_utf8(&line[..line.len() - 2]).unwrap_or_default();
        let n = usize::from_str_radix(size, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size:?}"));
        let mut chunk = vec![0; n + 2];
        s.read_exact(&mut chunk).unwrap();
        assert_eq!(&chunk[n..], b"\r\n", "chunk not followed by CRLF");
        if n == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..n]);
    }
}
