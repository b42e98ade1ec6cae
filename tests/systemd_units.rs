//! The shipped systemd units, checked by systemd's own tools: `systemd-analyze
//! verify` on the socket, the service, the signing drop-in and every drop-in
//! example in docs/install.md, and `systemd-analyze security --offline=true`
//! for the service's exposure score.
//!
//! Needs `systemd-analyze` (Debian: package `systemd`), not a running systemd.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support/markdown.rs"]
mod markdown;

/// The most exposure `systemd-analyze security` may report for the service.
const MAX_EXPOSURE: f64 = 2.0;

/// Where the shipped service expects the binary; the tests point it at the
/// one cargo built, so that `verify` checks a file that exists.
const SHIPPED_EXEC: &str = "/usr/local/bin/nix-serve";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory for one test, under cargo's per-target temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("units-{name}"));
    if dir.exists() {
        fs::remove_dir_all(&dir).expect("remove old scratch dir");
    }
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Copies both units into `dir`, the service's ExecStart pointed at the
/// built binary. Returns the paths of the socket and the service.
fn install_units(dir: &Path) -> (PathBuf, PathBuf) {
    let systemd = repo().join("systemd");
    let socket = dir.join("nix-serve.socket");
    fs::copy(systemd.join("nix-serve.socket"), &socket).expect("copy socket unit");

    let service_text =
        fs::read_to_string(systemd.join("nix-serve.service")).expect("read service unit");
    let exec_lines: Vec<&str> = service_text
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(
        exec_lines.len(),
        1,
        "nix-serve.service should have one ExecStart="
    );
    assert!(
        exec_lines[0].starts_with(&format!("ExecStart={SHIPPED_EXEC} ")),
        "ExecStart should run {SHIPPED_EXEC} (docs/install.md installs it there): {}",
        exec_lines[0]
    );
    let built = env!("CARGO_BIN_EXE_nix-serve");
    let service = dir.join("nix-serve.service");
    fs::write(&service, service_text.replacen(SHIPPED_EXEC, built, 1)).expect("write service");
    (socket, service)
}

fn systemd_analyze(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): install systemd's tools, or run scripts/test")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `systemd-analyze verify` exits 0 even for unknown keys and bad values, which
/// it only prints; any line that names one of our units is a failure. Lines
/// about the host's own units are not ours to judge.
fn assert_verifies(dir: &Path, socket: &Path, service: &Path, what: &str) {
    let (ok, output) = systemd_analyze(
        &[
            "verify",
            socket.to_str().expect("utf-8 path"),
            service.to_str().expect("utf-8 path"),
        ],
        dir,
    );
    let ours: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("nix-serve") || l.contains(dir.to_str().expect("utf-8 path")))
        .collect();
    assert!(
        ok && ours.is_empty(),
        "systemd-analyze verify ({what}) failed or warned:\n{output}"
    );
}

#[test]
#[ignore = "needs systemd-analyze: run scripts/test"]
fn shipped_units_verify_cleanly() {
    let dir = scratch("verify");
    let (socket, service) = install_units(&dir);
    assert_verifies(&dir, &socket, &service, "as shipped");
}

#[test]
#[ignore = "needs systemd-analyze: run scripts/test"]
fn signing_key_drop_in_verifies_cleanly() {
    shipped_drop_in_verifies_cleanly("nix-serve.service", "signing-key.conf");
}

#[test]
#[ignore = "needs systemd-analyze: run scripts/test"]
fn allowed_ips_drop_in_verifies_cleanly() {
    shipped_drop_in_verifies_cleanly("nix-serve.socket", "allowed-ips.conf");
}

#[test]
#[ignore = "needs systemd-analyze: run scripts/test"]
fn upstream_drop_in_verifies_cleanly() {
    shipped_drop_in_verifies_cleanly("nix-serve.service", "upstream.conf");
}

/// `systemd/<file>` installed as a drop-in of `unit`, as its comment says.
fn shipped_drop_in_verifies_cleanly(unit: &str, file: &str) {
    let dir = scratch(file.trim_end_matches(".conf"));
    let (socket, service) = install_units(&dir);
    let drop_ins = dir.join(format!("{unit}.d"));
    fs::create_dir_all(&drop_ins).expect("create drop-in dir");
    let shipped = repo().join("systemd").join(file);
    let text = fs::read_to_string(&shipped).expect("read the drop-in");
    assert!(
        text.contains(&format!("/etc/systemd/system/{unit}.d/{file}")),
        "{file} should say where it is installed"
    );
    fs::write(drop_ins.join(file), text).expect("write the drop-in");
    assert_verifies(&dir, &socket, &service, &format!("with {file}"));
}

/// The `ini` blocks of docs/install.md, each a drop-in for the unit its
/// section names: the documentation cannot drift from what systemd accepts.
#[test]
#[ignore = "needs systemd-analyze: run scripts/test"]
fn documented_drop_ins_verify_cleanly() {
    let doc = fs::read_to_string(repo().join("docs/install.md")).expect("read docs/install.md");
    let blocks = markdown::fenced_blocks(&doc, "ini");
    assert!(
        blocks.len() >= 3,
        "docs/install.md should show its drop-ins as ```ini blocks (found {})",
        blocks.len()
    );
    for (i, block) in blocks.iter().enumerate() {
        let unit = match block.lines().next() {
            Some("[Service]") => "nix-serve.service",
            Some("[Socket]") => "nix-serve.socket",
            other => panic!("ini block {i} of docs/install.md starts with {other:?}, not a section this test knows"),
        };
        let dir = scratch(&format!("doc-{i}"));
        let (socket, service) = install_units(&dir);
        let drop_ins = dir.join(format!("{unit}.d"));
        fs::create_dir_all(&drop_ins).expect("create drop-in dir");
        fs::write(drop_ins.join("doc.conf"), block).expect("write drop-in");
        assert_verifies(&dir, &socket, &service, &format!("docs ini block {i}"));
    }
}

#[test]
#[ignore = "needs systemd-analyze: run scripts/test"]
fn service_exposure_is_at_most_two() {
    let dir = scratch("security");
    let (_socket, service) = install_units(&dir);
    let (ok, output) = systemd_analyze(
        &[
            "security",
            "--offline=true",
            service.to_str().expect("utf-8 path"),
        ],
        &dir,
    );
    assert!(ok, "systemd-analyze security failed:\n{output}");
    let score = exposure(&output)
        .unwrap_or_else(|| panic!("no \"Overall exposure level\" line in:\n{output}"));
    println!("nix-serve.service exposure: {score} (at most {MAX_EXPOSURE:.1})");
    eprintln!("nix-serve.service exposure: {score} (at most {MAX_EXPOSURE:.1})");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE:.1}:\n{output}"
    );
}

/// The number in `→ Overall exposure level for nix-serve.service: 0.4 SAFE 😀`.
fn exposure(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    let (_, rest) = line.split_once(": ")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn exposure_line_is_parsed() {
    let sample = "  NAME  DESCRIPTION  EXPOSURE\n\
                  ✗ PrivateUsers=  Service has access to other users  0.2\n\
                  \n→ Overall exposure level for nix-serve.service: 0.4 SAFE 😀\n";
    assert_eq!(exposure(sample), Some(0.4));
    assert_eq!(exposure("no such line"), None);
}

/// The statuses the server exits with (src/exit.rs) and the ones the unit
/// refuses to restart on must agree: a configuration error restarted every
/// second would keep the socket accepting and its clients waiting.
#[test]
fn restart_policy_matches_the_exit_statuses() {
    use nix_serve_sd::exit::StartError;
    let unit = fs::read_to_string(repo().join("systemd/nix-serve.service")).expect("read unit");
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .flat_map(|v| v.split_whitespace().map(str::to_owned))
            .collect()
    };
    let prevent = value("RestartPreventExitStatus");
    for code in ["2".to_owned(), StartError::CONFIG.to_string()] {
        assert!(
            prevent.contains(&code),
            "RestartPreventExitStatus= lacks {code}: {prevent:?}"
        );
    }
    assert!(
        !prevent.contains(&StartError::STORE.to_string()),
        "the store's status is transient and must be restarted: {prevent:?}"
    );
    assert_eq!(value("Restart"), ["on-failure"]);
    assert!(!value("StartLimitBurst").is_empty(), "no StartLimitBurst=");
}
