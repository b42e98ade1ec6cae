//! The connection core against the built binary and the real store: what
//! RFC 9110/9112 ask of a request head, and that no client, however slow,
//! idle or hostile, can keep the others from being served (issue:
//! connection core). Bounds here are time-outs that keep a broken server
//! from hanging the run, never speed assertions.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::binary::{start_on_any_port, wait_log, Running};
use common::http::{connect, get, read_head, read_reply, send_raw, status_of, Request};
use common::sockets::{wait_accepted, wait_accepted_and_read, wait_no_connection};
use common::{hash_part, Fixtures};

fn serve(args: &[&str]) -> (Running, SocketAddr) {
    let (running, addr, _) = start_on_any_port(args);
    (running, addr)
}

/// `GET target` for a connection that stays open.
fn kept(target: &str) -> Vec<u8> {
    Request::get(target).keep_alive().bytes()
}

/// A request head sent in one write gets `status`; errors close.
fn head_case(raw: &[u8], status: u16) {
    let _fx = Fixtures::load();
    let (_server, addr) = serve(&[]);
    let got = send_raw(addr, raw);
    assert_eq!(
        status_of(&got),
        status,
        "{:?} got {:?}",
        String::from_utf8_lossy(raw),
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    // The server goes on serving.
    assert_eq!(get(addr, "/nix-cache-info").status, 200);
}

macro_rules! head_cases {
    ($($name:ident: $raw:expr => $status:expr;)*) => {$(
        #[test]
        #[ignore = "needs real Nix and fixtures: run scripts/test"]
        fn $name() {
            head_case($raw, $status);
        }
    )*};
}

head_cases! {
    bare_cr_in_a_header_value_is_400:
        b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n" => 400;
    nul_in_a_header_value_is_400:
        b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n" => 400;
    obs_fold_is_400:
        b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n" => 400;
    invalid_content_length_is_400:
        b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n" => 400;
    doubled_content_length_is_400:
        b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n" => 400;
    content_length_with_transfer_encoding_is_400:
        b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" => 400;
    missing_host_is_400:
        b"GET /nix-cache-info HTTP/1.1\r\n\r\n" => 400;
    doubled_host_is_400:
        b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n" => 400;
    unknown_transfer_encoding_is_501:
        b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" => 501;
    http_2_0_is_505:
        b"GET /nix-cache-info HTTP/2.0\r\nHost: x\r\n\r\n" => 505;
    http2_preface_is_505:
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" => 505;
    leading_blank_line_is_served:
        b"\r\nGET /nix-cache-info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" => 200;
    http_1_2_is_served_as_1_1:
        b"GET /nix-cache-info HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n" => 200;
    obs_text_in_a_header_value_is_served:
        b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nUser-Agent: caf\xe9\r\nConnection: close\r\n\r\n" => 200;
    absolute_form_with_an_uppercase_scheme_is_served:
        b"GET HTTP://cache.example/nix-cache-info HTTP/1.1\r\nHost: cache.example\r\nConnection: close\r\n\r\n" => 200;
}

/// A TLS ClientHello is answered (400) and closed at once, not after the
/// 10 s head deadline: a client that got the scheme wrong learns it now.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn tls_client_hello_is_refused_at_once() {
    let _fx = Fixtures::load();
    let (_server, addr) = serve(&["--read-timeout", "30"]);
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A ClientHello record header and the start of its body.
    s.write_all(b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03\x00\x01\x02")
        .unwrap();
    let mut got = Vec::new();
    let r = s.read_to_end(&mut got);
    assert!(r.is_ok(), "no answer within 5 s: {r:?}");
    assert_eq!(status_of(&got), 400, "{:?}", String::from_utf8_lossy(&got));
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn hundred_pipelined_requests_in_one_write_are_answered_in_order() {
    let fx = Fixtures::load();
    let (_server, addr) = serve(&[]);
    let hashes = [
        hash_part(fx.path("dep-top")),
        hash_part(fx.path("hello-exe")),
    ];
    let mut raw = Vec::new();
    for i in 0..100 {
        let target = match i % 3 {
            0 => "/nix-cache-info".to_owned(),
            1 => format!("/{}.narinfo", hashes[0]),
            _ => format!("/{}.narinfo", hashes[1]),
        };
        raw.extend_from_slice(&kept(&target));
    }
    let mut s = connect(addr);
    s.write_all(&raw).unwrap();
    for i in 0..100 {
        let r = read_reply(&mut s, false);
        assert_eq!(r.status, 200, "reply {i}");
        let body = String::from_utf8(r.body).unwrap();
        let want = match i % 3 {
            0 => "StoreDir: /nix/store".to_owned(),
            1 => format!("StorePath: {}", fx.path("dep-top")),
            _ => format!("StorePath: {}", fx.path("hello-exe")),
        };
        assert!(body.starts_with(&want), "reply {i} out of order: {body}");
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_request_in_one_byte_writes_is_served() {
    let _fx = Fixtures::load();
    let (_server, addr) = serve(&[]);
    let mut s = connect(addr);
    s.set_nodelay(true).unwrap();
    for b in Request::get("/nix-cache-info").bytes() {
        s.write_all(&[b]).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    let r = read_reply(&mut s, false);
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with(b"StoreDir: "));
}

/// Two clients that ask for a NAR and never read it, with two workers:
/// a third client is still served (it waited for ever before).
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn clients_that_never_read_do_not_starve_others() {
    let fx = Fixtures::load();
    let (_server, addr) = serve(&["--workers", "2"]);
    let big = hash_part(fx.path("big-10M"));
    let stuck: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(&kept(&format!("/nar/{big}.nar"))).unwrap();
            s
        })
        .collect();
    // Each NAR under way: its head came (a few bytes of its 10 MiB).
    for mut s in &stuck {
        assert_eq!(read_head(&mut s).status, 200);
    }
    for _ in 0..20 {
        assert_eq!(get(addr, "/nix-cache-info").status, 200);
    }
    drop(stuck);
}

/// Idle keep-alive connections and heads sent a byte at a time cost no
/// worker: with one worker, a new client is served while 30 of each wait.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn idle_and_slowloris_connections_hold_no_worker() {
    let fx = Fixtures::load();
    let (_server, addr) = serve(&["--workers", "1", "--keepalive-timeout", "30"]);
    let hash = hash_part(fx.path("dep-top"));
    let mut idle = Vec::new();
    for _ in 0..30 {
        let mut s = connect(addr);
        s.write_all(&kept("/nix-cache-info")).unwrap();
        assert_eq!(read_reply(&mut s, false).status, 200);
        idle.push(s);
    }
    let mut slow: Vec<TcpStream> = (0..30).map(|_| connect(addr)).collect();
    let head = kept(&format!("/{hash}.narinfo"));
    for b in head.iter().take(10) {
        for s in &mut slow {
            s.write_all(&[*b]).unwrap();
        }
        assert_eq!(get(addr, &format!("/{hash}.narinfo")).status, 200);
    }
    // The idle ones are still usable.
    for s in &mut idle {
        s.write_all(&kept("/nix-cache-info")).unwrap();
        assert_eq!(read_reply(s, false).status, 200);
    }
}

/// A reader slower than the minimum rate (`--timeout` window) is cut: the
/// body it gets is short, never complete, and the server goes on.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_reader_below_the_minimum_rate_is_cut() {
    let fx = Fixtures::load();
    let (_server, addr) = serve(&["--timeout", "2"]);
    let big = hash_part(fx.path("big-10M"));
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&kept(&format!("/nar/{big}.nar"))).unwrap();
    // About 500 bytes a second for 8 s (four windows of 2 s): below 1 KiB/s.
    let mut got = 0usize;
    let mut buf = vec![0u8; 256];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        thread::sleep(Duration::from_millis(500));
    }
    // Then as fast as it comes: a cut connection ends (reset or EOF) once
    // what the kernels held is read; one that was not cut yields the NAR.
    buf.resize(64 * 1024, 0);
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    assert!(
        got < 10 << 20,
        "the whole NAR went to a 500 B/s reader ({got} bytes)"
    );
    assert_eq!(get(addr, "/nix-cache-info").status, 200);
}

/// SIGTERM with many requests received and not yet answered (one worker,
/// 60 connections that each sent a head): every one gets its whole reply.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn sigterm_answers_every_request_already_received() {
    let fx = Fixtures::load();
    let (server, addr) = serve(&["--workers", "1"]);
    let hash = hash_part(fx.path("many-files"));
    let mut conns: Vec<TcpStream> = (0..60)
        .map(|i| {
            let mut s = connect(addr);
            let target = if i % 2 == 0 {
                format!("/{hash}.narinfo")
            } else {
                format!("/nar/{hash}.nar")
            };
            s.write_all(&kept(&target)).unwrap();
            s
        })
        .collect();
    // Every request received: accepted, and its bytes read.
    wait_accepted_and_read(addr, 60);
    server.signal_term();
    let want_nar = common::nix_store_dump(fx.path("many-files"));
    for (i, s) in conns.iter_mut().enumerate() {
        let r = read_reply(s, false);
        assert_eq!(r.status, 200, "connection {i}: {}", r.head);
        if i % 2 == 1 {
            assert!(r.body == want_nar, "connection {i}: NAR differs");
        }
    }
    let mut server = server;
    let st = common::binary::wait_exit(&mut server.child, Duration::from_secs(40));
    assert!(st.expect("exits after SIGTERM").success());
}

/// SIGTERM with hundreds of connections open that sent nothing: they are
/// closed at once and the process exits 0 well within the drain bound.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn sigterm_with_many_silent_connections_exits_within_the_bound() {
    let _fx = Fixtures::load();
    let (server, addr) = serve(&["--workers", "1"]);
    let conns: Vec<TcpStream> = (0..300).map(|_| connect(addr)).collect();
    wait_accepted_and_read(addr, 300);
    server.signal_term();
    let mut server = server;
    let st = common::binary::wait_exit(&mut server.child, Duration::from_secs(35));
    assert!(st.expect("exits within the 30 s bound").success());
    drop(conns);
}

/// Raises this test process's soft descriptor limit to the hard one: the
/// scenario below holds over 1,500 sockets.
fn raise_own_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    l.current = l.maximum;
    setrlimit(Resource::Nofile, l).unwrap();
}

/// A field of /proc/PID/status, in kB or a count.
fn proc_status(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Worker threads start when load needs them: a server asked one request
/// at a time runs the main thread, its event loops, the log thread and one
/// worker, however many `--workers` it may start (growth under concurrent
/// requests is tests/faults.rs, a stopped daemon holding one worker while
/// another answers).
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn one_request_at_a_time_needs_one_worker_thread() {
    let fx = Fixtures::load();
    let (server, addr) = serve(&["--workers", "8", "--event-loops", "2"]);
    let hash = hash_part(fx.path("dep-top"));
    for _ in 0..50 {
        assert_eq!(get(addr, &format!("/{hash}.narinfo")).status, 200);
    }
    let threads = proc_status(server.child.id(), "Threads");
    assert_eq!(threads, 5, "threads after 50 requests one after the other");
}

/// The scenario of the issue (also in bench/run, with figures): 1,000 idle
/// keep-alive connections, 500 heads sent a byte a second, 64 clients each
/// reading a 10 MiB NAR at 64 KiB/s, all at once. Meanwhile fresh clients
/// are served, the server's threads stay at workers + a small constant and
/// its peak RSS under 64 MiB.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn idle_slowloris_and_slow_readers_at_once() {
    raise_own_nofile();
    let fx = Fixtures::load();
    let (server, addr) = serve(&[
        "--workers",
        "4",
        "--event-loops",
        "2",
        "--keepalive-timeout",
        "60",
    ]);
    let pid = server.child.id();
    let hash = hash_part(fx.path("dep-top"));
    let big = hash_part(fx.path("big-10M"));
    let mut idle = Vec::new();
    for _ in 0..1000 {
        let mut s = connect(addr);
        s.write_all(&kept("/nix-cache-info")).unwrap();
        assert_eq!(read_reply(&mut s, false).status, 200);
        idle.push(s);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slowloris = {
        let stop = stop.clone();
        let mut socks: Vec<TcpStream> = (0..500).map(|_| connect(addr)).collect();
        thread::spawn(move || {
            let head = b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            for b in head.iter().cycle() {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                for s in &mut socks {
                    let _ = s.write_all(&[*b]);
                }
                thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let readers: Vec<_> = (0..64)
        .map(|_| {
            let stop = stop.clone();
            let mut s = connect(addr);
            s.write_all(&kept(&format!("/nar/{big}.nar"))).unwrap();
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    if s.read_exact(&mut buf).is_err() {
                        return false;
                    }
                    thread::sleep(Duration::from_secs(1));
                }
                true
            })
        })
        .collect();
    // All of it in place: every connection accepted.
    wait_accepted(addr, 1000 + 500 + 64);
    for _ in 0..200 {
        let r = get(addr, &format!("/{hash}.narinfo"));
        assert_eq!(r.status, 200);
    }
    let threads = proc_status(pid, "Threads");
    let peak_kb = proc_status(pid, "VmHWM");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    slowloris.join().unwrap();
    for r in readers {
        assert!(r.join().unwrap(), "a slow reader was cut at 64 KiB/s");
    }
    eprintln!("threads {threads}, peak RSS {peak_kb} kB");
    // main, the event loops (one per core, 2 here), the log thread, 4
    // workers, the signal thread, and the body threads: as many as loops,
    // one more at most (they send and never wait for a disk here).
    assert!(
        threads <= 1 + 2 + 1 + 4 + 1 + 3,
        "{threads} threads for 4 workers"
    );
    assert!(peak_kb <= 64 * 1024, "peak RSS {peak_kb} kB");
    drop(idle);
}

/// A client that resets its connection right after a small reply costs
/// nothing at the store: the worker's daemon connection is never touched
/// by a socket error (it cost a new daemon connection, a fork of the
/// daemon, per request before).
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn client_resets_cost_no_daemon_connection() {
    let fx = Fixtures::load();
    let h = common::in_process::start(
        common::in_process::opener("daemon"),
        2,
        vec![],
        common::in_process::limits(),
    );
    let hash = hash_part(fx.path("dep-top"));
    for _ in 0..300 {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.connect(&h.addr.into()).unwrap();
        // Close with a reset, not a FIN.
        sock.set_linger(Some(Duration::ZERO)).unwrap();
        let mut s: TcpStream = sock.into();
        s.write_all(&kept(&format!("/{hash}.narinfo"))).unwrap();
        let r = read_head(&mut s);
        assert!(r.head.starts_with("HTTP/1.1 200 "), "{}", r.head);
    }
    let opens = h.opens.load(std::sync::atomic::Ordering::SeqCst);
    assert!(opens <= 2, "{opens} store connections for 2 workers");
}

/// With few descriptors (`prlimit --nofile=128`), clients past the limit
/// are refused with a 503 and a close; requests in flight never fail, and
/// the server serves again once clients leave.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn past_the_descriptor_limit_clients_are_refused_cleanly() {
    let fx = Fixtures::load();
    let (_server, addr, _) = common::binary::start_on_any_port_wrapped(
        &["prlimit", "--nofile=128:128"],
        &["--workers", "1"],
    );
    let hash = hash_part(fx.path("dep-top"));
    let mut conns = Vec::new();
    let (mut ok, mut busy) = (0, 0);
    for _ in 0..200 {
        let mut s = connect(addr);
        let _ = s.write_all(&kept(&format!("/{hash}.narinfo")));
        match read_reply(&mut s, false).status {
            200 => ok += 1,
            503 => busy += 1,
            other => panic!("status {other}"),
        }
        conns.push(s);
    }
    assert!(ok >= 20 && busy >= 1, "{ok} served, {busy} refused");
    drop(conns);
    // Their descriptors given back: the server closed each in turn.
    wait_no_connection(addr);
    assert_eq!(get(addr, &format!("/{hash}.narinfo")).status, 200);
}

/// A close we start (`Connection: close`) with the client's next bytes
/// still unread lingers instead of resetting: the whole reply arrives.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_close_with_unread_pipelined_bytes_still_delivers_the_reply() {
    let fx = Fixtures::load();
    let (_server, addr) = serve(&[]);
    let big = hash_part(fx.path("big-10M"));
    let mut s = connect(addr);
    let mut raw = Request::get(&format!("/nar/{big}.nar")).bytes();
    for _ in 0..500 {
        raw.extend_from_slice(&kept("/nix-cache-info"));
    }
    s.write_all(&raw).unwrap();
    // A slow reader at first (it paces the client, it waits for nothing):
    // the close comes while the bytes are unread.
    thread::sleep(Duration::from_millis(300));
    let r = read_reply(&mut s, false);
    assert_eq!(r.status, 200);
    assert!(r.body == common::nix_store_dump(fx.path("big-10M")));
    let mut rest = Vec::new();
    assert!(s.read_to_end(&mut rest).is_ok(), "reset after the reply");
    assert!(
        rest.is_empty(),
        "{} bytes after Connection: close",
        rest.len()
    );
}

/// SIGTERM right after clients connected but before they sent their
/// request (a `systemctl restart` under load): each is still answered. A
/// connection that never carried a request is not an idle keep-alive one.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn sigterm_answers_connections_accepted_before_their_request() {
    let fx = Fixtures::load();
    let (server, addr, log) = start_on_any_port(&["--workers", "1"]);
    let hash = hash_part(fx.path("dep-top"));
    let mut conns: Vec<TcpStream> = (0..20).map(|_| connect(addr)).collect();
    wait_accepted_and_read(addr, 20);
    server.signal_term();
    wait_log(&log, "the drain to begin", |l| {
        l.contains("Stopping: finishing requests in flight")
    });
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(&kept(&format!("/{hash}.narinfo"))).unwrap();
        let r = read_reply(s, false);
        assert_eq!(r.status, 200, "connection {i}");
        assert_eq!(r.header("Connection"), Some("close"), "{}", r.head);
    }
    let mut server = server;
    let st = common::binary::wait_exit(&mut server.child, Duration::from_secs(40));
    assert!(st.expect("exits after SIGTERM").success());
}
