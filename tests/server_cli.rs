//! The built binary's start-up failures: each is one clear line on stderr and
//! an exit status ≠ 0, before any READY=1. Needs no Nix (keys and sockets are
//! checked before the store is opened).

mod common;

use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Output};

use common::binary::{tmpdir, BIN};

/// Runs the binary with a NOTIFY_SOCKET of our own; returns its output and
/// whatever it sent there.
fn run(name: &str, args: &[&str]) -> (Output, Vec<String>) {
    let dir = tmpdir(name);
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_nonblocking(true).unwrap();
    let out = Command::new(BIN)
        .args(args)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("NIX_SECRET_KEY_FILE")
        .env_remove("LISTEN_FDS")
        .output()
        .unwrap();
    let mut msgs = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = notify.recv(&mut buf) {
        msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let _ = std::fs::remove_dir_all(&dir);
    (out, msgs)
}

fn assert_one_line_failure(name: &str, args: &[&str], needle: &str) {
    let (out, msgs) = run(name, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{name}: exited 0; stderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(
        errors.len(),
        1,
        "{name}: want one error line, got: {stderr}"
    );
    assert!(
        errors[0].contains(needle),
        "{name}: {:?} lacks {needle:?}",
        errors[0]
    );
    assert!(
        !msgs.iter().any(|m| m.contains("READY=1")),
        "{name}: READY=1 sent before failing: {msgs:?}"
    );
}

#[test]
fn help_and_version() {
    let (out, _) = run("help", &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--priority",
        "--sign-key-file",
        "--idle-timeout",
        "--store",
        "--workers",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    let (out, _) = run("version", &["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn tls_is_refused_clearly() {
    assert_one_line_failure(
        "ssl-listen",
        &["--listen", "127.0.0.1:0:ssl"],
        "TLS is not supported",
    );
    assert_one_line_failure(
        "ssl-flag",
        &["--enable-ssl", "--ssl-cert", "c"],
        "TLS is not supported",
    );
}

#[test]
fn bad_values_are_refused() {
    assert_one_line_failure("idle", &["--idle-timeout", "soon"], "--idle-timeout");
    assert_one_line_failure("workers", &["--workers", "0"], "--workers");
}

#[test]
fn missing_key_file() {
    assert_one_line_failure(
        "missing-key",
        &[
            "--listen",
            "127.0.0.1:0",
            "--sign-key-file",
            "/nonexistent/key",
        ],
        "/nonexistent/key",
    );
}

#[test]
fn malformed_key_file() {
    let dir = tmpdir("bad-key-file");
    let key = dir.join("key");
    for (i, text) in [
        "",
        "no-colon",
        "name:!!!notbase64",
        "name:c2hvcnQ=",
        ":AAAA",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(&key, text).unwrap();
        assert_one_line_failure(
            &format!("bad-key-{i}"),
            &[
                "--listen",
                "127.0.0.1:0",
                "--sign-key-file",
                key.to_str().unwrap(),
            ],
            "signing key",
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn key_from_environment_is_checked_too() {
    let (out, _) = {
        let out = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .env("NIX_SECRET_KEY_FILE", "/nonexistent/env-key")
            .env_remove("LISTEN_FDS")
            .output()
            .unwrap();
        (out, ())
    };
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/env-key"));
}

#[test]
fn address_in_use_is_one_line_and_status_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (out, msgs) = run("in-use", &["--listen", &addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(msgs.is_empty(), "{msgs:?}");
    drop(taken);
}

#[test]
fn error_log_file_gets_the_failure_too() {
    let dir = tmpdir("error-log-file");
    let log = dir.join("errors.log");
    let (out, _) = run(
        "error-log",
        &[
            "--listen",
            "127.0.0.1:0",
            "--error-log",
            log.to_str().unwrap(),
            "--sign-key-file",
            "/nonexistent/key",
        ],
    );
    assert!(!out.status.success());
    let logged = std::fs::read_to_string(&log).expect("--error-log file created");
    assert!(logged.contains("/nonexistent/key"), "{logged}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/key"));
    let _ = std::fs::remove_dir_all(&dir);
}
