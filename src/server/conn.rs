//! One client connection, as a state machine its event loop drives: read a
//! head without blocking (bounded size, deadline), answer it (the loop's
//! fast path, or a worker), write the answer without blocking (or have a
//! body thread send it), then wait for the next head or close.
//!
//! A connection costs a descriptor and its buffers, never a thread, while it
//! sends its head, sits idle between requests, or reads its reply slowly.
//! Limits (README "Limits"): a head must be complete within `read_timeout`
//! of its first byte and fit in `http1::request::MAX_HEAD`; an idle
//! connection is closed after `keepalive_timeout` (the first request may
//! take `read_timeout`); a reply must move at least [`MIN_RATE`] bytes a
//! second on average over every `write_timeout`, and make some progress
//! within it. What counts is what the client takes: a TCP socket keeps
//! only a little queued and unsent ([`unsent_bound`], `TCP_NOTSENT_LOWAT`),
//! so our writes move at the reader's pace, not ahead of it by a send
//! buffer of megabytes that a slow reader takes minutes to drain (measured
//! before: readers at 4-16 KiB/s were reset at 60 s, and at 64-128 KiB/s
//! with `--timeout 5`).
//!
//! Readiness is edge-triggered: `can_read` and `can_write` remember what
//! the last events said until a read or write finds the socket empty or
//! full, so no event is lost while a worker or a body thread has the
//! connection, and no read is made just to learn there is nothing to read.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::log;
use crate::metrics::Metrics;

use super::app::{Body, FastPath, Method, Request, Response};
use super::body::{SegmentsBody, SendEnd, SendOutcome, StreamBody};
use super::http1::request::{self, Head, Parsed, RequestError};
use super::http1::response::{self, Framing};
use super::pool::{ConnId, Job, Pool};
use super::sock::Sock;
use super::{Activity, Limits};

/// The slowest a reply may be read, on average over each `write_timeout`:
/// a real link slower than this is not one a binary cache can serve.
pub const MIN_RATE: u64 = 1024;
/// Bytes a TCP socket may hold queued but not yet sent (beyond what the
/// client's window lets go at once) when replies must move `MIN_RATE`
/// bytes a second over `write_timeout`. The kernel wakes a writer when the
/// unsent bytes fall below half of this, so a reader at the minimum rate
/// lets a write through at least twice a window, and one slower shows no
/// progress. A fast reader's window takes every byte at once: the bound
/// does not slow it.
pub fn unsent_bound(write_timeout: Duration) -> u32 {
    let window = MIN_RATE.saturating_mul(write_timeout.as_secs().max(1));
    window.clamp(4 << 10, 128 << 10) as u32
}
/// How long and how much a closing connection reads and drops, so that
/// bytes the client sent after what we answered do not make the kernel
/// send a reset that destroys the reply before the client reads it.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;
/// Bytes the loop writes from memory for one connection in one turn
/// before others get theirs.
const TURN: u64 = 4 << 20;
/// Bytes a body thread sends in one job before the connection goes back
/// to its loop (and the thread to the queue): a few milliseconds at
/// loopback speed.
const BODY_TURN: u64 = 16 << 20;
const READ_CHUNK: usize = 4096;
/// Draining: how long a connection that has sent no whole head yet gets to
/// finish one. A client that connected just before the stop sends its
/// request within a millisecond; one that sends nothing, or a byte a
/// second, must not hold the stop for `read_timeout`.
pub(super) const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Waiting for (the rest of) a request head.
    Head,
    /// A worker is computing the response.
    Busy,
    /// Writing a response (or waiting to be able to).
    Write,
    /// A body thread is sending the body's segments.
    Sending,
    /// A body thread is reading the next chunk of a computed body.
    Filling,
    /// The reply is out and our side is shut: dropping what still comes.
    Linger,
}

impl State {
    /// Whether a thread other than the loop has the connection's body or
    /// request now: its deadlines wait until it comes back.
    pub fn away(self) -> bool {
        matches!(self, State::Busy | State::Sending | State::Filling)
    }
}

/// What the loop should do with the connection after driving it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Life {
    /// Waiting for readiness, a thread or a deadline.
    Wait,
    /// It could go on at once but used its turn: drive it again soon.
    Again,
    Closed,
}

/// What the event loop lends a connection while driving it.
pub(super) struct Ctx<'a> {
    pub id: ConnId,
    pub workers: &'a Pool,
    pub bodies: &'a Pool,
    pub fast: Option<&'a mut Box<dyn FastPath>>,
    pub activity: &'a Activity,
    pub limits: &'a Limits,
    pub date: &'a str,
    pub access_log: bool,
    /// When the drain began, if it has.
    pub draining: Option<Instant>,
    pub now: Instant,
}

/// The request being answered, for the access log and the metrics.
struct Exchange {
    method: Method,
    target: String,
    minor: u8,
    user_agent: Option<Vec<u8>>,
    status: u16,
    route: &'static str,
    /// Who the application answered (`--htpasswd`), for the log.
    user: Option<Arc<str>>,
    /// When the reply started to go out.
    started: Instant,
}

/// What the engine keeps of a head while a worker answers its request.
struct Asked {
    minor: u8,
    keep_alive: bool,
    has_body: bool,
    user_agent: Option<Vec<u8>>,
}

/// The body still to send after `out`.
enum Pending {
    None,
    /// `None` while a body thread has it.
    Segments(Option<Box<SegmentsBody>>),
    Stream(StreamBody),
}

pub(super) struct Conn {
    /// Its number among the connections its loop accepted ([`super::pool::ConnId`]).
    pub serial: u64,
    pub sock: Arc<Sock>,
    peer: String,
    pub state: State,
    inbuf: Vec<u8>,
    can_read: bool,
    can_write: bool,
    /// A writable event came while a body thread was sending.
    writable_while_away: bool,
    /// When the head being read started to arrive.
    head_started: Option<Instant>,
    /// When this connection started to wait for a head with nothing sent.
    idle_since: Instant,
    /// Whether a request was answered on it yet (the first head may take
    /// `read_timeout` to start; later ones `keepalive_timeout`).
    answered: bool,
    asked: Option<Asked>,
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
    /// Write progress, for the slow-reader rule.
    progress_at: Instant,
    window_start: Instant,
    window_sent: u64,
    linger_until: Instant,
    linger_left: usize,
    metrics: Arc<Metrics>,
}

impl Conn {
    pub fn new(sock: Sock, peer: String, serial: u64, now: Instant, metrics: Arc<Metrics>) -> Conn {
        Conn {
            serial,
            sock: Arc::new(sock),
            peer,
            state: State::Head,
            inbuf: Vec::new(),
            can_read: true,
            can_write: true,
            writable_while_away: false,
            head_started: None,
            idle_since: now,
            answered: false,
            asked: None,
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

    /// Takes what an event says: the socket has bytes, or room.
    pub fn ready(&mut self, readable: bool, writable: bool) {
        self.can_read |= readable;
        self.can_write |= writable;
        if writable && self.state == State::Sending {
            self.writable_while_away = true;
        }
    }

    /// Whether it waits for a head with no whole one received: what a
    /// drain may close. `idle`: kept alive after a reply with nothing of
    /// the next request received (closed at once: a client retries a
    /// request that races such a close).
    pub fn waiting_for_head(&self) -> Option<bool> {
        (self.state == State::Head).then_some(self.inbuf.is_empty() && self.answered)
    }

    /// Moves the connection on as far as it can go without blocking.
    pub fn drive(&mut self, cx: &mut Ctx<'_>) -> Life {
        let mut budget = TURN;
        loop {
            match self.state {
                State::Head => {
                    if let Some(life) = self.read_head(cx) {
                        return life;
                    }
                }
                State::Busy | State::Sending | State::Filling => return Life::Wait,
                State::Write => match self.flush(cx, &mut budget) {
                    Flush::Blocked | Flush::Away => return Life::Wait,
                    Flush::Turn => return Life::Again,
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
    /// whole head and the socket has more. `None` when the state changed
    /// and driving goes on.
    fn read_head(&mut self, cx: &mut Ctx<'_>) -> Option<Life> {
        loop {
            match request::parse(&self.inbuf) {
                Ok(Parsed::Complete(head, n)) => {
                    self.inbuf.drain(..n);
                    self.head_started = (!self.inbuf.is_empty()).then_some(cx.now);
                    self.dispatch(head, cx);
                    return None;
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
            if !self.can_read {
                return Some(Life::Wait);
            }
            let at = self.inbuf.len();
            self.inbuf.resize(at + READ_CHUNK, 0);
            let read = self.sock.read(&mut self.inbuf[at..]);
            self.inbuf.truncate(at + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => return Some(Life::Closed),
                Ok(n) => {
                    // A short read emptied the socket: the next bytes
                    // bring an event.
                    self.can_read = n == READ_CHUNK;
                    self.head_started.get_or_insert(cx.now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.can_read = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Some(Life::Closed),
            }
        }
    }

    /// Answers `head` at once if the fast path can, else hands it to a
    /// worker.
    fn dispatch(&mut self, head: Head, cx: &mut Ctx<'_>) {
        let Head {
            request,
            minor,
            keep_alive,
            has_body,
            user_agent,
        } = head;
        self.asked = Some(Asked {
            minor,
            keep_alive,
            has_body,
            user_agent,
        });
        let fast = cx.fast.as_mut().and_then(|f| f.answer(&request));
        if let Some(response) = fast {
            cx.activity.served();
            self.respond(response, request, cx);
            return;
        }
        self.state = State::Busy;
        cx.workers.submit(Job::Respond { id: cx.id, request });
    }

    /// A head that cannot be answered: its status, then close.
    fn reply_error(&mut self, e: RequestError, cx: &Ctx<'_>) {
        let resp = response::request_error(&e);
        let exchange = Exchange {
            method: Method::Other("-".into()),
            target: "-".into(),
            minor: 1,
            user_agent: None,
            status: resp.status,
            route: "other",
            user: None,
            started: cx.now,
        };
        self.start_reply(resp, exchange, false, false, cx);
    }

    /// The answer to `request`, the last head this connection sent.
    pub fn respond(&mut self, response: Response, request: Request, cx: &Ctx<'_>) {
        let asked = self.asked.take().unwrap_or(Asked {
            minor: 1,
            keep_alive: false,
            has_body: false,
            user_agent: None,
        });
        let keep =
            asked.keep_alive && cx.limits.keepalive && !asked.has_body && cx.draining.is_none();
        let head_only = request.is_head();
        let exchange = Exchange {
            method: request.method,
            target: request.target,
            minor: asked.minor,
            user_agent: asked.user_agent,
            status: response.status,
            route: response.route,
            user: response.user.clone(),
            started: cx.now,
        };
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
        let framing = match resp.body.length() {
            Some(n) => Framing::Length(n),
            None if head_only => Framing::Close,
            None if exchange.minor >= 1 => Framing::Chunked,
            None => {
                keep = false;
                Framing::Close
            }
        };
        if head_only && framing == Framing::Close {
            // A HEAD reply has no body to end with a close.
            keep = keep && exchange.minor >= 1;
        }
        self.out.clear();
        self.out_pos = 0;
        response::head_bytes(&resp, framing, keep, cx.date, &mut self.out);
        self.head_len = self.out.len() as u64;
        self.pending = Pending::None;
        if !head_only {
            match resp.body {
                Body::Bytes(b) => self.out.extend_from_slice(&b),
                Body::Segments { source, len } => {
                    // The head goes out with the body, from a body thread.
                    let head = std::mem::take(&mut self.out);
                    let body = SegmentsBody::new(source, len, head);
                    self.pending = Pending::Segments(Some(Box::new(body)));
                }
                Body::Stream { reader, len } => {
                    let mut body = StreamBody::new(reader, len, framing == Framing::Chunked);
                    // The first chunk is read while the head goes out.
                    request_fill(&mut body, cx);
                    self.pending = Pending::Stream(body);
                }
                Body::Omitted { .. } => {}
            }
        }
        self.written = 0;
        self.exchange = Some(exchange);
        self.keep = keep;
        self.state = State::Write;
        self.progress_at = cx.now;
        self.window_start = cx.now;
        self.window_sent = 0;
    }
}

/// Hands a computed body's reader to a body thread for the next chunk, if
/// it is here and more is to come.
fn request_fill(body: &mut StreamBody, cx: &Ctx<'_>) {
    if body.ended {
        return;
    }
    let Some(reader) = body.reader.take() else {
        return;
    };
    cx.bodies.submit(Job::Fill {
        id: cx.id,
        reader,
        buf: std::mem::take(&mut body.spare),
        want: body.want(),
    });
}

enum Flush {
    /// The socket is full: wait until it is writable.
    Blocked,
    /// This turn's bytes are out; more could go at once.
    Turn,
    /// A body thread has the body now.
    Away,
    /// The reply is out.
    Complete,
    /// The client went away or the body's source failed: close now, so a
    /// short body is never taken for a whole one.
    Failed,
}

impl Conn {
    /// Writes what is ready of the reply, or hands its body to a body
    /// thread.
    fn flush(&mut self, cx: &Ctx<'_>, budget: &mut u64) -> Flush {
        loop {
            if *budget == 0 {
                return Flush::Turn;
            }
            if self.out_pos < self.out.len() {
                match self.sock.write(&self.out[self.out_pos..]) {
                    Ok(n) => {
                        self.out_pos += n;
                        *budget = budget.saturating_sub(n as u64);
                        self.sent(n as u64, cx.now);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.can_write = false;
                        return Flush::Blocked;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return self.client_gone(&e.to_string()),
                }
                continue;
            }
            self.out.clear();
            self.out_pos = 0;
            match &mut self.pending {
                Pending::None => return Flush::Complete,
                Pending::Segments(body) => {
                    if !self.can_write {
                        return Flush::Blocked;
                    }
                    let Some(body) = body.take() else {
                        return Flush::Away;
                    };
                    self.writable_while_away = false;
                    self.state = State::Sending;
                    cx.bodies.submit(Job::Send {
                        id: cx.id,
                        sock: self.sock.clone(),
                        body,
                        budget: BODY_TURN,
                    });
                    return Flush::Away;
                }
                Pending::Stream(body) => {
                    if let Some(next) = body.ready.take() {
                        self.out = next;
                        request_fill(body, cx);
                        continue;
                    }
                    if body.ended {
                        self.pending = Pending::None;
                        continue;
                    }
                    // Nothing to write until a body thread brings the next
                    // chunk.
                    request_fill(body, cx);
                    self.state = State::Filling;
                    return Flush::Away;
                }
            }
        }
    }

    /// A body thread sent part of the body: count it, then go on.
    pub fn sent_by_thread(
        &mut self,
        body: Option<Box<SegmentsBody>>,
        outcome: SendOutcome,
        cx: &Ctx<'_>,
    ) -> bool {
        self.state = State::Write;
        self.sent(outcome.written, cx.now);
        match outcome.end {
            SendEnd::Complete => self.pending = Pending::None,
            SendEnd::Turn => self.pending = Pending::Segments(body),
            SendEnd::Blocked => {
                self.pending = Pending::Segments(body);
                // An event that came while the thread was at it may be
                // for room it never saw: look once more.
                self.can_write = self.writable_while_away;
            }
            SendEnd::PeerGone(e) => {
                self.client_gone(&e.to_string());
                return false;
            }
            SendEnd::Failed(e) => {
                self.source_failed(&e);
                return false;
            }
        }
        true
    }

    /// A body thread read the next chunk of a computed body. False when the
    /// body failed and the connection must close.
    pub fn filled(
        &mut self,
        reader: Option<Box<dyn std::io::Read + Send>>,
        buf: Vec<u8>,
        result: std::io::Result<usize>,
        cx: &Ctx<'_>,
    ) -> bool {
        let Pending::Stream(body) = &mut self.pending else {
            return false;
        };
        self.state = State::Write;
        let taken = match (reader, result) {
            (Some(reader), Ok(n)) => body.take(reader, buf, n),
            (_, Err(e)) => Err(e.to_string()),
            (None, Ok(_)) => Err("the body's reader was lost".into()),
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
            request_fill(body, cx);
        } else {
            body.ready = Some(chunk);
        }
        true
    }

    /// The reply is out: log it, then wait for the next head or close.
    /// `None` when driving goes on.
    fn finish(&mut self, cx: &Ctx<'_>) -> Option<Life> {
        if let Some(x) = self.exchange.take() {
            self.record(&x, true);
            if cx.access_log {
                let body = self.written.saturating_sub(self.head_len);
                log::access(access_line(&self.peer, &x, body));
            }
        }
        self.answered = true;
        if self.keep && cx.draining.is_none() {
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

    fn sent(&mut self, n: u64, now: Instant) {
        self.written += n;
        if n > 0 {
            self.progress_at = now;
            self.window_sent += n;
        }
    }

    fn client_gone(&mut self, e: &str) -> Flush {
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

    /// A reply cut short still gets its access-log line and its count.
    pub fn log_cut(&mut self) {
        self.pending = Pending::None;
        if let Some(x) = self.exchange.take() {
            self.record(&x, false);
            if log::access_enabled() {
                let body = self.written.saturating_sub(self.head_len);
                log::access(access_line(&self.peer, &x, body));
            }
        }
    }

    /// Counts a reply, whole or cut, in the metrics; a whole GET body that
    /// succeeded with its time from first to last byte.
    fn record(&self, x: &Exchange, whole: bool) {
        let timed = whole && x.method == Method::Get && x.status < 300;
        let took = timed.then(|| x.started.elapsed());
        self.metrics.reply(x.route, x.status, self.written, took);
    }

    /// The deadline check, run by the loop every tick: `Closed` when the
    /// connection has overstayed.
    pub fn on_tick(&mut self, cx: &mut Ctx<'_>) -> Life {
        let limits = cx.limits;
        match self.state {
            State::Head => {
                if let Some(since) = cx.draining {
                    // Draining: an idle kept-alive connection goes at once;
                    // one that has sent no whole head gets a short grace.
                    if self.waiting_for_head() == Some(true) || cx.now >= since + DRAIN_GRACE {
                        return Life::Closed;
                    }
                }
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
            State::Busy | State::Sending | State::Filling | State::Linger => Life::Wait,
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
/// fields escaped as nginx does (`log::escape`), the user name too (it is
/// what the client sent, verified or not).
fn access_line(peer: &str, x: &Exchange, bytes: u64) -> String {
    let date = response::clf_date(SystemTime::now());
    let target = log::escape(&x.target);
    let ua = x
        .user_agent
        .as_deref()
        .map_or_else(|| "-".to_owned(), log::escape_bytes);
    let user = x
        .user
        .as_deref()
        .map_or_else(|| "-".to_owned(), log::escape);
    format!(
        "{peer} - {user} [{date}] \"{} {target} HTTP/1.{}\" {} {bytes} \"-\" \"{ua}\"",
        log::escape(x.method.as_str()),
        x.minor,
        x.status
    )
}
