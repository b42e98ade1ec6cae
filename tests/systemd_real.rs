//! The shipped units under a real systemd: `tests/systemd/real-systemd.sh`
//! boots the machine's own systemd as PID 1 of new namespaces (its header says
//! how the host stays untouched), installs this build's binary and `systemd/`
//! as docs/install.md says, and checks activation, READY and STATUS, the key
//! as a credential, `nix copy --from`, idle exit, `systemctl restart` and
//! `stop` under load, fast failure on a bad key or flag, recovery from a
//! nix-daemon restart, the journal, the database under a writer and the live
//! security score, and systemd/allowed-ips.conf (a denied address never
//! reaches or starts the server). Its PASS/FAIL/FIGURE lines are printed
//! here, and its SKIP lines (a check this systemd cannot make) once more at
//! the end.
//!
//! Needs root, systemd >= 248, namespaces and cgroup2, a nix-daemon and the
//! fixtures. Where the machine cannot, the test fails saying why, unless
//! `NIX_SERVE_SD_ALLOW_SKIP=1` says skipping is intended (scripts/test then
//! does not run it at all, and its summary says so).

use std::env;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// The script's status for "this machine cannot run me" (its SKIP line says why).
const CANNOT_RUN: i32 = 77;

fn script() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/systemd/real-systemd.sh"
    ))
}

/// Why this machine cannot run the script, if it cannot.
fn cannot_run() -> Option<String> {
    let out = Command::new(script())
        .arg("--check")
        .output()
        .expect("run tests/systemd/real-systemd.sh --check");
    (out.status.code() == Some(CANNOT_RUN))
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
#[ignore = "needs root, namespaces, a real Nix and its fixtures: run scripts/test"]
fn shipped_units_under_a_real_systemd() {
    if let Some(why) = cannot_run() {
        if env::var("NIX_SERVE_SD_ALLOW_SKIP").as_deref() == Ok("1") {
            println!("SKIPPED (NIX_SERVE_SD_ALLOW_SKIP=1): {why}");
            eprintln!("SKIPPED (NIX_SERVE_SD_ALLOW_SKIP=1): {why}");
            return;
        }
        panic!("{why}; set NIX_SERVE_SD_ALLOW_SKIP=1 to skip this test instead");
    }
    // The test profile's binary: no release build needed. The script bounds
    // itself (every step has a time-out, the namespace is killed after 240 s).
    let mut child = Command::new(script())
        .arg(env!("CARGO_BIN_EXE_nix-serve"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run tests/systemd/real-systemd.sh");
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.expect("script output");
        // Printed as it comes, so that a slow step shows where it is.
        eprintln!("{line}");
        if line.starts_with("FAIL") {
            failed.push(line);
        } else if line.starts_with("SKIP ") {
            skipped.push(line);
        }
    }
    let status = child.wait().expect("wait for the script");
    // A check this machine's systemd cannot make is not a pass: say so last.
    for line in &skipped {
        println!("SKIPPED check: {line}");
        eprintln!("SKIPPED check: {line}");
    }
    assert!(
        failed.is_empty() && status.success(),
        "real systemd: {status}, failed checks:\n{}",
        failed.join("\n")
    );
}
