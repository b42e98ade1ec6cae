//! Signatures served: ours (`--sign-key-file`) and those stored with the
//! path (`nix store sign`), checked by a real Nix client (issue 11 §4).
//! Run through scripts/test.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::binary::{start_on_any_port, wait_log};
use common::http::{get, send_raw};
use common::{hash_part, nix_on, nix_store_dump, run, Fixtures, Scratch};

/// Input-addressed, one referring to the other: a client checks their
/// signatures (a content-addressed path would pass unsigned, docs/protocols.md §5.3).
const PATHS: [&str; 2] = ["dep-leaf", "dep-mid"];

fn read_key(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

/// `nix copy --from url` of `paths` into a new store at `dst`, trusting only
/// `key`.
fn copy_trusting(url: &str, dst: &Path, key: &str, paths: &[&str]) -> Output {
    let mut cmd = Command::new("nix");
    cmd.args(["--extra-experimental-features", "nix-command", "copy"])
        .args(["--from", url, "--to"])
        .arg(dst)
        .args(["--option", "trusted-public-keys", key])
        .args(paths)
        // A fresh narinfo disk cache: Nix remembers what it fetched (docs/protocols.md §4.4).
        .env("XDG_CACHE_HOME", dst.with_extension("xdg"))
        .env_remove("NIX_REMOTE");
    cmd.output().unwrap()
}

/// `nix store sign --store uri --key-file key paths`.
fn sign(uri: &str, key: &Path, paths: &[&str]) {
    let key = key.to_str().unwrap();
    nix_on(&["store", "sign", "--store", uri, "--key-file", key], paths);
}

/// A chroot store in `scratch` holding `paths` (copied from the machine's
/// store), signed there with `key`: the store's own signatures.
fn signed_copy(scratch: &Scratch, paths: &[&str], key: &Path) -> PathBuf {
    let store = scratch.join("store");
    let uri = store.to_str().unwrap();
    nix_on(&["copy", "--no-check-sigs", "--to", uri], paths);
    sign(uri, key, paths);
    store
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_path_signed_in_the_store_by_a_second_key_is_accepted_trusting_only_that_key() {
    let fx = Fixtures::load();
    let scratch = Scratch::new("sigs-nix");
    let paths: Vec<&str> = PATHS.iter().map(|n| fx.path(n)).collect();
    let store = signed_copy(&scratch, &paths, &fx.key("wrong.secret"));
    let uri = store.to_str().unwrap();
    // One more stored signature under our own key's name: ours must win,
    // with no second `Sig:` of that name.
    let ours = fx.key("secret");
    sign(uri, &ours, &paths[..1]);
    // A third key no client here trusts, to show the client does check.
    let third = scratch.join("third");
    run(Command::new("nix-store")
        .args(["--generate-binary-cache-key", "third-key-1"])
        .arg(third.with_extension("secret"))
        .arg(third.with_extension("public")));

    let store_uri = format!("local?root={uri}");
    let (_server, addr, _log) = start_on_any_port(&[
        "--store",
        &store_uri,
        "--sign-key-file",
        ours.to_str().unwrap(),
    ]);
    let url = format!("http://{addr}");

    let our_name = read_key(&fx.key("public"))
        .split_once(':')
        .unwrap()
        .0
        .to_owned();
    for path in &paths {
        let text = get(addr, &format!("/{}.narinfo", hash_part(path))).text();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("Sig: "))
            .map(|s| s.split_once(':').unwrap().0)
            .collect();
        assert_eq!(names, [our_name.as_str(), "wrong-key-1"], "{text}");
    }

    let second_public = read_key(&fx.key("wrong.public"));
    let dst = scratch.join("trusting-second");
    let out = copy_trusting(&url, &dst, &second_public, &paths);
    assert!(
        out.status.success(),
        "nix copy trusting only the second key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for path in &paths {
        let copied = Command::new("nix-store")
            .args(["--store"])
            .arg(&dst)
            .args(["--dump", path])
            .output()
            .unwrap();
        assert!(copied.status.success(), "{path} not in {}", dst.display());
        assert!(copied.stdout == nix_store_dump(path), "{path}: NAR differs");
    }

    let dst = scratch.join("trusting-ours");
    let out = copy_trusting(&url, &dst, &read_key(&fx.key("public")), &paths);
    assert!(
        out.status.success(),
        "nix copy trusting only our key: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dst = scratch.join("trusting-third");
    let third_public = read_key(&third.with_extension("public"));
    let out = copy_trusting(&url, &dst, &third_public, &paths);
    assert!(
        !out.status.success(),
        "nix copy accepted paths no trusted key signed"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signature"),
        "refused for another reason: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A stored signature a client could not decode is left out, with one
/// warning, and the good ones still reach the client.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_malformed_stored_signature_is_left_out_with_one_warning() {
    let fx = Fixtures::load();
    let scratch = Scratch::new("sigs-bad");
    let leaf = fx.path("dep-leaf");
    let store = signed_copy(&scratch, &[leaf], &fx.key("wrong.secret"));
    let uri = store.to_str().unwrap();
    // Nix never writes this; a damaged database or a hand edit does.
    let db = store.join("nix/var/nix/db/db.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let changed = conn
        .execute(
            "update ValidPaths set sigs = 'broken-key:not!base64 ' || sigs where path = ?1",
            [leaf],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);

    let store_uri = format!("local?root={uri}");
    let (_server, addr, log) = start_on_any_port(&["--store", &store_uri, "--workers", "1"]);
    let target = format!("/{}.narinfo", hash_part(leaf));
    let text = get(addr, &target).text();
    assert_eq!(get(addr, &target).text(), text);
    let sigs: Vec<&str> = text.lines().filter(|l| l.starts_with("Sig: ")).collect();
    assert_eq!(sigs.len(), 1, "{text}");
    assert!(sigs[0].starts_with("Sig: wrong-key-1:"), "{text}");
    // The server's stderr reaches the test through a reader thread, and its
    // lines through one queue: a line the server logs now, a bad request's,
    // comes after any warning the two requests above caused.
    let marker = send_raw(addr, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert!(marker.starts_with(b"HTTP/1.1 400 "), "{marker:?}");
    let log = wait_log(&log, "the bad request in the log", |l| {
        l.contains("bad request from ")
    });
    let warnings = log
        .lines()
        .filter(|l| l.contains("broken-key"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(leaf), "{warnings:?}");

    let dst = scratch.join("client");
    let out = copy_trusting(
        &format!("http://{addr}"),
        &dst,
        &read_key(&fx.key("wrong.public")),
        &[leaf],
    );
    assert!(
        out.status.success(),
        "nix copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
