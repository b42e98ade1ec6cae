//! The engine (`src/server`) on its own, with a small application that
//! lives in memory and a temporary file: no Nix, so these run under plain
//! `cargo test`. What is tested is what a client sees through a real TCP
//! socket: keep-alive, pipelining, slow and silent clients, the connection
//! limit, the drain, the idle exit, panics, the watchdog's heartbeat.

mod common;

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix_serve_sd::metrics::Metrics;
use nix_serve_sd::server::app::{
    self, Application, Body, FastPath, Handler, Response, Segment, Segments,
};
use nix_serve_sd::server::life::{self, Exit, Manager, Supervision};
use nix_serve_sd::server::{Limits, Listener, Server, Settings};

use common::binary::wait_exit;
use common::http::{connect, get, read_head, read_reply, send, Request};
use common::sockets::{wait_accepted_and_read, wait_waiting};
use common::wait_until;

const LIMIT: Duration = Duration::from_secs(30);

/// The application: routes by target.
/// - `/hello`: a few bytes;
/// - `/file/N`: N bytes of a file of the test's, as file regions between
///   two framing runs (a NAR's shape);
/// - `/stream/N`: N computed bytes, length known; `/chunked/N`: unknown;
/// - `/sleep/MS`: the handler sleeps, then answers;
/// - `/panic`, `/panic-stream`, `/panic-segments`: a panic in the handler,
///   in a computed body's reader, in a file body's source;
/// - `/fast`: answered by the loop's fast path; `/fast-hang/MS`: the fast
///   path blocks the loop; `/fast-panic`: it panics.
struct TestApp {
    file: PathBuf,
    handlers_made: Arc<AtomicUsize>,
}

struct TestHandler {
    file: PathBuf,
}

fn number(target: &str, prefix: &str) -> Option<u64> {
    target.strip_prefix(prefix)?.parse().ok()
}

fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

impl Handler for TestHandler {
    fn respond(&mut self, r: &app::Request) -> Response {
        let t = r.target.as_str();
        if t == "/hello" {
            return Response::new(
                200,
                "text/plain",
                "no-store",
                Body::Bytes(b"hello\n".to_vec()),
            );
        }
        if t == "/panic" {
            panic!("a handler bug, on purpose");
        }
        if t == "/echo-range" {
            let seen = r.range.as_deref().unwrap_or("none").to_owned();
            return Response::text(200, &seen);
        }
        if let Some(ms) = number(t, "/sleep/") {
            thread::sleep(Duration::from_millis(ms));
            return Response::text(200, "slept\n");
        }
        if let Some(n) = number(t, "/file/") {
            let body = FileBody::new(&self.file, n, false);
            return body_response(
                r,
                Body::Segments {
                    len: body.len(),
                    source: Box::new(body),
                },
            );
        }
        if t == "/panic-segments" {
            let body = FileBody::new(&self.file, 1 << 20, true);
            return body_response(
                r,
                Body::Segments {
                    len: body.len(),
                    source: Box::new(body),
                },
            );
        }
        if let Some(n) = number(t, "/stream/") {
            return body_response(
                r,
                Body::Stream {
                    reader: Box::new(Counting {
                        at: 0,
                        end: n,
                        panic: false,
                    }),
                    len: Some(n),
                },
            );
        }
        if let Some(n) = number(t, "/chunked/") {
            return body_response(
                r,
                Body::Stream {
                    reader: Box::new(Counting {
                        at: 0,
                        end: n,
                        panic: false,
                    }),
                    len: None,
                },
            );
        }
        if t == "/panic-stream" {
            return body_response(
                r,
                Body::Stream {
                    reader: Box::new(Counting {
                        at: 0,
                        end: 1 << 20,
                        panic: true,
                    }),
                    len: Some(1 << 20),
                },
            );
        }
        Response::text(404, "File not found.\n")
    }

    fn reset(&mut self) {}
}

fn body_response(r: &app::Request, body: Body) -> Response {
    let body = match body {
        b if r.is_head() => Body::Omitted { len: b.length() },
        b => b,
    };
    Response::new(200, "application/octet-stream", "no-store", body)
}

/// `len` bytes of the pattern, computed.
struct Counting {
    at: u64,
    end: u64,
    panic: bool,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.panic {
            panic!("a body reader bug, on purpose");
        }
        let k = (buf.len() as u64).min(self.end - self.at) as usize;
        for (j, b) in buf[..k].iter_mut().enumerate() {
            *b = pattern(self.at + j as u64);
        }
        self.at += k as u64;
        Ok(k)
    }
}

/// 16 framing bytes, `n` bytes of the file, 16 framing bytes: all of it
/// the pattern, so a client can check every byte.
struct FileBody {
    file: File,
    n: u64,
    at: u64,
    head: Vec<u8>,
    panic: bool,
}

impl FileBody {
    fn new(path: &PathBuf, n: u64, panic: bool) -> FileBody {
        FileBody {
            file: File::open(path).unwrap(),
            n,
            at: 0,
            head: Vec::new(),
            panic,
        }
    }

    fn len(&self) -> u64 {
        self.n + 32
    }
}

impl Segments for FileBody {
    fn segment(&mut self) -> io::Result<Option<Segment<'_>>> {
        if self.panic && self.at > 0 {
            panic!("a body source bug, on purpose");
        }
        let len = self.len();
        if self.at >= len {
            return Ok(None);
        }
        if self.at < 16 || self.at >= 16 + self.n {
            let end = if self.at < 16 { 16 } else { len };
            self.head = (self.at..end).map(pattern).collect();
            return Ok(Some(Segment::Bytes(&self.head)));
        }
        // The file holds the pattern from its byte 0; the body's byte i is
        // pattern(i), so the file region for body byte `at` starts at `at`.
        Ok(Some(Segment::File {
            file: &self.file,
            offset: self.at,
            len: 16 + self.n - self.at,
        }))
    }

    fn consume(&mut self, n: u64) -> io::Result<()> {
        self.at += n;
        Ok(())
    }
}

struct TestFast;

impl FastPath for TestFast {
    fn answer(&mut self, r: &app::Request) -> Option<Response> {
        match r.target.as_str() {
            "/fast" => Some(Response::text(200, "from the loop\n")),
            "/fast-panic" => panic!("a fast-path bug, on purpose"),
            t => {
                let ms = number(t, "/fast-hang/")?;
                thread::sleep(Duration::from_millis(ms));
                Some(Response::text(200, "woke\n"))
            }
        }
    }
}

impl Application for TestApp {
    fn handler(&self) -> Box<dyn Handler> {
        self.handlers_made.fetch_add(1, Ordering::SeqCst);
        Box::new(TestHandler {
            file: self.file.clone(),
        })
    }

    fn fast_path(&self) -> Option<Box<dyn FastPath>> {
        Some(Box::new(TestFast))
    }
}

/// A file holding the pattern, big enough for every test's body.
fn pattern_file() -> PathBuf {
    static FILE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut f = FILE.lock().unwrap();
    f.get_or_insert_with(|| {
        let p = std::env::temp_dir().join(format!("nix-serve-sd-engine-{}", std::process::id()));
        let bytes: Vec<u8> = (0..(48u64 << 20)).map(pattern).collect();
        std::fs::write(&p, bytes).unwrap();
        p
    })
    .clone()
}

fn limits() -> Limits {
    Limits {
        read_timeout: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(10),
        keepalive: true,
    }
}

struct Engine {
    addr: SocketAddr,
    server: Option<Server>,
    handlers_made: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

fn start_with(workers: usize, limits: Limits, max_connections: Option<usize>) -> Engine {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handlers_made = Arc::new(AtomicUsize::new(0));
    let app = Arc::new(TestApp {
        file: pattern_file(),
        handlers_made: handlers_made.clone(),
    });
    let settings = Settings {
        limits,
        loops: 2,
        workers,
        access_log: false,
        max_connections,
    };
    let metrics = Arc::new(Metrics::default());
    let server = Server::start(
        vec![Listener::Tcp(listener)],
        app,
        settings,
        metrics.clone(),
    )
    .unwrap();
    Engine {
        addr,
        server: Some(server),
        handlers_made,
        metrics,
    }
}

fn start() -> Engine {
    start_with(2, limits(), None)
}

fn check_pattern(body: &[u8]) {
    for (i, b) in body.iter().enumerate() {
        assert_eq!(*b, pattern(i as u64), "byte {i}");
    }
}

#[test]
fn keep_alive_serves_every_kind_of_body_on_one_connection() {
    let e = start();
    let mut s = connect(e.addr);
    for _ in 0..3 {
        s.write_all(&Request::get("/hello").keep_alive().bytes())
            .unwrap();
        let r = read_reply(&mut s, false);
        assert_eq!((r.status, &r.body[..]), (200, &b"hello\n"[..]));
        assert_eq!(r.header("Connection"), Some("keep-alive"));
        s.write_all(&Request::get("/file/3000000").keep_alive().bytes())
            .unwrap();
        let r = read_reply(&mut s, false);
        assert_eq!(r.body.len(), 3_000_032);
        check_pattern(&r.body);
        s.write_all(&Request::get("/stream/200000").keep_alive().bytes())
            .unwrap();
        let r = read_reply(&mut s, false);
        assert_eq!(r.body.len(), 200_000);
        check_pattern(&r.body);
        s.write_all(&Request::get("/fast").keep_alive().bytes())
            .unwrap();
        assert_eq!(read_reply(&mut s, false).body, b"from the loop\n");
        s.write_all(&Request::get("/chunked/100000").keep_alive().bytes())
            .unwrap();
        let r = read_reply(&mut s, false);
        assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
        assert_eq!(r.body.len(), 100_000);
        check_pattern(&r.body);
    }
}

/// RFC 9110 §13.1.5: we send no validators, so no If-Range matches and the
/// application never sees the Range; RFC 9112 §3.2: an invalid Host is a
/// 400 and closes the connection.
#[test]
fn if_range_and_host_rules() {
    let e = start();
    let ask = |extra: &[(&str, &str)]| Request::get("/echo-range").headers(extra).send(e.addr);
    assert_eq!(ask(&[("Range", "bytes=1-")]).body, b"bytes=1-");
    let with_if_range = [("Range", "bytes=1-"), ("If-Range", "\"x\"")];
    assert_eq!(ask(&with_if_range).body, b"none");
    let r = send(
        e.addr,
        b"GET /hello HTTP/1.1\r\nHost: exa mple\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 400);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let e = start();
    let mut s = connect(e.addr);
    let mut all = Vec::new();
    let targets: Vec<String> = (0..100)
        .map(|i| match i % 4 {
            0 => "/hello".to_owned(),
            1 => format!("/file/{}", 1000 + i),
            2 => "/fast".to_owned(),
            _ => format!("/stream/{}", 10 + i),
        })
        .collect();
    for t in &targets {
        all.extend_from_slice(&Request::get(t).keep_alive().bytes());
    }
    s.write_all(&all).unwrap();
    for (i, t) in targets.iter().enumerate() {
        let r = read_reply(&mut s, false);
        assert_eq!(r.status, 200, "{t}");
        match i % 4 {
            0 => assert_eq!(r.body, b"hello\n"),
            1 => assert_eq!(r.body.len(), 1000 + i + 32),
            2 => assert_eq!(r.body, b"from the loop\n"),
            _ => assert_eq!(r.body.len(), 10 + i),
        }
    }
}

#[test]
fn a_head_sent_a_byte_at_a_time_is_answered() {
    let e = start();
    let mut s = connect(e.addr);
    s.set_nodelay(true).unwrap();
    for b in Request::get("/file/100").bytes() {
        s.write_all(&[b]).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    let r = read_reply(&mut s, false);
    assert_eq!(r.body.len(), 132);
    check_pattern(&r.body);
}

#[test]
fn silent_and_idle_clients_do_not_stall_others() {
    let e = start_with(1, limits(), None);
    // Connected and silent; connected, served and then idle; half a head.
    let silent: Vec<TcpStream> = (0..50).map(|_| connect(e.addr)).collect();
    let mut idle = Vec::new();
    for _ in 0..50 {
        let mut s = connect(e.addr);
        s.write_all(&Request::get("/hello").keep_alive().bytes())
            .unwrap();
        read_reply(&mut s, false);
        idle.push(s);
    }
    let half: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = connect(e.addr);
            s.write_all(b"GET /hello HTTP/1.1\r\nHo").unwrap();
            s
        })
        .collect();
    for _ in 0..20 {
        assert_eq!(get(e.addr, "/hello").status, 200);
        assert_eq!(get(e.addr, "/file/10000").body.len(), 10_032);
    }
    drop((silent, idle, half));
}

#[test]
fn clients_that_never_read_hold_no_thread() {
    let e = start_with(1, limits(), None);
    // Each asks for 20 MiB and reads nothing: the socket buffers fill, the
    // connections wait in their loop, and every thread stays free.
    let stalled: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = connect(e.addr);
            s.write_all(&Request::get("/file/20000000").keep_alive().bytes())
                .unwrap();
            s
        })
        .collect();
    // Each reply under way: its head came (a few bytes of its 20 MiB).
    for mut s in &stalled {
        assert_eq!(read_head(&mut s).status, 200);
    }
    for _ in 0..10 {
        assert_eq!(get(e.addr, "/sleep/1").status, 200);
        let r = get(e.addr, "/file/5000000");
        assert_eq!(r.body.len(), 5_000_032);
    }
    drop(stalled);
}

/// A reader below the minimum rate is cut; one that reads slowly but
/// steadily, above it, gets its whole body, however long the kernel's
/// buffers would take to drain at its pace.
#[test]
fn the_slow_reader_rule_measures_the_reader() {
    let mut l = limits();
    l.write_timeout = Duration::from_secs(2);
    let e = start_with(2, l, None);
    let slow_reader = |rate: usize, body: u64, for_at_most: Duration| -> (u64, bool) {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        // A small window, as a slow link has (the bench's slow readers
        // have the same).
        sock.set_recv_buffer_size(64 * 1024).unwrap();
        sock.connect(&e.addr.into()).unwrap();
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.write_all(&Request::get(&format!("/file/{body}")).bytes())
            .unwrap();
        let started = Instant::now();
        let mut got = 0u64;
        let mut buf = vec![0u8; rate / 10];
        while started.elapsed() < for_at_most {
            match s.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got += n as u64,
                Err(_) => return (got, false),
            }
            thread::sleep(Duration::from_millis(100));
        }
        (got, true)
    };
    // 8 KiB/s for 7 s, more than three of the 2 s windows: never cut, though
    // it reads under 60 KiB of a 4 MiB body.
    let (got, ok) = slow_reader(8 * 1024, 4 << 20, Duration::from_secs(7));
    assert!(ok, "a steady 8 KiB/s reader was cut after {got} bytes");
    // 200 bytes a second: cut.
    let (got, ok) = slow_reader(200, 4 << 20, Duration::from_secs(20));
    assert!(
        !ok || got < 4 << 20,
        "a 200 B/s reader was never cut ({got} bytes)"
    );
}

#[test]
fn past_the_connection_limit_clients_get_a_503() {
    let e = start_with(2, limits(), Some(3));
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = connect(e.addr);
            s.write_all(&Request::get("/hello").keep_alive().bytes())
                .unwrap();
            read_reply(&mut s, false);
            s
        })
        .collect();
    let mut s = connect(e.addr);
    let r = read_reply(&mut s, false);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert_eq!(r.body, b"Server busy.\n");
    drop(held);
    wait_until("a slot to be free", LIMIT, || {
        let mut s = connect(e.addr);
        s.write_all(&Request::get("/hello").bytes()).unwrap();
        read_reply(&mut s, false).status == 200
    });
}

#[test]
fn drain_answers_what_was_asked_and_closes_the_rest_at_once() {
    let mut e = start();
    // In flight: a slow handler and a long body.
    let mut busy = connect(e.addr);
    busy.write_all(&Request::get("/sleep/700").keep_alive().bytes())
        .unwrap();
    let mut long = connect(e.addr);
    long.write_all(&Request::get("/file/30000000").keep_alive().bytes())
        .unwrap();
    // Idle after a reply, silent, half a head.
    let mut idle = connect(e.addr);
    idle.write_all(&Request::get("/hello").keep_alive().bytes())
        .unwrap();
    read_reply(&mut idle, false);
    let mut silent = connect(e.addr);
    let mut half = connect(e.addr);
    half.write_all(b"GET /hello HTTP/1.1\r\n").unwrap();
    // What each asked has reached the server before it is told to drain.
    wait_accepted_and_read(e.addr, 5);
    let server = e.server.take().unwrap();
    let drained = thread::spawn(move || server.drain(Instant::now() + LIMIT));
    let r = read_reply(&mut busy, false);
    assert_eq!((r.status, r.header("Connection")), (200, Some("close")));
    let r = read_reply(&mut long, false);
    assert_eq!(r.body.len(), 30_000_032);
    for s in [&mut idle, &mut silent, &mut half] {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
    assert!(
        drained.join().unwrap(),
        "the drain did not finish everything"
    );
}

/// At the drain's deadline what is still going out is cut, and counted as
/// sent so far: the exit line (the run's summary) and the metrics say the
/// same bytes (they once said 0 and 7.8 MB).
#[test]
fn a_body_cut_at_the_drain_bound_is_counted_once() {
    let mut e = start();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    sock.connect(&e.addr.into()).unwrap();
    let mut slow: TcpStream = sock.into();
    slow.set_read_timeout(Some(LIMIT)).unwrap();
    slow.write_all(&Request::get("/file/40000000").keep_alive().bytes())
        .unwrap();
    let mut got = vec![0u8; 256 * 1024];
    slow.read_exact(&mut got).unwrap();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = slow.read(&mut buf) {
            if n == 0 {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    });
    let server = e.server.take().unwrap();
    assert!(!server.drain(Instant::now() + Duration::from_secs(1)));
    let run = e.metrics.run_summary();
    let text = e.metrics.render();
    let sent: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("nix_serve_sent_bytes_total{route=\"other\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sent bytes in\n{text}"));
    assert!(run.bytes > 256 * 1024, "{} bytes counted", run.bytes);
    assert_eq!(run.bytes, sent, "exit summary and metrics disagree");
    assert_eq!(run.requests, 1);
    reader.join().unwrap();
}

/// A stop must not wait `read_timeout` for a client that sends nothing or
/// a byte now and then.
#[test]
fn drain_is_not_held_by_silent_or_slow_heads() {
    let mut l = limits();
    l.read_timeout = Duration::from_secs(60);
    let mut e = start_with(2, l, None);
    let _silent = connect(e.addr);
    let mut slow = connect(e.addr);
    slow.write_all(b"G").unwrap();
    wait_accepted_and_read(e.addr, 2);
    let started = Instant::now();
    assert!(e.server.take().unwrap().drain(Instant::now() + LIMIT));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the drain waited {:?}",
        started.elapsed()
    );
}

/// The service manager as the watch sees it, recording when it was
/// pinged, and when the watch last looked (its chores, every tick, after
/// the idle check).
struct Recorder {
    pings: Mutex<Vec<Instant>>,
    looked: Mutex<Option<Instant>>,
    period: Duration,
}

impl Manager for Recorder {
    fn status(&self, _: &str) {}
    fn ping(&self) {
        self.pings.lock().unwrap().push(Instant::now());
    }
    fn watchdog_period(&self) -> Option<Duration> {
        Some(self.period)
    }
}

impl Recorder {
    fn new(period: Duration) -> Arc<Recorder> {
        Arc::new(Recorder {
            pings: Mutex::new(Vec::new()),
            looked: Mutex::new(None),
            period,
        })
    }

    fn pings(&self) -> usize {
        self.pings.lock().unwrap().len()
    }

    /// Pings from `from` to `to`.
    fn pings_between(&self, from: Instant, to: Instant) -> usize {
        let pings = self.pings.lock().unwrap();
        pings.iter().filter(|t| (from..=to).contains(*t)).count()
    }

    /// Whether the watch has looked at the server at `at` or later.
    fn looked_at(&self, at: Instant) -> bool {
        self.looked.lock().unwrap().is_some_and(|t| t >= at)
    }
}

/// A manager whose watchdog period is far beyond a test's length.
fn unwatched() -> Arc<Recorder> {
    Recorder::new(Duration::from_secs(60))
}

fn supervise_on_thread(
    server: Server,
    idle: Option<Duration>,
    stop: Arc<AtomicBool>,
    manager: Arc<Recorder>,
) -> thread::JoinHandle<(Exit, Server)> {
    supervise_busy_on_thread(server, idle, stop, manager, Box::new(|| false))
}

/// `busy`: the application's work under way, as [`Supervision::busy`].
fn supervise_busy_on_thread(
    mut server: Server,
    idle: Option<Duration>,
    stop: Arc<AtomicBool>,
    manager: Arc<Recorder>,
    busy: Box<dyn Fn() -> bool + Send>,
) -> thread::JoinHandle<(Exit, Server)> {
    thread::spawn(move || {
        let exit = life::supervise(
            &mut server,
            Supervision {
                idle_timeout: idle,
                stop: &stop,
                manager: &*manager,
                describe: "test",
                chores: &mut |now| *manager.looked.lock().unwrap() = Some(now),
                busy: &*busy,
            },
        );
        (exit, server)
    })
}

/// Work the application does past its replies (pull-through's downloads
/// and imports) holds the idle exit back until it is over, with no
/// connection open all along.
#[test]
fn idle_exit_waits_for_the_applications_work() {
    let mut e = start();
    let manager = unwatched();
    let asked = Arc::new(AtomicUsize::new(0));
    let counting = asked.clone();
    // Busy for the first 10 looks (a tick each, 100 ms): well past the
    // idle timeout.
    let busy = Box::new(move || counting.fetch_add(1, Ordering::SeqCst) < 10);
    let watching = supervise_busy_on_thread(
        e.server.take().unwrap(),
        Some(Duration::from_millis(100)),
        Arc::new(AtomicBool::new(false)),
        manager,
        busy,
    );
    let (exit, _server) = watching.join().unwrap();
    assert_eq!(exit, Exit::Idle(Duration::from_millis(100)));
    assert!(
        asked.load(Ordering::SeqCst) > 10,
        "exited while the application was busy"
    );
}

#[test]
fn idle_exit_waits_for_the_last_connection_and_loses_nothing() {
    let mut e = start();
    let manager = unwatched();
    let watch = manager.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let mut s = connect(e.addr);
    s.write_all(&Request::get("/hello").keep_alive().bytes())
        .unwrap();
    read_reply(&mut s, false);
    let watching = supervise_on_thread(
        e.server.take().unwrap(),
        Some(Duration::from_millis(400)),
        stop,
        manager,
    );
    // An open connection keeps the server: the watch looks well past the
    // idle timeout, and stays.
    let past = Instant::now() + Duration::from_millis(1200);
    wait_until("the watch to look past the idle timeout", LIMIT, || {
        watch.looked_at(past)
    });
    assert!(!watching.is_finished(), "exited with a connection open");
    s.write_all(&Request::get("/hello").bytes()).unwrap();
    assert_eq!(read_reply(&mut s, false).status, 200);
    drop(s);
    let (exit, mut server) = watching.join().unwrap();
    assert_eq!(exit, Exit::Idle(Duration::from_millis(400)));
    // Stopped accepting: a client now waits in the socket's queue for the
    // next process; resumed, it is served.
    let mut waiting = connect(e.addr);
    waiting.write_all(&Request::get("/hello").bytes()).unwrap();
    wait_waiting(e.addr, 1);
    assert!(
        server.activity().idle_for().is_some(),
        "accepted after the loops stopped accepting"
    );
    server.resume_accepting();
    assert_eq!(read_reply(&mut waiting, false).status, 200);
}

#[test]
fn a_handler_panic_costs_its_connection_only() {
    let e = start_with(1, limits(), None);
    for _ in 0..5 {
        let mut s = connect(e.addr);
        s.write_all(&Request::get("/panic").keep_alive().bytes())
            .unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty());
        assert_eq!(get(e.addr, "/hello").status, 200);
    }
    // The one worker lived on (a new handler after each panic is allowed,
    // a new thread is not needed: one worker serves all of this).
    assert!(e.handlers_made.load(Ordering::SeqCst) >= 1);
}

#[test]
fn a_panic_in_a_body_costs_its_connection_only() {
    let e = start();
    for target in ["/panic-stream", "/panic-segments"] {
        for _ in 0..3 {
            let mut s = connect(e.addr);
            s.write_all(&Request::get(target).keep_alive().bytes())
                .unwrap();
            let mut all = Vec::new();
            let _ = s.read_to_end(&mut all);
            assert!(
                all.len() < (1 << 20),
                "{target}: a whole body after a panic"
            );
            assert_eq!(get(e.addr, "/file/100000").body.len(), 100_032);
        }
    }
}

#[test]
fn the_watchdog_is_pinged_only_while_every_loop_turns() {
    let mut e = start();
    let manager = Recorder::new(Duration::from_millis(200));
    let stop = Arc::new(AtomicBool::new(false));
    let watching = supervise_on_thread(
        e.server.take().unwrap(),
        None,
        stop.clone(),
        manager.clone(),
    );
    wait_until("pings", LIMIT, || manager.pings() >= 3);
    // One loop hangs for 3 s in its fast path: no pings meanwhile, from
    // 0.7 s in (the watch has seen the loop stand still by then) to 2.2 s,
    // as the pings recorded say once the reply has come.
    let sent = Instant::now();
    assert_eq!(get(e.addr, "/fast-hang/3000").status, 200);
    let (from, to) = (
        sent + Duration::from_millis(700),
        sent + Duration::from_millis(2200),
    );
    assert_eq!(
        manager.pings_between(from, to),
        0,
        "pinged while a loop hung"
    );
    let after = manager.pings();
    wait_until("pings again", LIMIT, || manager.pings() > after + 2);
    stop.store(true, Ordering::SeqCst);
    assert_eq!(watching.join().unwrap().0, Exit::Signal);
}

/// A panic on an event loop ends the process with status 70 (systemd then
/// starts another). The test runs itself as a child process for that.
#[test]
fn a_loop_panic_ends_the_process() {
    const CHILD: &str = "NIX_SERVE_SD_ENGINE_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let e = start();
        println!("listening {}", e.addr);
        io::stdout().flush().unwrap();
        thread::sleep(LIMIT);
        std::process::exit(0);
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_loop_panic_ends_the_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let addr: SocketAddr = loop {
        let mut b = [0u8; 1];
        assert_eq!(out.read(&mut b).unwrap(), 1, "the child ended: {seen:?}");
        seen.push(b[0]);
        // The harness prints the test's name on the same line first.
        let text = String::from_utf8_lossy(&seen);
        if let Some((_, rest)) = text.split_once("listening ") {
            if let Some((addr, _)) = rest.split_once('\n') {
                break addr.trim().parse().unwrap();
            }
        }
    };
    let mut s = connect(addr);
    s.write_all(&Request::get("/fast-panic").bytes()).unwrap();
    let status = wait_exit(&mut child, LIMIT).expect("the child exits");
    assert_eq!(status.code(), Some(70));
}
