//! README "Scaling past one machine": Debian's nginx with `proxy_cache` in
//! front of the server, configured with the README's own block. A second
//! narinfo request is answered from nginx's cache (our `Cache-Control` allows
//! it), a 404 is never cached (`no-store`), and the NAR comes through intact.

mod common;
#[path = "support/markdown.rs"]
mod markdown;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::binary::free_port;
use common::nginx::{self, wait_for_port, Reaper};
use common::Fixtures;

/// One HTTP/1.0 GET: (status, the header block in lower case, body).
fn get(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete header");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

fn nginx_block(dir: &Path, nginx_port: u16, server_port: u16) -> String {
    let cache = dir.join("cache");
    let block = nginx::readme_block(markdown::fenced_blocks, "proxy_cache_path")
        .replace("/var/cache/nginx/nix-serve", cache.to_str().unwrap())
        .replace("listen 8080;", &format!("listen 127.0.0.1:{nginx_port};"))
        .replace("127.0.0.1:5000", &format!("127.0.0.1:{server_port}"));
    assert!(
        block.contains(&format!("127.0.0.1:{server_port}"))
            && block.contains(&format!(":{nginx_port};")),
        "the README block uses 'listen 8080;' and 127.0.0.1:5000"
    );
    block
}

#[test]
#[ignore = "needs real Nix, fixtures and Debian's nginx: run scripts/test"]
fn nginx_caches_narinfo_but_not_404() {
    let fixtures = Fixtures::load();
    let dir = std::env::temp_dir().join(format!("nssd-proxy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let server_port = free_port();
    let _server = Reaper(
        Command::new(env!("CARGO_BIN_EXE_nix-serve"))
            .args(["--listen", &format!("127.0.0.1:{server_port}")])
            .stdin(Stdio::null())
            .spawn()
            .expect("start nix-serve"),
    );
    wait_for_port(server_port);

    let nginx_port = free_port();
    let _nginx = nginx::start(&dir, &nginx_block(&dir, nginx_port, server_port));
    wait_for_port(nginx_port);

    let path = fixtures.path("dep-top");
    let hash = &path["/nix/store/".len()..][..32];
    let narinfo = format!("/{hash}.narinfo");
    let (s1, h1, b1) = get(nginx_port, &narinfo);
    let (s2, h2, b2) = get(nginx_port, &narinfo);
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(header(&h1, "x-cache-status"), Some("miss"), "{h1}");
    assert_eq!(header(&h2, "x-cache-status"), Some("hit"), "{h2}");
    assert_eq!(b1, b2);
    let (_, _, direct) = get(server_port, &narinfo);
    assert_eq!(b1, direct, "nginx passes our narinfo through unchanged");

    let absent = "/00000000000000000000000000000000.narinfo";
    for _ in 0..2 {
        let (s, h, _) = get(nginx_port, absent);
        assert_eq!(s, 404);
        assert_ne!(
            header(&h, "x-cache-status"),
            Some("HIT"),
            "a 404 was cached: {h}"
        );
    }

    // The NAR through the cache, twice: identical to nix-store --dump.
    let url = String::from_utf8(b1)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("URL: ").map(str::to_owned))
        .expect("URL line");
    let want = Command::new("nix-store")
        .args(["--dump", path])
        .output()
        .unwrap()
        .stdout;
    for round in 0..2 {
        let (s, _, nar) = get(nginx_port, &format!("/{url}"));
        assert_eq!(s, 200);
        assert!(nar == want, "NAR through nginx differs (round {round})");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
