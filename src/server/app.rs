//! The one interface between the engine and the application it serves.
//!
//! The engine (this module's parent) owns sockets, HTTP/1 heads and
//! framing, connections, limits, threads and the life cycle. It hands the
//! application a [`Request`] (what a handler needs of a head, as values)
//! and takes back a [`Response`] (a status, a few headers and a [`Body`]);
//! it never learns what a route means. The application never sees a socket
//! or a byte of the wire format.
//!
//! Three places call into the application:
//! - [`Application::handler`], once per worker thread: a [`Handler`] that
//!   answers requests one at a time and may block (a store look-up);
//! - [`Application::fast_path`], once per event loop: a [`FastPath`] that
//!   may answer a request at once, in the loop's turn, without blocking;
//! - the bodies themselves: a [`Body::Stream`]'s reader and a
//!   [`Body::Segments`]'s source, which the engine reads or sends on its
//!   own threads, never on an event loop (they may wait for a disk).

use std::fs::File;
use std::io::{self, Read};
use std::sync::Arc;

/// A request method. Only GET and HEAD are served; any other is kept so
/// the application can answer 405 with its name logged.
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

/// What the application gets of a request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The request target as sent (origin or absolute form), undecoded;
    /// printable ASCII only, at most `http1::request::MAX_TARGET` bytes.
    pub target: String,
    /// `Range`, unless an `If-Range` came with it: we send no validators,
    /// so no `If-Range` can match and the whole representation is due
    /// (RFC 9110 §13.1.5).
    pub range: Option<String>,
    pub accept_encoding: Option<String>,
    /// `Authorization`, as sent (bounded by the head's size limit).
    pub authorization: Option<Authorization>,
}

/// An `Authorization` header's value as it came, kept apart so that no
/// `{:?}` of a request ever prints a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Authorization(Vec<u8>);

impl Authorization {
    pub fn new(value: &[u8]) -> Self {
        Authorization(value.to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Authorization(<{} bytes>)", self.0.len())
    }
}

impl Request {
    /// A GET of `target`, no other headers: for tests and benchmarks.
    #[cfg(any(test, feature = "testing"))]
    pub fn get(target: &str) -> Request {
        Request {
            method: Method::Get,
            target: target.to_owned(),
            range: None,
            accept_encoding: None,
            authorization: None,
        }
    }

    pub fn is_head(&self) -> bool {
        self.method == Method::Head
    }
}

/// A reply, as values: the engine frames it (`Content-Length` when the
/// length is known, chunked or close-delimited otherwise), adds `Date` and
/// `Connection`, and sends the body.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    pub extra: Vec<(&'static str, String)>,
    pub body: Body,
    /// The route's name in the metrics (`requests_total{route=…}`).
    pub route: &'static str,
    /// Who the request was answered for, for the access log's user field.
    pub user: Option<Arc<str>>,
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
            route: "other",
            user: None,
        }
    }

    /// A short `text/plain` reply that no cache may keep.
    pub fn text(status: u16, text: &str) -> Self {
        Response::new(
            status,
            "text/plain",
            NO_STORE,
            Body::Bytes(text.as_bytes().to_vec()),
        )
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.extra.push((name, value));
        self
    }
}

/// `Cache-Control` of a reply no cache may keep: every error.
pub const NO_STORE: &str = "no-store";

pub enum Body {
    Bytes(Vec<u8>),
    /// Exactly `len` bytes from `source`, a mix of bytes in memory and
    /// regions of open files: the engine sends the regions with
    /// `sendfile(2)`, never copying them through user space, on a thread
    /// that may wait for the disk.
    Segments {
        source: Box<dyn Segments>,
        len: u64,
    },
    /// Bytes computed by `reader`, read a chunk at a time on an engine
    /// thread when the socket can take them. With a length, exactly that
    /// many or the connection is aborted (never a short body taken for a
    /// whole one); without, sent chunked (HTTP/1.1) or until the
    /// connection closes (HTTP/1.0).
    Stream {
        reader: Box<dyn Read + Send>,
        len: Option<u64>,
    },
    /// The reply to HEAD for a body not made: the length without the bytes.
    Omitted {
        len: Option<u64>,
    },
}

impl Body {
    /// The length the head announces, when it is known.
    pub fn length(&self) -> Option<u64> {
        match self {
            Body::Bytes(b) => Some(b.len() as u64),
            Body::Segments { len, .. } => Some(*len),
            Body::Stream { len, .. } | Body::Omitted { len } => *len,
        }
    }
}

/// A run of a [`Body::Segments`] body at its cursor.
#[derive(Debug)]
pub enum Segment<'a> {
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// `len` bytes of `file` from `offset`.
    File {
        file: &'a File,
        offset: u64,
        len: u64,
    },
}

/// A body made of bytes in memory and regions of files. Errors mean the
/// body cannot be finished (a file changed or vanished): the engine then
/// cuts the connection.
pub trait Segments: Send {
    /// The run at the cursor, or `None` at the end.
    fn segment(&mut self) -> io::Result<Option<Segment<'_>>>;
    /// Moves the cursor `n` bytes on (`n` at most the current run's length).
    fn consume(&mut self, n: u64) -> io::Result<()>;
}

/// Answers requests on a worker thread; one per thread, so it may hold a
/// connection of its own (to a store) and state without locks. It may
/// block. A panic costs the one request's connection, never the thread:
/// the engine then calls [`Handler::reset`].
pub trait Handler: Send {
    fn respond(&mut self, request: &Request) -> Response;
    /// After `respond` panicked: drop what may be left mid-way.
    fn reset(&mut self);
}

/// What an event loop may answer by itself, in the turn it read a head.
/// It must not block (no disk, no lock held across I/O): anything it is
/// unsure of is `None`, and the request goes to a worker.
pub trait FastPath: Send {
    fn answer(&mut self, request: &Request) -> Option<Response>;
    /// Called once on the loop's thread before it takes its first
    /// connection: the place for set-up that should not wait for the
    /// first request (and not delay the start of the others).
    fn start(&mut self) {}
}

/// The application: makes a [`Handler`] per worker thread and a
/// [`FastPath`] per event loop.
pub trait Application: Send + Sync + 'static {
    fn handler(&self) -> Box<dyn Handler>;
    fn fast_path(&self) -> Option<Box<dyn FastPath>> {
        None
    }
}
