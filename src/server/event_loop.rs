//! One event loop: a thread that owns its connections' sockets (`mio`,
//! epoll). It accepts from every listening socket (each loop has its own
//! copy of each; whichever loop's `accept` wins takes the client), reads
//! heads, answers what the application's fast path can in the same turn,
//! hands the rest to the workers, writes replies held in memory, hands
//! file-backed bodies to the body threads, and parks keep-alive
//! connections. Answers come back through a channel and a [`mio::Waker`].
//!
//! A loop never blocks but in `epoll_wait`, and turns at least every
//! [`TICK`]: each turn is a heartbeat ([`super::Health`]). A panic here is
//! a bug that may have left the loop's connections in any state: the
//! process exits (status 70) and systemd starts another, whose socket
//! still holds the clients waiting to be accepted.

use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::log;
use crate::metrics::Metrics;

use super::app::FastPath;
use super::conn::{unsent_bound, Conn, Ctx, Life, State};
use super::http1::response;
use super::listen::Listener;
use super::pool::{ConnId, Done, Pool};
use super::sock::Sock;
use super::{Activity, Health, Limits};

pub(super) const WAKER: Token = Token(0);
/// How often deadlines are looked at (their resolution), and the longest a
/// loop sleeps without a turn.
const TICK: Duration = Duration::from_millis(100);
/// How long accepting pauses when the process is out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// The exit status after a loop panicked (`EX_SOFTWARE`): systemd restarts.
const PANIC_EXIT: i32 = 70;

/// What the main thread asks of a loop.
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

    fn raw(&self) -> i32 {
        match self {
            Listening::Tcp(l) => l.as_raw_fd(),
            Listening::Unix(l) => l.as_raw_fd(),
        }
    }

    /// `unsent`: see [`unsent_bound`].
    fn accept(&self, unsent: u32) -> io::Result<(Sock, String)> {
        match self {
            Listening::Tcp(l) => l.accept().map(|(s, addr)| {
                // Small replies (narinfo) should leave at once.
                let _ = s.set_nodelay(true);
                // Our writes then keep pace with what the client takes
                // (conn.rs, the slow-reader rule).
                let _ = socket2::SockRef::from(&s).set_tcp_notsent_lowat(unsent);
                (Sock::Tcp(s), addr.ip().to_string())
            }),
            Listening::Unix(l) => l.accept().map(|(s, _)| (Sock::Unix(s), "unix".into())),
        }
    }
}

/// What every loop shares with the others.
pub(super) struct Shared {
    pub workers: Arc<Pool>,
    pub bodies: Arc<Pool>,
    pub activity: Arc<Activity>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
}

/// What a loop is told once, at start.
pub(super) struct LoopSettings {
    pub limits: Limits,
    pub access_log: bool,
    /// Connections served at once, over all loops; more are refused (503).
    pub max_conns: usize,
    /// What this loop answers by itself.
    pub fast: Option<Box<dyn FastPath>>,
}

/// The loop's ends of its channels.
pub(super) struct Channels {
    pub done: Receiver<Done>,
    pub ctl: Receiver<Ctl>,
}

pub(super) struct EventLoop {
    index: usize,
    poll: Poll,
    listeners: Vec<Listening>,
    accepting: bool,
    accept_paused_until: Option<Instant>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections this loop holds.
    open: usize,
    generation: u64,
    shared: Shared,
    channels: Channels,
    settings: LoopSettings,
    /// When the drain began, and its deadline.
    drain: Option<(Instant, Instant)>,
    /// Connections that used their turn and can go on at once.
    again: Vec<usize>,
    date: String,
    date_second: u64,
}

/// Runs `l` until it is drained: whether everything finished (nothing
/// was cut at the drain's deadline). A panic ends the process.
pub(super) fn run_or_exit(l: EventLoop) -> bool {
    let index = l.index;
    match panic::catch_unwind(AssertUnwindSafe(|| l.run())) {
        Ok(finished) => finished,
        Err(_) => {
            log::error(&format!(
                "event loop {index} panicked: exiting (status {PANIC_EXIT}) so that a new process serves its clients"
            ));
            log::flush();
            std::process::exit(PANIC_EXIT);
        }
    }
}

impl EventLoop {
    pub fn new(
        index: usize,
        poll: Poll,
        listeners: Vec<Listener>,
        channels: Channels,
        shared: Shared,
        settings: LoopSettings,
    ) -> io::Result<EventLoop> {
        let listeners = listeners
            .into_iter()
            .map(Listening::from)
            .collect::<io::Result<Vec<_>>>()?;
        let l = EventLoop {
            index,
            poll,
            listeners,
            accepting: false,
            accept_paused_until: None,
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            generation: 0,
            shared,
            channels,
            settings,
            drain: None,
            again: Vec::new(),
            date: String::new(),
            date_second: u64::MAX,
        };
        l.shared.health.beat(index);
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
        for (i, l) in self.listeners.iter().enumerate() {
            let fd = l.raw();
            let mut source = SourceFd(&fd);
            if on {
                self.poll.registry().register(
                    &mut source,
                    Self::listener_token(i),
                    Interest::READABLE,
                )?;
            } else {
                self.poll.registry().deregister(&mut source)?;
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

    /// Runs until drained; false when the drain's deadline cut something.
    fn run(mut self) -> bool {
        if let Some(fast) = &mut self.settings.fast {
            fast.start();
        }
        if let Err(e) = self.set_accepting(true) {
            log::error(&format!("event loop {}: cannot accept: {e}", self.index));
        }
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
                    log::error(&format!("event loop {}: {e}", self.index));
                    std::thread::sleep(TICK);
                }
            }
            self.shared.health.beat(self.index);
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
                let (r, w) = (
                    event.is_readable() || event.is_read_closed() || event.is_error(),
                    event.is_writable() || event.is_write_closed() || event.is_error(),
                );
                if let Some(Some(c)) = self.conns.get_mut(index) {
                    c.ready(r, w);
                }
                self.drive(index);
            }
            for index in std::mem::take(&mut self.again) {
                self.drive(index);
            }
            self.take_answers();
            self.take_orders();
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + TICK;
                self.tick(now);
            }
            if let Some((_, deadline)) = self.drain {
                if self.open == 0 {
                    return true;
                }
                if now >= deadline {
                    self.cut_all();
                    return false;
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
            let unsent = unsent_bound(self.settings.limits.write_timeout);
            let (sock, peer) = match self.listeners[i].accept(unsent) {
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
            if self.shared.activity.open_now() >= self.settings.max_conns {
                // Over the limit: refused clearly, never by failing
                // requests in flight.
                let _ = sock.write(&response::busy(&self.date));
                self.shared.activity.refused();
                self.shared.metrics.connection_refused();
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
            let fd = sock.raw();
            if let Err(e) = self.poll.registry().register(
                &mut SourceFd(&fd),
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::error(&format!("registering a connection: {e}"));
                self.free.push(index);
                continue;
            }
            self.generation += 1;
            let metrics = self.shared.metrics.clone();
            let conn = Conn::new(sock, peer, self.generation, Instant::now(), metrics);
            self.conns[index] = Some(conn);
            self.shared.metrics.connection_accepted();
            self.open += 1;
            // Counted before the next look at the orders: see StopAccepting.
            self.shared.activity.opened();
            self.drive(index);
        }
    }

    /// Drives connection `index` with `f` (by default, as far as it goes).
    fn with_conn(&mut self, index: usize, f: impl FnOnce(&mut Conn, &mut Ctx<'_>) -> Life) {
        let Some(mut conn) = self.conns.get_mut(index).and_then(Option::take) else {
            return;
        };
        let life = {
            let mut cx = Ctx {
                id: ConnId {
                    lp: self.index,
                    index,
                    generation: conn.generation,
                },
                workers: &self.shared.workers,
                bodies: &self.shared.bodies,
                fast: self.settings.fast.as_mut(),
                activity: &self.shared.activity,
                limits: &self.settings.limits,
                date: &self.date,
                access_log: self.settings.access_log,
                draining: self.drain.map(|(since, _)| since),
                now: Instant::now(),
            };
            f(&mut conn, &mut cx)
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

    fn close(&mut self, index: usize, conn: Conn) {
        let fd = conn.sock.raw();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        drop(conn);
        self.free.push(index);
        self.open -= 1;
        self.shared.activity.closed();
    }

    fn find(&self, id: ConnId) -> bool {
        matches!(self.conns.get(id.index), Some(Some(c)) if c.generation == id.generation)
    }

    fn take_answers(&mut self) {
        while let Ok(done) = self.channels.done.try_recv() {
            match done {
                Done::Responded {
                    id,
                    request,
                    response,
                } => {
                    if !self.find(id) {
                        continue;
                    }
                    self.shared.activity.served();
                    match response {
                        Some(r) => self.with_conn(id.index, |c, cx| {
                            c.respond(r, *request, cx);
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
                Done::Sent { id, body, outcome } => {
                    if !self.find(id) {
                        continue;
                    }
                    self.with_conn(id.index, |c, cx| {
                        if c.sent_by_thread(body, outcome, cx) {
                            c.drive(cx)
                        } else {
                            Life::Closed
                        }
                    });
                }
            }
        }
    }

    /// Handles the main thread's orders.
    fn take_orders(&mut self) {
        while let Ok(order) = self.channels.ctl.try_recv() {
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
                    self.drain = Some((Instant::now(), deadline));
                    // Idle connections go now; a whole head already here
                    // is read and answered; the others when their reply is
                    // out, or after a short grace if no whole head comes.
                    for index in 0..self.conns.len() {
                        let waiting = self.conns[index].as_ref().and_then(Conn::waiting_for_head);
                        match waiting {
                            Some(true) => {
                                if let Some(conn) = self.conns[index].take() {
                                    self.close(index, conn);
                                }
                            }
                            Some(false) => self.drive(index),
                            None => {}
                        }
                    }
                }
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        self.shared.bodies.grow_if_stuck();
        if self.accept_paused_until.is_some_and(|t| now >= t) {
            self.accept_paused_until = None;
            if self.accepting {
                self.accept_all();
            }
        }
        for index in 0..self.conns.len() {
            if self.conns[index].as_ref().is_some_and(|c| !c.state.away()) {
                self.with_conn(index, |c, cx| c.on_tick(cx));
            }
        }
    }

    /// The drain's deadline passed: what is still in flight is cut, and
    /// counted as sent so far.
    fn cut_all(&mut self) {
        for index in 0..self.conns.len() {
            if let Some(mut conn) = self.conns[index].take() {
                if conn.state != State::Linger {
                    conn.log_cut();
                }
                self.close(index, conn);
            }
        }
    }
}
