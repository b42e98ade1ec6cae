//! The HTTP server in process, over real sockets, against an in-memory store:
//! routes, statuses, headers, HEAD, ranges, bad input, limits, the activity
//! count the idle exit relies on. Needs no Nix, so it always runs.

mod responder_http_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use nix_serve_sd::nix::hash::Sha256;
use nix_serve_sd::nix::signing::SecretKey;
use nix_serve_sd::nix::store_path::StoreDir;

use responder_http_support::*;

#[test]
fn cache_info_and_narinfo() {
    let h = start(2, vec![], limits());
    let r = get(h.addr, "/nix-cache-info");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"
    );
    assert_eq!(r.header("Content-Type"), Some("text/x-nix-cache-info"));

    let r = get(h.addr, &format!("/{HELLO}.narinfo"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/x-nix-narinfo"));
    assert!(r.header("Cache-Control").unwrap().starts_with("public"));
    let text = String::from_utf8(r.body).unwrap();
    let nar32 = h.hello.nar_hash.to_nix32();
    assert_eq!(
        text,
        format!(
            "StorePath: /nix/store/{HELLO}-hello.txt\nURL: nar/{HELLO}-{nar32}.nar\n\
             Compression: none\nNarHash: sha256:{nar32}\nNarSize: 12\nSig: old-key:c2ln\n"
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
fn narinfo_signed_with_our_keys_only() {
    let key = SecretKey::parse(SECRET).unwrap();
    let public = key.public_key();
    let h = start(1, vec![key], limits());
    let text = String::from_utf8(get(h.addr, &format!("/{HELLO}.narinfo")).body).unwrap();
    let sigs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Sig: "))
        .collect();
    assert_eq!(sigs.len(), 1, "{text}");
    assert!(
        public.verify(&h.hello.fingerprint(&StoreDir::default()), sigs[0]),
        "{text}"
    );
}

#[test]
fn nar_urls_ranges_and_head() {
    let h = start(2, vec![], limits());
    let nar32 = Sha256::digest(&h.big).to_nix32();
    for target in [
        format!("/nar/{BIG}-{nar32}.nar"),
        format!("/nar/{BIG}.nar"),
        format!("/nar/{nar32}.nar?hash={BIG}"),
    ] {
        let r = get(h.addr, &target);
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(r.body, h.big, "{target}");
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
        get(h.addr, &format!("/nar/{BIG}-{nar32}.nar")).header("Cache-Control"),
        Some("public, max-age=31536000, immutable")
    );

    let stale = Sha256::digest(b"other").to_nix32();
    let r = get(h.addr, &format!("/nar/{BIG}-{stale}.nar"));
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body,
        b"Incorrect NAR hash. Maybe the path has been recreated.\n"
    );

    let ranged = |range: &str| {
        send(
            h.addr,
            format!("GET /nar/{BIG}.nar HTTP/1.1\r\nRange: {range}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    let total = h.big.len();
    let r = ranged("bytes=1000-");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &h.big[1000..]);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 1000-{}/{total}", total - 1).as_str())
    );
    let r = ranged("bytes=5-9");
    assert_eq!((r.status, r.body.as_slice()), (206, &h.big[5..10]));
    let r = ranged("bytes=-3");
    assert_eq!((r.status, r.body.as_slice()), (206, &h.big[total - 3..]));
    let r = ranged(&format!("bytes={total}-"));
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes */{total}").as_str())
    );
}

#[test]
fn head_on_every_route() {
    let h = start(2, vec![], limits());
    for target in [
        "/nix-cache-info".to_owned(),
        format!("/{HELLO}.narinfo"),
        format!("/{ABSENT}.narinfo"),
        format!("/nar/{HELLO}.nar"),
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
fn bad_input_gets_its_status_and_the_server_goes_on() {
    let h = start(2, vec![], limits());
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 404),
        (b"GET /index.html HTTP/1.1\r\n\r\n".to_vec(), 404),
        (b"GET /../../etc/passwd HTTP/1.1\r\n\r\n".to_vec(), 404),
        (
            b"GET /nar/../../../etc/passwd.nar HTTP/1.1\r\n\r\n".to_vec(),
            404,
        ),
        (
            format!("GET /%2e%2e/{}.narinfo HTTP/1.1\r\n\r\n", HELLO).into_bytes(),
            404,
        ),
        (
            format!("GET /{}%41.narinfo HTTP/1.1\r\n\r\n", &HELLO[3..]).into_bytes(),
            400,
        ),
        (
            b"GET /e0000000000000000000000000000000.narinfo HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (b"GET /short.narinfo HTTP/1.1\r\n\r\n".to_vec(), 400),
        (b"GET /nar/zzz.nar HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(10_000)).into_bytes(),
            414,
        ),
        (
            format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(20_000)).into_bytes(),
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
            format!("{method} /nix-cache-info HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").as_bytes(),
        );
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    }
    assert_alive(h.addr);
}

#[test]
fn store_trouble_is_5xx_and_the_connection_is_reopened() {
    let h = start(1, vec![], limits());
    assert_alive(h.addr);
    let before = h.opens.load(Ordering::SeqCst);
    let r = get(h.addr, &format!("/{DOWN}.narinfo"));
    assert_eq!(r.status, 503);
    assert_eq!(r.body, b"Store unavailable.\n", "no internals in the body");
    assert_alive(h.addr);
    assert_eq!(
        h.opens.load(Ordering::SeqCst),
        before + 1,
        "a fresh store connection after 503"
    );
}

#[test]
fn short_nar_aborts_the_connection() {
    let h = start(1, vec![], limits());
    let mut s = TcpStream::connect(h.addr).unwrap();
    s.write_all(format!("GET /nar/{SHORT}.nar HTTP/1.1\r\n\r\n").as_bytes())
        .unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(String::from_utf8_lossy(&all[..head_end]).contains("Content-Length: 100000"));
    assert!(
        all.len() - head_end < 100_000,
        "the connection must end short, never pad"
    );
    assert_alive(h.addr);
}

#[test]
fn client_disconnecting_mid_nar() {
    let h = start(1, vec![], limits());
    for _ in 0..3 {
        let mut s = TcpStream::connect(h.addr).unwrap();
        s.write_all(format!("GET /nar/{BIG}.nar HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        let mut some = [0u8; 1000];
        s.read_exact(&mut some).unwrap();
        drop(s);
    }
    assert_alive(h.addr);
}

#[test]
fn keep_alive_and_pipelining() {
    let h = start(1, vec![], limits());
    let mut s = TcpStream::connect(h.addr).unwrap();
    s.write_all(b"GET /nix-cache-info HTTP/1.1\r\n\r\nHEAD /nix-cache-info HTTP/1.1\r\n\r\n")
        .unwrap();
    let a = read_reply(&mut s, false);
    let b = read_reply(&mut s, true);
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.header("Connection"), Some("keep-alive"));
    s.write_all(format!("GET /{HELLO}.narinfo HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let c = read_reply(&mut s, false);
    assert_eq!((c.status, c.header("Connection")), (200, Some("close")));
}

/// A client dribbling its head one byte at a time holds its worker no
/// longer than the read timeout; then the next client is served.
#[test]
fn slow_client_loses_its_worker() {
    let mut l = limits();
    l.read_timeout = Duration::from_secs(1);
    let h = start(1, vec![], l);
    let mut slow = TcpStream::connect(h.addr).unwrap();
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
    // Served although the only worker was first taken by the slow client.
    thread::sleep(Duration::from_millis(200));
    assert_alive(h.addr);
    let got = dribble.join().unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn activity_counts_connections_and_stopping_accept_loses_nothing() {
    let mut h = start(2, vec![], limits());
    assert_alive(h.addr);
    let server = h.server.as_mut().unwrap();
    // Closed connections are counted once the worker lets go of them.
    let mut open = TcpStream::connect(h.addr).unwrap();
    open.write_all(b"GET /nix-cache-info HTTP/1.1\r\n\r\n")
        .unwrap();
    let _ = read_reply(&mut open, false);
    assert!(
        server.activity().idle_for().is_none(),
        "a keep-alive connection is open"
    );
    drop(open);
    while server.activity().idle_for().is_none() {
        thread::sleep(Duration::from_millis(20));
    }

    // Not accepting: a client connecting now waits in the backlog...
    server.stop_accepting();
    let mut waiting = TcpStream::connect(h.addr).unwrap();
    waiting
        .write_all(b"GET /nix-cache-info HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    assert!(
        server.activity().idle_for().is_some(),
        "nothing was accepted"
    );
    // ...and is answered in full once someone accepts again.
    server.resume_accepting().unwrap();
    let r = read_reply(&mut waiting, false);
    assert_eq!(r.status, 200);

    let server = h.server.take().unwrap();
    assert!(server.drain(Duration::from_secs(10)));
}

#[test]
fn a_panicking_handler_costs_one_connection_not_the_worker() {
    let h = start(1, vec![], limits());
    let mut s = TcpStream::connect(h.addr).unwrap();
    s.write_all(format!("GET /{PANIC}.narinfo HTTP/1.1\r\n\r\n").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // The only worker still serves, and the connection is no longer counted.
    assert_alive(h.addr);
    let server = h.server.as_ref().unwrap();
    while server.activity().idle_for().is_none() {
        thread::sleep(Duration::from_millis(20));
    }
}
