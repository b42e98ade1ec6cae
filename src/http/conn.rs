//! One client connection on one worker: read a bounded request head within a
//! deadline, answer it, repeat while keep-alive allows.
//!
//! Limits (README "Limits"): the head must arrive within `read_timeout` of its
//! first byte and fit in `request::MAX_HEAD`; an idle keep-alive connection is
//! closed after `keepalive_timeout`, after `CONTENDED_IDLE` of silence or
//! `CONTENDED_TURN` requests in a row when other connections wait for a
//! worker, at once when the server drains; each socket write may block
//! `write_timeout`.
//! So a client sending one header byte per second loses its connection after
//! `read_timeout`, never pinning a worker for minutes.

use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::log;

use super::request::{self, Head, Method};
use super::response::{self, Body, HandlerError, Response};
use super::{OpenStore, Service, StoreSlot};

/// How long and how much `linger_close` reads before closing anyway.
const LINGER: Duration = Duration::from_millis(200);
const LINGER_BYTES: usize = 256 * 1024;
/// How often a waiting read wakes to look at the drain flag.
const POLL: Duration = Duration::from_millis(200);
/// While other connections wait for a worker, how long a kept-alive
/// connection may stay silent before its worker moves on. A busy client's
/// next request comes within microseconds; closing after every reply instead
/// cost a TCP handshake per request, a quarter of nginx's narinfo throughput
/// (bench/README.md, run of 2026-11-25).
const CONTENDED_IDLE: Duration = Duration::from_millis(5);
/// While others wait, how many requests one connection may send in a row
/// before it is closed, so no client keeps a worker from the queue.
const CONTENDED_TURN: u32 = 100;
/// The largest body after which a contended connection stays open (a
/// narinfo, a small NAR): it is in the client's hands within microseconds.
const CONTENDED_BODY: u64 = 64 * 1024;
/// The body copy buffer: fixed, one per worker, reused for every response.
pub const COPY_BUF: usize = 64 * 1024;

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(d),
            Stream::Unix(s) => s.set_read_timeout(d),
        }
    }

    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(d),
            Stream::Unix(s) => s.set_write_timeout(d),
        }
    }

    pub fn shutdown_write(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }

    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    /// For the access log.
    pub fn peer(&self) -> String {
        match self {
            Stream::Tcp(s) => s
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_else(|_| "-".into()),
            Stream::Unix(_) => "unix".into(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub write_timeout: Duration,
    pub keepalive: bool,
}

/// What the workers share.
pub struct Shared {
    pub svc: Service,
    pub open: OpenStore,
    pub limits: Limits,
    /// Set on shutdown: finish the request at hand, then close.
    pub draining: AtomicBool,
    /// Accepted connections waiting for a worker.
    pub waiting: AtomicUsize,
    pub access_log: bool,
}

impl Shared {
    /// Not draining, nobody waiting: a server about to start.
    pub fn new(svc: Service, open: OpenStore, limits: Limits, access_log: bool) -> Self {
        Shared {
            svc,
            open,
            limits,
            draining: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            access_log,
        }
    }
}

enum HeadRead {
    Complete(usize),
    /// Clean end: EOF, idle keep-alive timeout, or draining between requests.
    Closed,
    /// Part of a head arrived, then the deadline passed.
    TimedOut,
    TooLarge,
}

/// Serves `stream` until it closes. `copy_buf` is the worker's body buffer.
pub fn serve(mut stream: Stream, shared: &Shared, slot: &mut StoreSlot, copy_buf: &mut [u8]) {
    let limits = shared.limits;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut first = true;
    // Requests served in a row while other connections were waiting.
    let mut contended_turn = 0u32;
    // Whether the last body was small enough for the client to have read it
    // at once; after a large one, its next request may be slow to come.
    let mut last_small = true;
    loop {
        let contended = shared.waiting.load(Ordering::Relaxed) > 0;
        let wait = if first {
            limits.read_timeout
        } else if contended && last_small {
            limits.keepalive_timeout.min(CONTENDED_IDLE)
        } else {
            limits.keepalive_timeout
        };
        let n = match read_head(
            &mut stream,
            &mut buf,
            wait,
            limits.read_timeout,
            &shared.draining,
        ) {
            Ok(HeadRead::Complete(n)) => n,
            Ok(HeadRead::Closed) | Err(_) => return,
            Ok(HeadRead::TimedOut) => {
                let _ = write_response(
                    &mut stream,
                    Response::text(408, "Request timeout.\n"),
                    false,
                    false,
                    copy_buf,
                );
                return;
            }
            Ok(HeadRead::TooLarge) => {
                let r = Response::text(431, "Request header too large.\n");
                let _ = write_response(&mut stream, r, false, false, copy_buf);
                linger_close(stream, copy_buf);
                return;
            }
        };
        first = false;
        let head = match request::parse(&buf[..n]) {
            Ok(h) => h,
            Err(e) => {
                log::info(&format!("bad request from {}: {e}", stream.peer()));
                let r = Response::text(e.status(), "Bad request.\n");
                let _ = write_response(&mut stream, r, false, false, copy_buf);
                linger_close(stream, copy_buf);
                return;
            }
        };
        buf.drain(..n);
        // While others wait for a worker, a connection keeps it only for a
        // bounded turn of back-to-back requests (CONTENDED_IDLE, _TURN).
        if shared.waiting.load(Ordering::Relaxed) > 0 {
            contended_turn += 1;
        } else {
            contended_turn = 0;
        }
        let may_keep = head.keep_alive
            && limits.keepalive
            && !head.has_body
            && !shared.draining.load(Ordering::Relaxed)
            && contended_turn < CONTENDED_TURN;
        let head_only = head.method == Method::Head;

        let (result, poison, keep) = {
            let (resp, poison) = match super::respond(&shared.svc, &shared.open, slot, &head) {
                Ok(r) => (r, false),
                Err(e) => {
                    let poison = log_handler_error(&e, &head);
                    (response::error_response(&e), poison)
                }
            };
            let status = resp.status;
            let len = resp.body.len();
            // A large body takes the client a while to read, longer than
            // CONTENDED_IDLE: its next request would race our close. So
            // while others wait, say `Connection: close` with it instead; a
            // handshake is cheap next to such a body.
            last_small = len <= CONTENDED_BODY;
            let keep = may_keep && (contended_turn == 0 || last_small);
            let result = write_response(&mut stream, resp, head_only, keep, copy_buf);
            if shared.access_log {
                log::access(&access_line(
                    &stream.peer(),
                    &head,
                    status,
                    if head_only { 0 } else { len },
                ));
            }
            (result, poison, keep)
        };
        let ok = match result {
            Ok(()) => true,
            Err(WriteError::Client(e)) => {
                log::info(&format!(
                    "client {} went away mid-response to {}: {e}",
                    stream.peer(),
                    head.target
                ));
                false
            }
            Err(WriteError::Source(e)) => {
                log::error(&format!(
                    "reading the NAR for {} failed mid-stream: {e}",
                    head.target
                ));
                false
            }
        };
        if poison || !ok {
            // A half-read NAR leaves a daemon connection mid-stream: drop it.
            slot.reset();
        }
        if !ok {
            // Never let a short body pass for a complete one (style.md 8).
            stream.shutdown();
            return;
        }
        if !keep {
            if head.has_body {
                linger_close(stream, copy_buf);
            }
            return;
        }
    }
}

/// Closes after a reply while the client may still be sending (a body we do
/// not read, a head we refused): closing with unread input makes the kernel
/// send a reset, which can destroy the reply before the client reads it. So
/// stop writing, then read and drop what comes, a little and briefly.
fn linger_close(mut stream: Stream, buf: &mut [u8]) {
    stream.shutdown_write();
    let deadline = Instant::now() + LINGER;
    let mut left = LINGER_BYTES;
    while left > 0 {
        let now = Instant::now();
        if now >= deadline || stream.set_read_timeout(Some(deadline - now)).is_err() {
            return;
        }
        let want = buf.len().min(left);
        match stream.read(&mut buf[..want]) {
            Ok(0) | Err(_) => return,
            Ok(n) => left -= n,
        }
    }
}

fn log_handler_error(e: &HandlerError, head: &Head) -> bool {
    match e {
        HandlerError::Route(_) => false,
        HandlerError::Store(s) => {
            log::error(&format!(
                "{} {}: {}",
                head.method.as_str(),
                head.target,
                log::chain(s)
            ));
            response::poisons_store(s)
        }
    }
}

fn read_head(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    first_byte_wait: Duration,
    read_timeout: Duration,
    draining: &AtomicBool,
) -> io::Result<HeadRead> {
    let start = Instant::now();
    let mut first_byte_at = (!buf.is_empty()).then_some(start);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(n) = request::head_len(buf) {
            return Ok(HeadRead::Complete(n));
        }
        if buf.len() > request::MAX_HEAD {
            return Ok(HeadRead::TooLarge);
        }
        let deadline = match first_byte_at {
            None => start + first_byte_wait,
            Some(t) => t + read_timeout,
        };
        let now = Instant::now();
        if now >= deadline {
            return Ok(if first_byte_at.is_some() {
                HeadRead::TimedOut
            } else {
                HeadRead::Closed
            });
        }
        if first_byte_at.is_none() && draining.load(Ordering::Relaxed) {
            return Ok(HeadRead::Closed);
        }
        stream.set_read_timeout(Some((deadline - now).min(POLL)))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(HeadRead::Closed),
            Ok(k) => {
                buf.extend_from_slice(&chunk[..k]);
                first_byte_at.get_or_insert(now);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

enum WriteError {
    /// Writing to the client failed (gone, or too slow: `write_timeout`).
    Client(io::Error),
    /// The body's source failed or ended early.
    Source(io::Error),
}

fn write_response(
    stream: &mut Stream,
    resp: Response<'_>,
    head_only: bool,
    keep: bool,
    copy_buf: &mut [u8],
) -> Result<(), WriteError> {
    let date = response::http_date(SystemTime::now());
    let head = response::head_bytes(&resp, keep, &date);
    let mut w = BufWriter::with_capacity(16 * 1024, &mut *stream);
    w.write_all(&head).map_err(WriteError::Client)?;
    match resp.body {
        Body::Bytes(b) if !head_only => w.write_all(&b).map_err(WriteError::Client)?,
        Body::Stream { mut reader, len } if !head_only => {
            let mut left = len;
            while left > 0 {
                let want = copy_buf
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                let k = match reader.read(&mut copy_buf[..want]) {
                    Ok(0) => {
                        return Err(WriteError::Source(io::Error::new(
                            ErrorKind::UnexpectedEof,
                            format!("body ended {left} bytes short of {len}"),
                        )))
                    }
                    Ok(k) => k,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(WriteError::Source(e)),
                };
                w.write_all(&copy_buf[..k]).map_err(WriteError::Client)?;
                left -= k as u64;
            }
        }
        Body::Bytes(_) | Body::Stream { .. } | Body::Omitted { .. } => {}
    }
    w.flush().map_err(WriteError::Client)
}

/// Combined Log Format, as Starman's `--access-log` writes.
fn access_line(peer: &str, head: &Head, status: u16, bytes: u64) -> String {
    let date = response::clf_date(SystemTime::now());
    let target = head.target.replace('"', "%22");
    let ua = head.user_agent.as_deref().unwrap_or("-").replace('"', "'");
    format!(
        "{peer} - - [{date}] \"{} {target} HTTP/1.{}\" {status} {bytes} \"-\" \"{ua}\"",
        head.method.as_str(),
        head.minor
    )
}
