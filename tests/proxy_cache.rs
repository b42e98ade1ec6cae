//! README "Scaling past one machine": Debian's nginx with `proxy_cache` in
//! front of the server, configured with the README's own block. A second
//! narinfo request is answered from nginx's cache (our `Cache-Control` allows
//! it), a 404 is never cached (`no-store`), and the NAR comes through intact.

mod common;
#[path = "support/markdown.rs"]
mod markdown;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::binary::{free_port, wait_listening};
use common::http::{Reply, Request};
use common::nginx::{self, Reaper};
use common::{hash_part, Fixtures, ABSENT};

/// One HTTP/1.0 GET on `port`, as a plain client sends it.
fn get(port: u16, path: &str) -> Reply {
    Request::get(path).http10().send(local(port))
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
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
    wait_listening(local(server_port), Duration::from_secs(20));

    let nginx_port = free_port();
    let _nginx = nginx::start(&dir, &nginx_block(&dir, nginx_port, server_port));
    wait_listening(local(nginx_port), Duration::from_secs(20));

    let path = fixtures.path("dep-top");
    let narinfo = format!("/{}.narinfo", hash_part(path));
    let first = get(nginx_port, &narinfo);
    let second = get(nginx_port, &narinfo);
    assert_eq!((first.status, second.status), (200, 200));
    // nginx's $upstream_cache_status, in its own capitals.
    let cache_status = |r: &Reply| r.header("X-Cache-Status").map(str::to_owned);
    assert_eq!(
        cache_status(&first).as_deref(),
        Some("MISS"),
        "{}",
        first.head
    );
    assert_eq!(
        cache_status(&second).as_deref(),
        Some("HIT"),
        "{}",
        second.head
    );
    assert_eq!(first.body, second.body);
    let direct = get(server_port, &narinfo);
    assert_eq!(
        first.body, direct.body,
        "nginx passes our narinfo through unchanged"
    );

    let absent = format!("/{ABSENT}.narinfo");
    for _ in 0..2 {
        let r = get(nginx_port, &absent);
        assert_eq!(r.status, 404);
        assert_ne!(
            cache_status(&r).as_deref(),
            Some("HIT"),
            "a 404 was cached: {}",
            r.head
        );
    }

    // The NAR through the cache, twice: identical to nix-store --dump.
    let url = String::from_utf8(first.body)
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
        let nar = get(nginx_port, &format!("/{url}"));
        assert_eq!(nar.status, 200);
        assert!(
            nar.body == want,
            "NAR through nginx differs (round {round})"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
