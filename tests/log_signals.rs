//! SIGHUP and the log files (issue 14 §3): logrotate renames the files and
//! sends SIGHUP, as it does to Starman; the server opens them again by name
//! and keeps serving. And what a client sends is escaped in the access log
//! as nginx escapes it, so no request can forge a line or drive a terminal.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use common::binary::{tmpdir, Running};
use common::http::{get, send_raw};
use common::logs::{read, start_on_free_port, wait_for, wait_for_n};

/// Starts the server on a free port with both logs in `dir`.
fn start_with_logs(dir: &Path) -> (Running, SocketAddr) {
    let (access, error) = (dir.join("access.log"), dir.join("error.log"));
    start_on_free_port(
        &[
            "--access-log",
            access.to_str().unwrap(),
            "--error-log",
            error.to_str().unwrap(),
        ],
        Stdio::inherit(),
    )
}

fn signal(server: &Running, sig: &str) {
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn sighup_reopens_renamed_logs_and_keeps_serving() {
    let dir = tmpdir("sighup");
    let (mut server, addr) = start_with_logs(&dir);
    let (access, error) = (dir.join("access.log"), dir.join("error.log"));
    assert_eq!(get(addr, "/nix-cache-info?before").status, 200);
    wait_for(&access, "GET /nix-cache-info?before ");
    wait_for(&error, "Serving store");

    // What logrotate does: rename, then HUP.
    std::fs::rename(&access, dir.join("access.log.1")).unwrap();
    std::fs::rename(&error, dir.join("error.log.1")).unwrap();
    signal(&server, "-HUP");
    wait_for(&error, "log files reopened");

    for _ in 0..3 {
        assert_eq!(get(addr, "/nix-cache-info?after").status, 200);
    }
    // The log thread writes them a moment after the replies went out.
    let new = wait_for_n(&access, "GET /nix-cache-info?after ", 3);
    assert_eq!(new.lines().count(), 3, "every request after HUP: {new}");
    let old = read(&dir.join("access.log.1"));
    assert!(
        !old.contains("?after"),
        "the rotated file got new lines: {old}"
    );
    assert!(old.contains("?before"), "{old}");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "SIGHUP stopped the server"
    );

    // A second HUP with the access log deleted works the same way.
    std::fs::remove_file(&access).unwrap();
    signal(&server, "-HUP");
    wait_for_n(&error, "log files reopened", 2);
    assert_eq!(get(addr, "/nix-cache-info?again").status, 200);
    wait_for(&access, "GET /nix-cache-info?again ");

    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM after SIGHUP is a clean exit: {status}"
    );
}

/// Sends `head` as is and reads the reply to the end.
fn raw(addr: SocketAddr, head: &[u8]) -> String {
    String::from_utf8_lossy(&send_raw(addr, head)).into_owned()
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn access_log_escapes_quotes_backslashes_and_non_ascii_bytes_from_clients() {
    let dir = tmpdir("escape");
    let (server, addr) = start_with_logs(&dir);
    let access = dir.join("access.log");

    let reply = raw(
        addr,
        "GET /nix-cache-info?q=\"x\\ HTTP/1.1\r\nHost: t\r\nUser-Agent: a\"b\\c é\r\nConnection: close\r\n\r\n"
            .as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let line = wait_for(&access, "nix-cache-info");
    assert!(
        line.contains(r#""GET /nix-cache-info?q=\x22x\x5C HTTP/1.1" 200"#),
        "target not escaped: {line}"
    );
    assert!(
        line.trim_end().ends_with(r#""a\x22b\x5Cc \xC3\xA9""#),
        "User-Agent not escaped: {line}"
    );

    // A byte that is not UTF-8 (Latin-1 `é`) is logged as the byte sent,
    // not as the replacement character's three bytes.
    let reply = raw(
        addr,
        b"GET /nix-cache-info?latin1 HTTP/1.1\r\nHost: t\r\nUser-Agent: caf\xe9\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let all = wait_for(&access, "?latin1");
    let line = all.lines().find(|l| l.contains("?latin1")).unwrap();
    assert!(line.ends_with(r#""caf\xE9""#), "User-Agent bytes: {line}");

    // Control bytes: whether the parser refuses them or not, none reaches
    // the log raw.
    for ua in [&b"x\x1b[2J"[..], b"bell\x07", b"cr\rfake line"] {
        let mut head = b"GET /nix-cache-info HTTP/1.1\r\nHost: t\r\nUser-Agent: ".to_vec();
        head.extend_from_slice(ua);
        head.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        raw(addr, &head);
    }
    assert_eq!(get(addr, "/nix-cache-info?last").status, 200);
    let all = wait_for(&access, "?last");
    assert!(
        !all.bytes().any(|b| b < 0x20 && b != b'\n'),
        "a control byte reached the access log: {all:?}"
    );
    assert!(
        all.lines().all(|l| l.starts_with("127.0.0.1 ")),
        "a forged line: {all}"
    );
    drop(server);
}
