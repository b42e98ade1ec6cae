//! One client connection, as a state machine the event loop drives: read a
//! head without blocking (bounded size, deadline), hand it to a worker, write
//! the answer without blocking, then wait for the next head or close.
//!
//! A connection costs a descriptor and its buffers, never a thread, while it
//! sends its head, sits idle between requests, or reads its reply slowly.
//! Limits (README "Limits"): a head must be complete within `read_timeout`
//! of its first byte and fit in `request::MAX_HEAD`; an idle connection is
//! closed after `keepalive_timeout` (the first request may take
//! `read_timeout`); a reply must move at least [`MIN_RATE`] bytes a second
//! on average over every `write_timeout`, and make some progress within it.

use std::cell::RefCell;
use std::io::{self, ErrorKind, Read};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::http::request::{self, Head, Method, Parsed, RequestError};
use crate::http::response::{self, Body, Framing, HandlerError, Response};
use crate::http::{routes, FastPath};
use crate::log;
use crate::metrics::Metrics;

use super::body::{self, NarStep, Pending, StreamBody};
use super::pool::{ConnId, Job, Pool};
pub(super) use super::sock::Sock;
use super::{Activity, Limits};

/// The slowest a reply may be read, on average over each `write_timeout`:
/// a real link slower than this is not one a binary cache can serve.
pub const MIN_RATE: u64 = 1024;
/// How long and how much a closing connection reads and drops, so that
/// bytes the client sent after what we answered do not make the kernel
/// send a reset that destroys the reply before the client reads it.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;
/// Bytes one connection may send in one turn of the loop before others get
/// theirs (a fast client on loopback would otherwise never block).
const TURN: u64 = 4 << 20;
const READ_CHUNK: usize = 4096;

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Waiting for (the rest of) a request head.
    Head,
    /// A worker is computing the response.
    Busy,
    /// Writing a response.
    Write,
    /// A worker is reading the next chunk of a computed body.
    Filling,
    /// The reply is out and our side is shut: dropping what still comes.
    Linger,
}

/// What the loop should do with the connection after driving it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Life {
    /// Waiting for readiness, a worker or a deadline.
    Wait,
    /// It could go on at once but used its turn: drive it again soon.
    Again,
    Closed,
}

/// What the event loop lends a connection while driving it.
pub(super) struct Ctx<'a> {
    pub id: ConnId,
    pub pool: &'a Pool,
    pub fast: Option<&'a RefCell<FastPath>>,
    pub activity: &'a Activity,
    pub limits: &'a Limits,
    pub date: &'a str,
    pub access_log: bool,
    pub draining: bool,
    pub now: Instant,
}

/// The request being answered, for the access log.
struct Exchange {
    method: Method,
    target: String,
    minor: u8,
    user_agent: Option<Vec<u8>>,
    status: u16,
    /// When the reply started to go out.
    started: Instant,
}

pub(super) struct Conn {
    pub generation: u64,
    pub sock: Sock,
    peer: String,
    pub state: State,
    inbuf: Vec<u8>,
    /// When the head being read started to arrive.
    head_started: Option<Instant>,
    /// When this connection started to wait for a head with nothing sent.
    idle_since: Instant,
    /// Whether a request was answered on it yet (the first head may take
    /// `read_timeout` to start; later ones `keepalive_timeout`).
    answered: bool,
    out: Vec<u8>,
    out_pos: usize,
    pending: Pending,
    /// After this response: keep the connection open for the next head.
    keep: bool,
    exchange: Option<Exchange>,
    /// Bytes of the current reply written, its head included, and the
    /// head's length: the access log counts body bytes.
    written: u64,
    head_len: u64,
    /// Body bytes of the current reply on the wire, for write progress.
    progress_at: Instant,
    window_start: Instant,
    window_sent: u64,
    linger_until: Instant,
    linger_left: usize,
    metrics: Arc<Metrics>,
}

impl Conn {
    pub fn new(
        sock: Sock,
        peer: String,
        generation: u64,
        now: Instant,
        metrics: Arc<Metrics>,
    ) -> Conn {
        Conn {
            generation,
            sock,
            peer,
            state: State::Head,
            inbuf: Vec::new(),
            head_started: None,
            idle_since: now,
            answered: false,
            out: Vec::new(),
            out_pos: 0,
            pending: Pending::None,
            keep: false,
            exchange: None,
            written: 0,
            head_len: 0,
            progress_at: now,
            window_start: now,
            window_sent: 0,
            linger_until: now,
            linger_left: 0,
            metrics,
        }
    }

    /// Whether it is a kept-alive connection waiting for its next request
    /// with nothing of one received: what draining may close at once. A
    /// connection that has not sent its first request yet is not idle: its
    /// client connected to be served.
    pub fn is_idle(&self) -> bool {
        self.state == State::Head && self.inbuf.is_empty() && self.answered
    }

    /// Moves the connection on as far as it can go without blocking.
    pub fn drive(&mut self, cx: &Ctx<'_>) -> Life {
        let mut budget = TURN;
        loop {
            match self.state {
                State::Head => {
                    if let Some(life) = self.read_head(cx) {
                        return life;
                    }
                }
                State::Busy | State::Filling => return Life::Wait,
                State::Write => match self.flush(cx, &mut budget) {
                    Flush::Blocked => return Life::Wait,
                    Flush::Turn => return Life::Again,
                    Flush::Fill => return Life::Wait,
                    Flush::Failed => return Life::Closed,
                    Flush::Complete => {
                        if let Some(life) = self.finish(cx) {
                            return life;
                        }
                    }
                },
                State::Linger => return self.linger(cx.now),
            }
        }
    }

    /// Head state: parse what is buffered, read more when that is not a
    /// whole head. `None` when the state changed and driving goes on.
    fn read_head(&mut self, cx: &Ctx<'_>) -> Option<Life> {
        loop {
            match request::parse(&self.inbuf) {
                Ok(Parsed::Complete(head, n)) => {
                    self.inbuf.drain(..n);
                    self.head_started = (!self.inbuf.is_empty()).then_some(cx.now);
                    if self.dispatch(head, cx) {
                        return None;
                    }
                    return Some(Life::Wait);
                }
                Ok(Parsed::Partial) => {}
                Err(e) => {
                    log::info_limited(
                        log::Kind::BadRequest,
                        format_args!("bad request from {}: {e}", self.peer),
                    );
                    self.reply_error(e, cx);
                    return None;
                }
            }
            let at = self.inbuf.len();
            self.inbuf.resize(at + READ_CHUNK, 0);
            let read = self.sock.read(&mut self.inbuf[at..]);
            self.inbuf.truncate(at + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => return Some(Life::Closed),
                Ok(_) => {
                    self.head_started.get_or_insert(cx.now);
                }
                // Draining: a kept-alive connection waiting for its next
                // request is closed (a client retries a request that races
                // such a close); a new one still gets its first request
                // answered, within the read timeout, and one that sent part
                // of a head gets the rest of its time.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let done = cx.draining && self.is_idle();
                    return Some(if done { Life::Closed } else { Life::Wait });
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Some(Life::Closed),
            }
        }
    }

    /// Answers `head` at once if the fast path can (true: the reply is
    /// ready to write), else hands it to a worker.
    fn dispatch(&mut self, head: Head, cx: &Ctx<'_>) -> bool {
        let fast = cx.fast.and_then(|f| f.borrow_mut().answer(&head));
        if let Some(response) = fast {
            cx.activity.served();
            self.respond(response, &head, cx);
            return true;
        }
        self.state = State::Busy;
        cx.pool.submit(Job::Respond { id: cx.id, head });
        false
    }

    /// A head that cannot be answered: its status, then close.
    fn reply_error(&mut self, e: RequestError, cx: &Ctx<'_>) {
        let resp = response::error_response(&HandlerError::Request(e));
        let exchange = Exchange {
            method: Method::Other("-".into()),
            target: "-".into(),
            minor: 1,
            user_agent: None,
            status: resp.status,
            started: cx.now,
        };
        self.start_reply(resp, exchange, false, false, cx);
    }

    /// A worker's answer to the request `head` this connection sent.
    pub fn respond(&mut self, response: Response, head: &Head, cx: &Ctx<'_>) {
        let keep = head.keep_alive && cx.limits.keepalive && !head.has_body && !cx.draining;
        let exchange = Exchange {
            method: head.method.clone(),
            target: head.target.clone(),
            minor: head.minor,
            user_agent: head.user_agent.clone(),
            status: response.status,
            started: cx.now,
        };
        let head_only = head.method == Method::Head;
        self.start_reply(response, exchange, keep, head_only, cx);
    }

    fn start_reply(
        &mut self,
        resp: Response,
        exchange: Exchange,
        mut keep: bool,
        head_only: bool,
        cx: &Ctx<'_>,
    ) {
        let len = resp.body.length();
        let framing = match len {
            Some(n) => Framing::Length(n),
            None if head_only => Framing::Close,
            None if exchange.minor >= 1 => Framing::Chunked,
            None => {
                keep = false;
                Framing::Close
            }
        };
        self.out.clear();
        self.out_pos = 0;
        response::head_bytes(&resp, framing, keep, cx.date, &mut self.out);
        let head_len = self.out.len();
        self.pending = Pending::None;
        if !head_only {
            match resp.body {
                Body::Bytes(b) => self.out.extend_from_slice(&b),
                Body::Nar { reader, len } => self.pending = Pending::Nar { reader, left: len },
                Body::Stream { reader, len } => {
                    let mut body = StreamBody::new(reader, len, framing == Framing::Chunked);
                    // The first chunk is read while the head goes out.
                    body.request(cx);
                    self.pending = Pending::Stream(body);
                }
                Body::Omitted { .. } => {}
            }
        }
        self.head_len = head_len as u64;
        self.written = 0;
        self.exchange = Some(exchange);
        self.keep = keep;
        self.state = State::Write;
        self.progress_at = cx.now;
        self.window_start = cx.now;
        self.window_sent = 0;
    }
}

enum Flush {
    /// The socket is full: wait until it is writable.
    Blocked,
    /// This turn's bytes are out; more could go at once.
    Turn,
    /// A worker was asked for the next chunk.
    Fill,
    /// The reply is out.
    Complete,
    /// The client went away or the body's source failed: close now, so a
    /// short body is never taken for a whole one (`style.md` 8).
    Failed,
}

impl Conn {
    /// Writes what is ready of the reply.
    fn flush(&mut self, cx: &Ctx<'_>, budget: &mut u64) -> Flush {
        loop {
            if *budget == 0 {
                return Flush::Turn;
            }
            if self.out_pos < self.out.len() {
                match self.sock.write(&self.out[self.out_pos..]) {
                    Ok(n) => {
                        self.out_pos += n;
                        self.sent(n as u64, cx.now, budget);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Flush::Blocked,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return self.client_gone(&e),
                }
                continue;
            }
            self.out.clear();
            self.out_pos = 0;
            match self.pending {
                Pending::None => return Flush::Complete,
                Pending::Nar { .. } => {
                    if let Some(flush) = self.send_nar(cx, budget) {
                        return flush;
                    }
                }
                Pending::Stream(ref mut body) => {
                    if let Some(next) = body.ready.take() {
                        self.out = next;
                        body.request(cx);
                        continue;
                    }
                    if body.ended {
                        self.pending = Pending::None;
                        continue;
                    }
                    // Nothing to write until a worker brings the next chunk.
                    body.request(cx);
                    self.state = State::Filling;
                    return Flush::Fill;
                }
            }
        }
    }

    /// Goes on with a NAR body ([`body::nar_step`]) and counts what went
    /// out. `None` to go on flushing.
    fn send_nar(&mut self, cx: &Ctx<'_>, budget: &mut u64) -> Option<Flush> {
        let Pending::Nar { reader, left } = &mut self.pending else {
            return None;
        };
        loop {
            match body::nar_step(reader, left, &mut self.out, self.sock.fd(), *budget) {
                NarStep::Gathered => return None,
                NarStep::Done => {
                    self.pending = Pending::None;
                    return None;
                }
                NarStep::Sent(k) => {
                    self.written += k;
                    if k > 0 {
                        self.progress_at = cx.now;
                        self.window_sent += k;
                    }
                    *budget = budget.saturating_sub(k);
                    if *budget == 0 {
                        return Some(Flush::Turn);
                    }
                }
                NarStep::Blocked => return Some(Flush::Blocked),
                NarStep::PeerGone(e) => return Some(self.client_gone(&e)),
                NarStep::Failed(e) => return Some(self.source_failed(&e)),
            }
        }
    }

    /// A worker read the next chunk of a computed body. False when the
    /// body failed and the connection must close.
    pub fn filled(
        &mut self,
        reader: Box<dyn Read + Send>,
        buf: Vec<u8>,
        result: io::Result<usize>,
        cx: &Ctx<'_>,
    ) -> bool {
        let Pending::Stream(body) = &mut self.pending else {
            return false;
        };
        self.state = State::Write;
        let taken = match result {
            Ok(n) => body.take(reader, buf, n),
            Err(e) => Err(e.to_string()),
        };
        let chunk = match taken {
            Ok(chunk) => chunk,
            Err(e) => {
                self.source_failed(&e);
                return false;
            }
        };
        if self.out_pos >= self.out.len() {
            self.out = chunk;
            self.out_pos = 0;
            // Read the next chunk while this one is written.
            body.request(cx);
        } else {
            body.ready = Some(chunk);
        }
        true
    }

    /// The reply is out: log it, then wait for the next head or close.
    /// `None` when driving goes on.
    fn finish(&mut self, cx: &Ctx<'_>) -> Option<Life> {
        if let Some(x) = self.exchange.take() {
            self.record(&x);
            if cx.access_log {
                let body = self.written.saturating_sub(self.head_len);
                log::access(access_line(&self.peer, &x, body));
            }
        }
        self.answered = true;
        if self.keep && !cx.draining {
            self.state = State::Head;
            self.idle_since = cx.now;
            if self.inbuf.is_empty() {
                self.head_started = None;
            }
            self.out = Vec::new();
            return None;
        }
        Some(self.start_linger(cx.now))
    }

    /// Our side is done: shut it, then drop what the client still sends
    /// for a moment, so that a reset does not destroy the reply in flight.
    fn start_linger(&mut self, now: Instant) -> Life {
        self.sock.shutdown_write();
        self.state = State::Linger;
        self.linger_until = now + LINGER;
        self.linger_left = LINGER_BYTES;
        self.inbuf = Vec::new();
        self.out = Vec::new();
        self.linger(now)
    }

    fn linger(&mut self, now: Instant) -> Life {
        let mut buf = [0u8; READ_CHUNK];
        loop {
            if self.linger_left == 0 || now >= self.linger_until {
                return Life::Closed;
            }
            match self.sock.read(&mut buf) {
                Ok(0) => return Life::Closed,
                Ok(n) => self.linger_left = self.linger_left.saturating_sub(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Life::Wait,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Life::Closed,
            }
        }
    }

    fn sent(&mut self, n: u64, now: Instant, budget: &mut u64) {
        self.written += n;
        if n > 0 {
            self.progress_at = now;
            self.window_sent += n;
        }
        *budget = budget.saturating_sub(n);
    }

    fn client_gone(&mut self, e: &io::Error) -> Flush {
        if let Some(x) = &self.exchange {
            log::info_limited(
                log::Kind::ClientGone,
                format_args!(
                    "client {} went away mid-response to {}: {e}",
                    self.peer, x.target
                ),
            );
        }
        self.log_cut();
        Flush::Failed
    }

    fn source_failed(&mut self, e: &str) -> Flush {
        let target = self.exchange.as_ref().map_or("-", |x| x.target.as_str());
        log::error(&format!("the body of {target} failed mid-stream: {e}"));
        self.log_cut();
        Flush::Failed
    }

    /// A reply cut short still gets its access-log line.
    fn log_cut(&mut self) {
        self.pending = Pending::None;
        if let Some(x) = self.exchange.take() {
            self.record(&x);
            if log::access_enabled() {
                let body = self.written.saturating_sub(self.head_len);
                log::access(access_line(&self.peer, &x, body));
            }
        }
    }

    /// Counts a reply, whole or cut, in the metrics.
    fn record(&self, x: &Exchange) {
        let route = routes::label(&x.target);
        let nar_body = route == "nar" && x.method == Method::Get && x.status < 300;
        let took = nar_body.then(|| x.started.elapsed());
        self.metrics.reply(route, x.status, self.written, took);
    }

    /// The deadline check, run by the loop every tick: `Closed` when the
    /// connection has overstayed.
    pub fn on_tick(&mut self, cx: &Ctx<'_>) -> Life {
        let limits = cx.limits;
        match self.state {
            State::Head => {
                if let Some(started) = self.head_started {
                    if cx.now >= started + limits.read_timeout {
                        log::info_limited(
                            log::Kind::HeadTimeout,
                            format_args!("request head from {} timed out", self.peer),
                        );
                        self.reply_error(RequestError::Timeout, cx);
                        return self.drive(cx);
                    }
                } else {
                    let wait = if self.answered {
                        limits.keepalive_timeout
                    } else {
                        limits.read_timeout
                    };
                    if cx.now >= self.idle_since + wait {
                        return Life::Closed;
                    }
                }
                Life::Wait
            }
            State::Write => {
                if cx.now >= self.progress_at + limits.write_timeout {
                    self.too_slow("no progress");
                    return Life::Closed;
                }
                let window = cx.now.duration_since(self.window_start);
                if window >= limits.write_timeout {
                    if self.window_sent < MIN_RATE * window.as_secs().max(1) {
                        self.too_slow("below the minimum rate");
                        return Life::Closed;
                    }
                    self.window_start = cx.now;
                    self.window_sent = 0;
                }
                Life::Wait
            }
            State::Linger if cx.now >= self.linger_until => Life::Closed,
            State::Busy | State::Filling | State::Linger => Life::Wait,
        }
    }

    fn too_slow(&mut self, why: &str) {
        self.sock.reset_on_close();
        let target = self.exchange.as_ref().map_or("-", |x| x.target.as_str());
        log::info_limited(
            log::Kind::SlowReader,
            format_args!(
                "client {} reads {target} too slowly ({why}); closed",
                self.peer
            ),
        );
        self.log_cut();
    }
}

/// Combined Log Format, as Starman's `--access-log` writes; the client's
/// fields escaped as nginx does (`log::escape`).
fn access_line(peer: &str, x: &Exchange, bytes: u64) -> String {
    let date = response::clf_date(SystemTime::now());
    let target = log::escape(&x.target);
    let ua = log::escape(x.user_agent.as_deref().unwrap_or(b"-"));
    format!(
        "{peer} - - [{date}] \"{} {target} HTTP/1.{}\" {} {bytes} \"-\" \"{ua}\"",
        log::escape(x.method.as_str()),
        x.minor,
        x.status
    )
}
