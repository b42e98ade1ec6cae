//! The exit statuses README documents and `systemd/nix-serve.service` relies
//! on: `RestartPreventExitStatus=` lists 2 and 78 (no restart can help) and
//! not 75 (the store may be back on the next start). Needs no Nix: the store
//! that cannot be reached is a socket path that does not exist.

mod common;

use std::net::TcpListener;
use std::process::Command;

use common::binary::BIN;

/// Runs the server with `args` (never socket-activated) and returns its exit
/// status and stderr.
fn exit_of(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("LISTEN_FDS")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("NIX_SECRET_KEY_FILE")
        .env_remove("NIX_REMOTE")
        .output()
        .expect("run nix-serve");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_start_failure_has_the_status_systemd_acts_on() {
    let dir = std::env::temp_dir().join(format!("nix-serve-sd-exit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_key = dir.join("bad.key");
    std::fs::write(&bad_key, "cache-1:not-base64!\n").unwrap();
    let bad_key = bad_key.to_str().unwrap();
    let no_daemon = format!("unix://{}/no-daemon.sock", dir.display());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = taken.local_addr().unwrap().to_string();
    let any = "127.0.0.1:0";

    let cases: &[(&str, &[&str], i32)] = &[
        ("unknown flag", &["--no-such-flag"], 2),
        (
            "malformed key",
            &["--listen", any, "--sign-key-file", bad_key],
            78,
        ),
        (
            "missing key",
            &["--listen", any, "--sign-key-file", "/nonexistent/key"],
            78,
        ),
        (
            "bad duration",
            &["--listen", any, "--idle-timeout", "soon"],
            78,
        ),
        (
            "unsupported store URI",
            &["--listen", any, "--store", "ssh://host"],
            78,
        ),
        ("TLS", &["--listen", "127.0.0.1:0:ssl"], 78),
        (
            "daemon not there",
            &["--listen", any, "--store", &no_daemon],
            75,
        ),
        (
            "address in use",
            &["--listen", &in_use, "--store", &no_daemon],
            1,
        ),
    ];
    for (what, args, want) in cases {
        let (code, stderr) = exit_of(args);
        assert_eq!(code, Some(*want), "{what}: {args:?}: {stderr}");
        assert_eq!(
            stderr.lines().filter(|l| l.contains("error")).count(),
            1,
            "{what}: {stderr}"
        );
    }
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
}
