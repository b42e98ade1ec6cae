//! The event loop: one thread that owns every socket (`mio`, epoll). It
//! accepts, reads heads, parks keep-alive connections, writes replies and
//! hands complete requests to the store workers ([`super::pool`]); their
//! answers come back through a channel and a [`mio::Waker`]. What the
//! application's [`FastPath`] can answer at once (a narinfo reply known
//! valid) is answered here, in the turn its head was read, with no worker.

use std::cell::RefCell;
use std::io::{self, ErrorKind};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::{Events, Interest, Poll, Token};

use crate::http::{response, FastPath};
use crate::log;
use crate::metrics::Metrics;

use super::conn::{Conn, Ctx, Life, Sock, State};
use super::listen::Listener;
use super::pool::{ConnId, Done, Pool};
use super::{Activity, Limits};

pub(super) const WAKER: Token = Token(0);
/// How often deadlines are looked at: their resolution.
const TICK: Duration = Duration::from_millis(100);
/// How long accepting pauses when the process is out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Sent, best effort, to a connection over the limit before closing it.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 13\r\nCache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\n\r\nServer busy.\n";

/// What the main thread asks of the loop.
pub(super) enum Ctl {
    /// Stop taking connections; the reply comes once none will be.
    StopAccepting(Sender<()>),
    ResumeAccepting(Sender<()>),
    /// Stop accepting, answer what was received, close the rest; end when
    /// nothing is left or at `deadline`.
    Drain {
        deadline: Instant,
    },
}

enum Listening {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

impl Listening {
    fn from(l: Listener) -> io::Result<Listening> {
        Ok(match l {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Listening::Tcp(mio::net::TcpListener::from_std(l))
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true)?;
                Listening::Unix(mio::net::UnixListener::from_std(l))
            }
        })
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listening::Tcp(l) => l,
            Listening::Unix(l) => l,
        }
    }

    fn accept(&self) -> io::Result<(Sock, String)> {
        match self {
            Listening::Tcp(l) => l.accept().map(|(s, addr)| {
                // Small replies (narinfo) should leave at once.
                let _ = s.set_nodelay(true);
                (Sock::Tcp(s), addr.ip().to_string())
            }),
            Listening::Unix(l) => l.accept().map(|(s, _)| (Sock::Unix(s), "unix".into())),
        }
    }
}

pub(super) struct EventLoop {
    poll: Poll,
    listeners: Vec<Listening>,
    accepting: bool,
    accept_paused_until: Option<Instant>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    open: usize,
    generation: u64,
    pool: Pool,
    /// Borrowed by one connection at a time, while it reads a head.
    fast: Option<RefCell<FastPath>>,
    done: Receiver<Done>,
    ctl: Receiver<Ctl>,
    activity: Arc<Activity>,
    metrics: Arc<Metrics>,
    settings: Settings,
    drain_deadline: Option<Instant>,
    /// Connections that used their turn and can go on at once.
    again: Vec<usize>,
    date: String,
    date_second: u64,
}

/// What the loop is told once, at start.
pub(super) struct Settings {
    pub limits: Limits,
    pub access_log: bool,
    /// Connections served at once; more are refused (503).
    pub max_conns: usize,
    /// What the loop answers by itself (taken out at start).
    pub fast: Option<FastPath>,
}

/// The loop's ends of the channels to the workers and the main thread.
pub(super) struct Channels {
    pub done: Receiver<Done>,
    pub ctl: Receiver<Ctl>,
}

impl EventLoop {
    pub fn new(
        poll: Poll,
        listeners: Vec<Listener>,
        pool: Pool,
        channels: Channels,
        activity: Arc<Activity>,
        metrics: Arc<Metrics>,
        mut settings: Settings,
    ) -> io::Result<EventLoop> {
        let fast = settings.fast.take();
        let listeners = listeners
            .into_iter()
            .map(Listening::from)
            .collect::<io::Result<Vec<_>>>()?;
        let mut l = EventLoop {
            poll,
            listeners,
            accepting: false,
            accept_paused_until: None,
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            generation: 0,
            pool,
            fast: fast.map(RefCell::new),
            done: channels.done,
            ctl: channels.ctl,
            activity,
            metrics,
            settings,
            drain_deadline: None,
            again: Vec::new(),
            date: String::new(),
            date_second: u64::MAX,
        };
        l.set_accepting(true)?;
        Ok(l)
    }

    fn listener_token(i: usize) -> Token {
        Token(1 + i)
    }

    fn conn_token(&self, index: usize) -> Token {
        Token(1 + self.listeners.len() + index)
    }

    fn set_accepting(&mut self, on: bool) -> io::Result<()> {
        if on == self.accepting {
            return Ok(());
        }
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if on {
                self.poll.registry().register(
                    l.source(),
                    Self::listener_token(i),
                    Interest::READABLE,
                )?;
            } else {
                self.poll.registry().deregister(l.source())?;
            }
        }
        self.accepting = on;
        if on {
            // Edge-triggered: connections that queued while we were not
            // looking raise no new event.
            self.accept_all();
        }
        Ok(())
    }

    /// Runs until drained.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            let timeout = if self.again.is_empty() {
                next_tick.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    log::error(&format!("event loop: {e}"));
                    std::thread::sleep(TICK);
                }
            }
            self.refresh_date();
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    continue;
                }
                if token.0 <= self.listeners.len() {
                    if self.accepting && self.accept_paused_until.is_none() {
                        self.accept_from(token.0 - 1);
                    }
                    continue;
                }
                let index = token.0 - 1 - self.listeners.len();
                self.drive(index);
            }
            for index in std::mem::take(&mut self.again) {
                self.drive(index);
            }
            self.take_answers();
            if self.take_orders() {
                return;
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + TICK;
                self.tick(now);
            }
            if let Some(deadline) = self.drain_deadline {
                if self.open == 0 || now >= deadline {
                    self.pool.close();
                    return;
                }
            }
        }
    }

    fn refresh_date(&mut self) {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.date_second {
            self.date = response::http_date(now);
            self.date_second = second;
        }
    }

    fn accept_all(&mut self) {
        for i in 0..self.listeners.len() {
            self.accept_from(i);
        }
    }

    fn accept_from(&mut self, i: usize) {
        loop {
            let (mut sock, peer) = match self.listeners[i].accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // The peer gave up before we took it: nothing to do.
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS: the clients wait in the
                    // backlog while we pause instead of spinning.
                    log::error(&format!("accept: {e}; pausing for {ACCEPT_PAUSE:?}"));
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
            };
            if self.open >= self.settings.max_conns {
                // Over the limit: refused clearly, never by failing
                // requests in flight.
                let _ = match &sock {
                    Sock::Tcp(s) => std::io::Write::write(&mut &*s, BUSY),
                    Sock::Unix(s) => std::io::Write::write(&mut &*s, BUSY),
                };
                self.activity.refused();
                self.metrics.connection_refused();
                continue;
            }
            let index = match self.free.pop() {
                Some(i) => i,
                None => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
            };
            let token = self.conn_token(index);
            if let Err(e) = self.poll.registry().register(
                sock.source(),
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::error(&format!("registering a connection: {e}"));
                self.free.push(index);
                continue;
            }
            self.generation += 1;
            let metrics = self.metrics.clone();
            let conn = Conn::new(sock, peer, self.generation, Instant::now(), metrics);
            self.conns[index] = Some(conn);
            self.metrics.connection_accepted();
            self.open += 1;
            // Counted before the next look at the orders: see StopAccepting.
            self.activity.opened();
            self.drive(index);
        }
    }

    fn ctx(&self, index: usize, generation: u64) -> Ctx<'_> {
        Ctx {
            id: ConnId { index, generation },
            pool: &self.pool,
            fast: self.fast.as_ref(),
            activity: &self.activity,
            limits: &self.settings.limits,
            date: &self.date,
            access_log: self.settings.access_log,
            draining: self.drain_deadline.is_some(),
            now: Instant::now(),
        }
    }

    /// Drives connection `index` with `f` (by default, as far as it goes).
    fn with_conn(&mut self, index: usize, f: impl FnOnce(&mut Conn, &Ctx<'_>) -> Life) {
        let Some(mut conn) = self.conns.get_mut(index).and_then(Option::take) else {
            return;
        };
        let life = {
            let cx = self.ctx(index, conn.generation);
            f(&mut conn, &cx)
        };
        match life {
            Life::Closed => self.close(index, conn),
            Life::Again => {
                self.conns[index] = Some(conn);
                self.again.push(index);
            }
            Life::Wait => self.conns[index] = Some(conn),
        }
    }

    fn drive(&mut self, index: usize) {
        self.with_conn(index, |c, cx| c.drive(cx));
    }

    fn close(&mut self, index: usize, mut conn: Conn) {
        let _ = self.poll.registry().deregister(conn.sock.source());
        drop(conn);
        self.free.push(index);
        self.open -= 1;
        self.activity.closed();
    }

    fn find(&self, id: ConnId) -> bool {
        matches!(self.conns.get(id.index), Some(Some(c)) if c.generation == id.generation)
    }

    fn take_answers(&mut self) {
        while let Ok(done) = self.done.try_recv() {
            match done {
                Done::Responded { id, answer } => {
                    let (head, response) = *answer;
                    if !self.find(id) {
                        continue;
                    }
                    self.activity.served();
                    match response {
                        Some(r) => self.with_conn(id.index, |c, cx| {
                            c.respond(r, &head, cx);
                            c.drive(cx)
                        }),
                        None => self.with_conn(id.index, |_, _| Life::Closed),
                    }
                }
                Done::Filled {
                    id,
                    reader,
                    buf,
                    result,
                } => {
                    if !self.find(id) {
                        continue;
                    }
                    self.with_conn(id.index, |c, cx| {
                        if c.filled(reader, buf, result, cx) {
                            c.drive(cx)
                        } else {
                            Life::Closed
                        }
                    });
                }
            }
        }
    }

    /// Handles the main thread's orders; true when the loop must end now.
    fn take_orders(&mut self) -> bool {
        while let Ok(order) = self.ctl.try_recv() {
            match order {
                Ctl::StopAccepting(ack) => {
                    if let Err(e) = self.set_accepting(false) {
                        log::error(&format!("cannot stop accepting: {e}"));
                    }
                    let _ = ack.send(());
                }
                Ctl::ResumeAccepting(ack) => {
                    if let Err(e) = self.set_accepting(true) {
                        log::error(&format!("cannot resume accepting: {e}"));
                    }
                    let _ = ack.send(());
                }
                Ctl::Drain { deadline } => {
                    if let Err(e) = self.set_accepting(false) {
                        log::error(&format!("cannot stop accepting: {e}"));
                    }
                    self.drain_deadline = Some(deadline);
                    // Idle connections go now; the others when their reply
                    // is out (or their head arrived and was answered).
                    for index in 0..self.conns.len() {
                        if self.conns[index].as_ref().is_some_and(Conn::is_idle) {
                            self.drive(index);
                        }
                    }
                }
            }
        }
        false
    }

    fn tick(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| now >= t) {
            self.accept_paused_until = None;
            if self.accepting {
                self.accept_all();
            }
        }
        for index in 0..self.conns.len() {
            if self.conns[index]
                .as_ref()
                .is_some_and(|c| c.state != State::Busy && c.state != State::Filling)
            {
                self.with_conn(index, |c, cx| c.on_tick(cx));
            }
        }
    }
}
