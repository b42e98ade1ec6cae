//! The built `nix-serve` against a real Nix client and the real store: the
//! end-to-end oracle (`docs/style.md` §13). Run through scripts/test.

mod common;

use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::binary::{free_port, start_on_any_port, tmpdir, wait_listening, wait_log, Running};
use common::http::{get, Request};
use common::{hash_part, nix_copy_from, nix_fresh_cache, succeeded, Fixtures, TestDaemon};

/// The closure we copy: input-addressed paths (so a wrong key must be
/// refused), references, a multi-output derivation, a big file.
const COPIED: [&str; 5] = [
    "dep-top",
    "multi-output.out",
    "big-10M",
    "hello-exe",
    "many-files",
];

fn serve(fx: &Fixtures, extra: &[&str]) -> (Running, SocketAddr) {
    let key = fx.key("secret");
    let mut args = vec!["--sign-key-file", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (running, addr, _) = start_on_any_port(&args);
    (running, addr)
}

fn dump(store: Option<&Path>, path: &str) -> Vec<u8> {
    let mut cmd = Command::new("nix-store");
    if let Some(s) = store {
        cmd.args(["--store", s.to_str().unwrap()]);
    }
    let out = cmd.args(["--dump", path]).output().unwrap();
    succeeded(&out, &format!("nix-store --dump {path}"));
    out.stdout
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn nix_copy_trusting_only_the_test_key() {
    nix_copy_through(&[]);
}

/// The same through the nix-daemon backend (`auto` picks the local database
/// when it is readable, as it is for root here).
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn nix_copy_through_the_daemon_backend() {
    nix_copy_through(&["--store", "daemon"]);
}

fn nix_copy_through(store_args: &[&str]) {
    let fx = Fixtures::load();
    let (_server, addr) = serve(&fx, store_args);
    let url = format!("http://{addr}");
    let work = tmpdir(&format!("nix-copy{}", store_args.len()));
    let public = std::fs::read_to_string(fx.key("public")).unwrap();
    let wrong = std::fs::read_to_string(fx.key("wrong.public")).unwrap();
    let paths: Vec<&str> = COPIED.iter().map(|n| fx.path(n)).collect();

    let dst = work.join("right");
    succeeded(
        &nix_copy_from(&url, &dst, &public, &paths, &work.join("xdg-right")),
        "nix copy with the right key",
    );
    for p in &paths {
        assert!(
            dump(None, p) == dump(Some(&dst), p),
            "NAR of {p} differs after the copy"
        );
    }

    let dst = work.join("wrong");
    let top = fx.path("dep-top");
    let out = nix_copy_from(&url, &dst, &wrong, &[top], &work.join("xdg-wrong"));
    assert!(
        !out.status.success(),
        "nix copy accepted {top} signed by a key it does not trust"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signature"),
        "refused for another reason: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn nix_store_realise_with_the_server_as_substituter() {
    let fx = Fixtures::load();
    let (_server, addr) = serve(&fx, &[]);
    let url = format!("http://{addr}");
    let work = tmpdir("realise");
    let public = std::fs::read_to_string(fx.key("public")).unwrap();
    let dst = work.join("store");
    let top = fx.path("dep-top");
    let args = [
        "--store",
        dst.to_str().unwrap(),
        "-r",
        "--option",
        "substituters",
        &url,
        "--option",
        "trusted-public-keys",
        public.trim(),
        top,
    ];
    succeeded(
        &nix_fresh_cache("nix-store", &args, &work.join("xdg")),
        "nix-store -r",
    );
    assert_eq!(dump(None, top), dump(Some(&dst), top));
    let _ = std::fs::remove_dir_all(&work);
}

/// Our NARs, fetched over HTTP the way a client does, are `nix-store --dump`'s
/// bytes, whole and by range.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn served_nars_are_byte_identical() {
    let fx = Fixtures::load();
    let (_server, addr) = serve(&fx, &[]);
    for (name, path) in &fx.paths {
        if name.ends_with(".drv") {
            continue;
        }
        let narinfo = get(addr, &format!("/{}.narinfo", hash_part(path)));
        assert_eq!(narinfo.status, 200, "{name}");
        let text = narinfo.text();
        let url = text
            .lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .expect("URL line");
        let nar = get(addr, &format!("/{url}"));
        assert_eq!(nar.status, 200, "{name}");
        let want = dump(None, path);
        assert!(
            nar.body == want,
            "{name}: served NAR differs from nix-store --dump"
        );
        assert!(
            text.contains(&format!("NarSize: {}\n", want.len())),
            "{name}"
        );
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn drop_in_command_line() {
    let fx = Fixtures::load();
    let (server, addr, log) = start_on_any_port(&[
        "--workers",
        "4",
        "--preload-app",
        "--access-log",
        "/dev/stderr",
        "--priority",
        "40",
    ]);
    let info = get(addr, "/nix-cache-info");
    assert_eq!(
        info.text(),
        "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"
    );
    let hash = hash_part(fx.path("dep-top"));
    assert_eq!(get(addr, &format!("/{hash}.narinfo")).status, 200);
    let status = server.terminate();
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    let stderr = wait_log(&log, "the exit line", |t| t.contains("Exiting after"));
    assert!(
        stderr.contains("\"GET /nix-cache-info HTTP/1.1\" 200"),
        "access log: {stderr}"
    );
    assert!(
        stderr.contains("--preload-app"),
        "one warning for the ignored flag: {stderr}"
    );
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn listen_on_all_addresses_answers_v4_and_v6() {
    let _fx = Fixtures::load();
    let port = free_port();
    let listen = format!(":{port}");
    let _server = Running::start(&["--listen", &listen], Stdio::inherit());
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(v4, Duration::from_secs(30));
    assert_eq!(get(v4, "/nix-cache-info").status, 200);
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    if TcpStream::connect(v6).is_ok() {
        assert_eq!(get(v6, "/nix-cache-info").status, 200);
    } else {
        // A machine without IPv6 loopback cannot show it; say so loudly.
        assert!(
            std::fs::read_to_string("/proc/net/if_inet6")
                .map_or(true, |s| !s.contains("00000000000000000000000000000001")),
            "[::1] exists but the server does not answer there"
        );
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn unreachable_store_fails_before_ready() {
    let _fx = Fixtures::load();
    let dir = tmpdir("unreachable");
    let notify_path = dir.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_nonblocking(true).unwrap();
    let port = free_port().to_string();
    for (store, cause) in [
        (
            "local?root=/nonexistent/root",
            "Unable to open the database file",
        ),
        (
            "unix:///nonexistent/daemon.sock",
            "No such file or directory",
        ),
    ] {
        let out = Command::new(common::binary::BIN)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--store", store])
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("LISTEN_FDS")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{store}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{store}: {stderr}");
        assert!(errors[0].contains("store"), "{store}: {stderr}");
        assert!(errors[0].contains(cause), "the cause: {store}: {stderr}");
    }
    let mut buf = [0u8; 1024];
    assert!(
        notify.recv(&mut buf).is_err(),
        "something was sent to NOTIFY_SOCKET"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A daemon that goes away is a 503 (clients retry; a 404 would be cached
/// for an hour, `docs/protocols.md` §4.4), and service resumes when it is back.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn daemon_restart_is_503_then_recovers() {
    let fx = Fixtures::load();
    let mut daemon = TestDaemon::start();
    let socket = daemon.socket();
    let uri = format!("unix://{}", socket.display());
    let (_server, addr, log) = start_on_any_port(&["--store", &uri, "--workers", "1"]);
    let narinfo = format!("/{}.narinfo", hash_part(fx.path("dep-top")));
    assert_eq!(get(addr, &narinfo).status, 200);

    daemon.kill();
    // A path not asked for yet: the one above may still be answered from
    // the worker's narinfo cache, since the store has not changed (README
    // "Caching").
    let unseen = format!("/{}.narinfo", hash_part(fx.path("dep-mid")));
    for _ in 0..2 {
        let r = get(addr, &unseen);
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
    }
    // The log says why, down to the system's reason: the error's source
    // chain, not only its outermost message.
    let connect = format!("cannot connect to nix-daemon at {}: ", socket.display());
    wait_log(&log, "connect error with its os error", |logged| {
        logged
            .lines()
            .any(|l| l.contains(&unseen) && l.contains(&connect) && l.contains("(os error"))
    });

    daemon.spawn();
    for target in [&narinfo, &unseen] {
        assert_eq!(
            get(addr, target).status,
            200,
            "service resumes with the daemon: {target}"
        );
    }
}

/// SIGTERM while a NAR is being sent: the transfer completes, then the
/// process exits 0.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn sigterm_finishes_the_request_in_flight() {
    use std::io::Read;
    let fx = Fixtures::load();
    let (server, addr) = serve(&fx, &[]);
    let big = fx.path("big-10M");
    let nar = Request::get(&format!("/nar/{}.nar", hash_part(big)));
    let (_, mut s) = nar.open(addr);
    let mut body = vec![0u8; 64 * 1024];
    s.read_exact(&mut body).unwrap();

    server.signal_term();
    s.read_to_end(&mut body).unwrap();
    assert!(
        body == dump(None, big),
        "the NAR in flight was cut or changed"
    );
    let mut server = server;
    let status = common::binary::wait_exit(&mut server.child, Duration::from_secs(60));
    assert!(status.expect("exits after SIGTERM").success());
}
