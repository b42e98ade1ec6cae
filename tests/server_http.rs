//! The HTTP server in process, over real sockets, wired as `main` wires it,
//! on real stores: chroot stores real Nix makes per test, and a test
//! nix-daemon that is killed and restarted. Routes, statuses, headers, HEAD,
//! ranges, bad input, limits, store trouble, the activity count the idle exit
//! relies on. Oracles: `nix-store -q`, `nix-store --dump`, `nix path-info`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use nix_serve_sd::nix::hash::Sha256;
use nix_serve_sd::nix::signing::SecretKey;
use nix_serve_sd::nix::store_path::StoreDir;

use common::http::{connect, get, head, read_head, read_reply, send, Request, LIMIT};
use common::in_process::*;
use common::sockets::wait_waiting;
use common::{hash_part, nix_path_info, wait_until, ChrootStore, Fixtures, TestDaemon, ABSENT};

/// A chroot store holding `hello.txt`, signed with the fixtures' wrong key
/// (a signature stored in the database, served when we have no key).
fn hello_store(fx: &Fixtures) -> (ChrootStore, String) {
    let store = ChrootStore::new("http-hello");
    let hello = store.add("hello.txt", b"Hello, world!\n");
    store.sign(&hello, &fx.key("wrong.secret"));
    (store, hello)
}

/// More than one copy buffer, not a multiple of 8 (NAR padding).
fn big_contents() -> Vec<u8> {
    (0..3_000_001u32).map(|i| (i % 251) as u8).collect()
}

/// A chroot store holding `big.bin`; its path and Nix's NAR of it.
fn big_store() -> (ChrootStore, String, Vec<u8>) {
    let store = ChrootStore::new("http-big");
    let big = store.add("big.bin", &big_contents());
    let nar = store.dump(&big);
    (store, big, nar)
}

/// The nix32 NAR hash Nix recorded for `path` (`nix-store -q --hash`).
fn nar32(store: &ChrootStore, path: &str) -> String {
    let h = store.query("--hash", path);
    h.strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{h}"))
        .to_owned()
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn cache_info_and_narinfo() {
    let fx = Fixtures::load();
    let (store, hello) = hello_store(&fx);
    let h = start(opener(&store.uri()), 2, vec![], limits());
    let r = get(h.addr, "/nix-cache-info");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"
    );
    assert_eq!(r.header("Content-Type"), Some("text/x-nix-cache-info"));

    let hash = hash_part(&hello);
    let r = get(h.addr, &format!("/{hash}.narinfo"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/x-nix-narinfo"));
    assert!(r.header("Cache-Control").unwrap().starts_with("public"));
    let text = String::from_utf8(r.body).unwrap();
    // What Nix says of the path, in nix-serve's order plus `CA:`.
    let nar32 = nar32(&store, &hello);
    let size = store.query("--size", &hello);
    let nix = nix_path_info(Some(store.root()), &hello);
    assert_eq!(nix.sigs.len(), 1, "{:?}", nix.sigs);
    assert!(nix.sigs[0].starts_with("wrong-key-1:"), "{:?}", nix.sigs);
    let (sig, ca) = (&nix.sigs[0], nix.ca.as_deref().unwrap());
    assert_eq!(
        text,
        format!(
            "StorePath: {hello}\nURL: nar/{hash}-{nar32}.nar\n\
             Compression: none\nNarHash: sha256:{nar32}\nNarSize: {size}\nSig: {sig}\nCA: {ca}\n"
        )
    );

    let r = get(h.addr, &format!("/{ABSENT}.narinfo"));
    assert_eq!(
        (r.status, r.body.as_slice()),
        (404, &b"No such path.\n"[..])
    );
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn narinfo_signed_with_our_keys_and_the_stores() {
    let fx = Fixtures::load();
    let (store, hello) = hello_store(&fx);
    // The signature Nix makes with our key, from a second store holding the
    // same (content-addressed) path.
    let oracle = ChrootStore::new("http-oracle");
    assert_eq!(oracle.add("hello.txt", b"Hello, world!\n"), hello);
    oracle.sign(&hello, &fx.key("secret"));
    let nix_sig = nix_path_info(Some(oracle.root()), &hello).sigs;
    let stored = nix_path_info(Some(store.root()), &hello).sigs;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].starts_with("wrong-key-1:"), "{stored:?}");

    let key = SecretKey::from_file(&fx.key("secret")).unwrap();
    let public = key.public_key();
    let h = start(opener(&store.uri()), 1, vec![key], limits());
    let text =
        String::from_utf8(get(h.addr, &format!("/{}.narinfo", hash_part(&hello))).body).unwrap();
    let sigs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Sig: "))
        .collect();
    assert_eq!(
        sigs,
        [nix_sig[0].as_str(), stored[0].as_str()],
        "ours first, then the stored one under another key name"
    );
    let info = nix_path_info(Some(store.root()), &hello);
    assert!(
        public.verify(&info.fingerprint(&StoreDir::default()), sigs[0]),
        "{text}"
    );
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn nar_urls_ranges_and_head() {
    let _fx = Fixtures::load();
    let (store, big_path, big) = big_store();
    let h = start(opener(&store.uri()), 2, vec![], limits());
    let big_hash = hash_part(&big_path);
    let nar32 = nar32(&store, &big_path);
    for target in [
        format!("/nar/{big_hash}-{nar32}.nar"),
        format!("/nar/{big_hash}.nar"),
        format!("/nar/{nar32}.nar?hash={big_hash}"),
    ] {
        let r = get(h.addr, &target);
        assert_eq!(r.status, 200, "{target}");
        assert!(r.body == big, "{target}: not the bytes of nix-store --dump");
        assert_eq!(r.header("Content-Type"), Some("application/x-nix-nar"));
        assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
        let hd = head(h.addr, &target);
        assert_eq!(hd.status, 200);
        assert_eq!(
            hd.headers
                .iter()
                .filter(|(n, _)| n != "Date")
                .collect::<Vec<_>>(),
            r.headers
                .iter()
                .filter(|(n, _)| n != "Date")
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(
        get(h.addr, &format!("/nar/{big_hash}-{nar32}.nar")).header("Cache-Control"),
        Some("public, max-age=31536000, immutable")
    );

    let stale = Sha256::digest(b"other").to_nix32();
    let r = get(h.addr, &format!("/nar/{big_hash}-{stale}.nar"));
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body,
        b"Incorrect NAR hash. Maybe the path has been recreated.\n"
    );

    let ranged = |range: &str| {
        (Request::get(&format!("/nar/{big_hash}.nar")))
            .header("Range", range)
            .send(h.addr)
    };
    let total = big.len();
    let r = ranged("bytes=1000-");
    assert_eq!(r.status, 206);
    assert!(r.body == big[1000..]);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 1000-{}/{total}", total - 1).as_str())
    );
    let r = ranged("bytes=5-9");
    assert_eq!((r.status, r.body.as_slice()), (206, &big[5..10]));
    let r = ranged("bytes=-3");
    assert_eq!((r.status, r.body.as_slice()), (206, &big[total - 3..]));
    let r = ranged(&format!("bytes={total}-"));
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes */{total}").as_str())
    );
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn head_on_every_route() {
    let fx = Fixtures::load();
    let (store, hello) = hello_store(&fx);
    let h = start(opener(&store.uri()), 2, vec![], limits());
    let hash = hash_part(&hello);
    for target in [
        "/nix-cache-info".to_owned(),
        format!("/{hash}.narinfo"),
        format!("/{ABSENT}.narinfo"),
        format!("/nar/{hash}.nar"),
        format!("/nar/{ABSENT}.nar"),
        "/nope".to_owned(),
        "/bad.narinfo".to_owned(),
    ] {
        let g = get(h.addr, &target);
        let hd = head(h.addr, &target);
        assert_eq!(g.status, hd.status, "{target}");
        assert_eq!(
            g.header("Content-Length"),
            hd.header("Content-Length"),
            "{target}"
        );
        assert_eq!(
            g.header("Content-Type"),
            hd.header("Content-Type"),
            "{target}"
        );
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn bad_input_gets_its_status_and_the_server_goes_on() {
    let fx = Fixtures::load();
    let (store, hello) = hello_store(&fx);
    let h = start(opener(&store.uri()), 2, vec![], limits());
    let hash = hash_part(&hello);
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 404),
        (b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 404),
        (
            b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            404,
        ),
        (
            b"GET /nar/../../../etc/passwd.nar HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            404,
        ),
        (
            format!("GET /%2e%2e/{hash}.narinfo HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            404,
        ),
        (
            format!("GET /{}%41.narinfo HTTP/1.1\r\nHost: x\r\n\r\n", &hash[3..]).into_bytes(),
            400,
        ),
        (
            b"GET /e0000000000000000000000000000000.narinfo HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"GET /short.narinfo HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"GET /nar/zzz.nar HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(10_000)).into_bytes(),
            414,
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "b".repeat(20_000)
            )
            .into_bytes(),
            431,
        ),
        (b"GET / HTTP/2.0\r\n\r\n".to_vec(), 505),
        (b"BLAH\r\n\r\n".to_vec(), 400),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (raw, status) in cases {
        let r = send(h.addr, &raw);
        assert_eq!(
            r.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(60)])
        );
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
        assert_alive(h.addr);
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "TRACE"] {
        let r = send(
            h.addr,
            format!("{method} /nix-cache-info HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
                .as_bytes(),
        );
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    }
    assert_alive(h.addr);
}

/// A daemon that goes away is a 503 (a 404 would be cached by clients), the
/// worker drops its connection, and a fresh one serves once the daemon is back.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn store_trouble_is_5xx_and_the_connection_is_reopened() {
    let fx = Fixtures::load();
    let mut daemon = TestDaemon::start();
    let uri = format!("unix://{}", daemon.socket().display());
    let h = start(opener(&uri), 1, vec![], limits());
    let top = fx.path("dep-top");
    let narinfo = format!("/{}.narinfo", hash_part(top));
    assert_eq!(get(h.addr, &narinfo).status, 200, "served by the daemon");

    daemon.kill();
    assert_alive(h.addr);
    let before = h.opens.load(Ordering::SeqCst);
    // A path not asked for yet: the one above may be answered from the
    // worker's narinfo cache for up to `STALE_BOUND` (README "Caching").
    let mid = fx.path("dep-mid");
    let r = get(h.addr, &format!("/{}.narinfo", hash_part(mid)));
    assert_eq!(r.status, 503);
    assert_eq!(r.body, b"Store unavailable.\n", "no internals in the body");
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    assert_alive(h.addr);
    assert_eq!(
        h.opens.load(Ordering::SeqCst),
        before + 1,
        "a fresh store connection after 503"
    );

    daemon.spawn();
    let r = get(h.addr, &narinfo);
    assert_eq!(r.status, 200, "served again once the daemon is back");
    assert!(
        String::from_utf8(r.body)
            .unwrap()
            .starts_with(&format!("StorePath: {top}\n")),
        "{top}"
    );
}

/// The files of a path change size behind Nix's back after the head (with
/// its Content-Length) has gone: the connection is cut short, never padded or
/// filled with other bytes.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn short_nar_aborts_the_connection() {
    let _fx = Fixtures::load();
    // Bigger than twice what the kernel can hold between the server's file
    // reads and our reads, so the server is still reading when we cut.
    let contents: Vec<u8> = (0..2 * in_flight_bound() + 3)
        .map(|i| (i % 253) as u8)
        .collect();
    let store = ChrootStore::new("http-short");
    let path = store.add("short.bin", &contents);
    let nar = store.dump(&path);
    let h = start(opener(&store.uri()), 1, vec![], limits());

    let mut s = connect_small_buffer(h.addr);
    let nar_url = format!("/nar/{}.nar", hash_part(&path));
    s.write_all(&Request::get(&nar_url).keep_alive().bytes())
        .unwrap();
    let reply = read_head(&mut s);
    assert_eq!(reply.content_length(), Some(nar.len()), "{}", reply.head);
    // The head is out, so the NAR was planned at its full size: now shrink
    // the file to half.
    let file = store.writable_file(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(contents.len() as u64 / 2)
        .unwrap();
    let mut body = Vec::new();
    let _ = s.read_to_end(&mut body);
    assert!(
        body.len() < nar.len(),
        "the connection must end short, never pad"
    );
    assert!(body == nar[..body.len()], "bytes other than the NAR's");
    assert_alive(h.addr);
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn client_disconnecting_mid_nar() {
    let _fx = Fixtures::load();
    let (store, big_path, _) = big_store();
    let h = start(opener(&store.uri()), 1, vec![], limits());
    for _ in 0..3 {
        let mut s = connect(h.addr);
        let nar_url = format!("/nar/{}.nar", hash_part(&big_path));
        s.write_all(&Request::get(&nar_url).keep_alive().bytes())
            .unwrap();
        let mut some = [0u8; 1000];
        s.read_exact(&mut some).unwrap();
        drop(s);
    }
    assert_alive(h.addr);
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn keep_alive_and_pipelining() {
    let fx = Fixtures::load();
    let (store, hello) = hello_store(&fx);
    let h = start(opener(&store.uri()), 1, vec![], limits());
    let mut s = connect(h.addr);
    let mut two = Request::get("/nix-cache-info").keep_alive().bytes();
    two.extend(Request::head("/nix-cache-info").keep_alive().bytes());
    s.write_all(&two).unwrap();
    let a = read_reply(&mut s, false);
    let b = read_reply(&mut s, true);
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.header("Connection"), Some("keep-alive"));
    s.write_all(&Request::get(&format!("/{}.narinfo", hash_part(&hello))).bytes())
        .unwrap();
    let c = read_reply(&mut s, false);
    assert_eq!((c.status, c.header("Connection")), (200, Some("close")));
}

/// A client dribbling its head one byte at a time holds its worker no
/// longer than the read timeout; then the next client is served.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn slow_client_loses_its_worker() {
    let fx = Fixtures::load();
    let (store, _) = hello_store(&fx);
    let mut l = limits();
    l.read_timeout = Duration::from_secs(1);
    let h = start(opener(&store.uri()), 1, vec![], l);
    let mut slow = connect(h.addr);
    let dribble = thread::spawn(move || {
        for b in b"GET /nix-cache-info HTTP/1.1\r\nX: "
            .iter()
            .cycle()
            .take(200)
        {
            if slow.write_all(&[*b]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let mut got = Vec::new();
        let _ = slow.read_to_end(&mut got);
        got
    });
    // Served although the only worker was first taken by the slow client
    // (accepted: the server counts a connection).
    let server = h.server.as_ref().unwrap();
    wait_until("the slow client's connection", LIMIT, || {
        server.activity().idle_for().is_none()
    });
    assert_alive(h.addr);
    let got = dribble.join().unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn activity_counts_connections_and_stopping_accept_loses_nothing() {
    let fx = Fixtures::load();
    let (store, _) = hello_store(&fx);
    let mut h = start(opener(&store.uri()), 2, vec![], limits());
    assert_alive(h.addr);
    let server = h.server.as_mut().unwrap();
    // Closed connections are counted once the worker lets go of them.
    let mut open = connect(h.addr);
    open.write_all(&Request::get("/nix-cache-info").keep_alive().bytes())
        .unwrap();
    let _ = read_reply(&mut open, false);
    assert!(
        server.activity().idle_for().is_none(),
        "a keep-alive connection is open"
    );
    drop(open);
    wait_until("the closed connection to be uncounted", LIMIT, || {
        server.activity().idle_for().is_some()
    });

    // Not accepting: a client connecting now waits in the backlog...
    server.stop_accepting();
    let mut waiting = connect(h.addr);
    waiting
        .write_all(&Request::get("/nix-cache-info").bytes())
        .unwrap();
    wait_waiting(h.addr, 1);
    assert!(
        server.activity().idle_for().is_some(),
        "nothing was accepted"
    );
    // ...and is answered in full once someone accepts again.
    server.resume_accepting();
    let r = read_reply(&mut waiting, false);
    assert_eq!(r.status, 200);

    let server = h.server.take().unwrap();
    assert!(server.drain(std::time::Instant::now() + Duration::from_secs(10)));
}

/// A path whose files vanished behind Nix's back is a 500 and costs the
/// worker its store connection; the next connection it makes panics (the
/// test's doing): that costs one client connection, not the worker.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_panicking_handler_costs_one_connection_not_the_worker() {
    let fx = Fixtures::load();
    let (store, hello) = hello_store(&fx);
    let gone = store.add("gone.txt", b"soon gone\n");
    std::fs::remove_file(store.writable_file(&gone)).unwrap();
    let h = start(opener(&store.uri()), 1, vec![], limits());
    let r = get(h.addr, &format!("/nar/{}.nar", hash_part(&gone)));
    assert_eq!(
        (r.status, r.body.as_slice()),
        (500, &b"Internal error.\n"[..])
    );

    h.panic_next_open.store(true, Ordering::SeqCst);
    let mut s = connect(h.addr);
    s.write_all(
        &(Request::get(&format!("/{}.narinfo", hash_part(&hello))))
            .keep_alive()
            .bytes(),
    )
    .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(!h.panic_next_open.load(Ordering::SeqCst), "it did panic");
    // The only worker still serves, and the connection is no longer counted.
    assert_alive(h.addr);
    let server = h.server.as_ref().unwrap();
    wait_until("the dropped connection to be uncounted", LIMIT, || {
        server.activity().idle_for().is_some()
    });
}

/// What the kernel may hold of one TCP response between the server's writes
/// and a client reading through [`connect_small_buffer`]: the server's
/// largest send buffer (`tcp_wmem`'s maximum), our receive buffer (which
/// the kernel doubles), and a MiB for the server's copy buffers.
fn in_flight_bound() -> usize {
    let wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap();
    let max: usize = wmem.split_whitespace().nth(2).unwrap().parse().unwrap();
    max + 2 * SMALL_RCVBUF + 1024 * 1024
}

const SMALL_RCVBUF: usize = 64 * 1024;

/// A client socket whose receive buffer is fixed small (no autotuning).
fn connect_small_buffer(addr: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(SMALL_RCVBUF).unwrap();
    s.connect(&addr.into()).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.into()
}
