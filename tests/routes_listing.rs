//! `/<hash>.ls` against Nix itself: the listing `nix copy --to
//! 'file://DIR?write-nar-listing=true'` writes for every fixture, and every
//! `narOffset` checked through our own `Range` replies; and through a
//! nix-daemon whose store's files are not on this machine, where the listing
//! is made from the NAR it sends. Run through scripts/test.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::binary::{start_on_any_port, tmpdir, wait_log};
use common::http::{get, Request};
use common::{
    hash_part, nix_fresh_cache, run, succeeded, write_file, ChrootStore, Fixtures, TestDaemon,
    ABSENT,
};

/// Every regular file in a listing: path inside the store path, size, offset.
fn files(node: &Value, at: PathBuf, out: &mut Vec<(PathBuf, u64, u64)>) {
    match node["type"].as_str() {
        Some("regular") => out.push((
            at,
            node["size"].as_u64().unwrap(),
            node["narOffset"]
                .as_u64()
                .expect("narOffset on a regular file"),
        )),
        Some("directory") => {
            for (name, child) in node["entries"].as_object().unwrap() {
                files(child, at.join(name), out);
            }
        }
        Some("symlink") => assert!(node["target"].is_string()),
        other => panic!("node type {other:?}"),
    }
}

fn nix_listings(fx: &Fixtures, work: &Path) -> BTreeMap<String, Vec<u8>> {
    let dir = work.join("file-cache");
    let to = format!(
        "file://{}?write-nar-listing=true&compression=none",
        dir.display()
    );
    // A `.drv` names its outputs to `nix copy` unless `--derivation`.
    let (drvs, outputs): (Vec<&str>, Vec<&str>) = fx
        .full_paths()
        .into_iter()
        .partition(|p| p.ends_with(".drv"));
    for (flag, paths) in [(None, outputs), (Some("--derivation"), drvs)] {
        let mut args = vec!["copy", "--to", &to];
        args.extend(flag);
        args.extend(paths);
        succeeded(
            &nix_fresh_cache("nix", &args, &work.join("xdg")),
            "nix copy --to file://",
        );
    }
    fx.paths
        .iter()
        .map(|(name, path)| {
            let ls = dir.join(format!("{}.ls", hash_part(path)));
            let bytes =
                std::fs::read(&ls).unwrap_or_else(|e| panic!("{name}: {}: {e}", ls.display()));
            (name.clone(), bytes)
        })
        .collect()
}

/// `offsets`: also check every `narOffset` by range (once is enough: the
/// backends share the listing code, and many-files makes 2,000 requests).
fn check_listings(store_args: &[&str], tag: &str, offsets: bool) {
    let fx = Fixtures::load();
    let work = tmpdir(tag);
    let want = nix_listings(&fx, &work);
    let (_server, addr, _) = start_on_any_port(store_args);
    for (name, path) in &fx.paths {
        let got = get(addr, &format!("/{}.ls", hash_part(path)));
        assert_eq!(got.status, 200, "{name}");
        assert_eq!(got.header("Content-Type"), Some("application/json"));
        let ours: Value = serde_json::from_slice(&got.body).unwrap();
        let nix: Value = serde_json::from_slice(&want[name]).unwrap();
        assert_eq!(ours, nix, "{name}: listing differs from Nix's");
        assert!(
            got.body == want[name],
            "{name}: same JSON, other bytes than Nix's"
        );
        if offsets {
            check_offsets(addr, name, path, Path::new(path), &ours);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// For every file (see `step`): `NAR[narOffset .. narOffset + size]`, fetched with a
/// `Range` request, is the file (read under `real`, where the files of
/// `path` are). Empty files cannot be asked for with a range; their offset
/// must still be inside the NAR.
fn check_offsets(addr: SocketAddr, name: &str, path: &str, real: &Path, listing: &Value) {
    let mut all = Vec::new();
    files(&listing["root"], PathBuf::new(), &mut all);
    let nar_url = format!("/nar/{}.nar", hash_part(path));
    let total: u64 = Request::head(&nar_url)
        .send(addr)
        .header("Content-Length")
        .unwrap()
        .parse()
        .unwrap();
    // many-files has 2,000: each range request walks the whole tree again,
    // so every 20th of those (still from start to end of the NAR).
    let step = if all.len() > 200 { 20 } else { 1 };
    for (inner, size, offset) in all.into_iter().step_by(step) {
        // The root itself when the store path is a single file.
        let file = if inner.as_os_str().is_empty() {
            real.to_owned()
        } else {
            real.join(&inner)
        };
        assert!(offset + size <= total, "{name}/{}", inner.display());
        if size == 0 {
            continue;
        }
        let range = format!("bytes={offset}-{}", offset + size - 1);
        let got = Request::get(&nar_url).header("Range", &range).send(addr);
        assert_eq!(got.status, 206, "{name}/{}", inner.display());
        assert!(
            got.body == std::fs::read(&file).unwrap(),
            "{name}: NAR bytes at narOffset {offset} are not {}",
            file.display()
        );
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn listings_are_nix_own_with_working_offsets() {
    check_listings(&[], "listing-local", true);
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn listings_through_the_daemon_backend() {
    check_listings(&["--store", "daemon"], "listing-daemon", false);
}

/// A tree with every kind of node (`docs/protocols.md` §3), its bytes
/// unique to `tag`, so that no store holds it yet.
fn odd_tree(dir: &Path, tag: &str) {
    let unique = format!("{tag} {:?} {}\n", dir, std::process::id());
    std::fs::create_dir_all(dir.join("a/b/c")).unwrap();
    std::fs::create_dir_all(dir.join("empty-dir")).unwrap();
    write_file(&dir.join("a/b/c/deep.txt"), unique.as_bytes(), false);
    write_file(&dir.join("B"), b"", false);
    write_file(&dir.join("run.sh"), b"#!/bin/sh\necho hi\n", true);
    // Larger than one read buffer and not a multiple of 8.
    write_file(&dir.join("big"), &vec![b'x'; 300_001], false);
    write_file(&dir.join("q\"\\\t\u{1}\u{7f} é"), b"odd name\n", false);
    for (target, link) in [
        ("a/b/c/deep.txt", "link-relative"),
        ("/etc/hostname", "link-absolute"),
        ("../no/where", "link-dangling"),
    ] {
        std::os::unix::fs::symlink(target, dir.join(link)).unwrap();
    }
}

/// `nix copy --from STORE --to file://…?write-nar-listing=true` of `path`:
/// Nix's listing of it.
fn nix_listing(from: &str, path: &str, work: &Path) -> Vec<u8> {
    let dir = work.join("file-cache");
    let to = format!(
        "file://{}?write-nar-listing=true&compression=none",
        dir.display()
    );
    succeeded(
        &nix_fresh_cache(
            "nix",
            &["copy", "--from", from, "--to", &to, path],
            &work.join("xdg"),
        ),
        "nix copy --to file://",
    );
    std::fs::read(dir.join(format!("{}.ls", hash_part(path)))).unwrap()
}

/// A daemon whose store's files are not on this machine (a chroot store's
/// own daemon: its paths are `/nix/store/…` to it and do not exist here):
/// the listing is made from the NAR it sends, and is Nix's, offsets and all.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn listing_from_the_daemons_nar_when_the_files_are_elsewhere() {
    let _fx = Fixtures::load();
    let store = ChrootStore::new("listing-elsewhere");
    let work = tmpdir("listing-elsewhere");
    let src = work.join("tree");
    odd_tree(&src, "elsewhere");
    let path = run(std::process::Command::new("nix-store")
        .args(["--store", &store.uri(), "--add"])
        .arg(&src));
    let path = path.trim();
    assert!(
        !Path::new(path).exists(),
        "{path} is on this machine: the test needs files that are not"
    );
    let want = nix_listing(&store.uri(), path, &work);

    let daemon = TestDaemon::serving(&store.uri());
    let uri = format!("unix://{}", daemon.socket().display());
    let (_server, addr, _) = start_on_any_port(&["--store", &uri]);
    let got = get(addr, &format!("/{}.ls", hash_part(path)));
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(
        got.body == want,
        "listing differs from Nix's:\nours {}\nNix's {}",
        got.text(),
        String::from_utf8_lossy(&want)
    );
    let listing: Value = serde_json::from_slice(&got.body).unwrap();
    let real = store.root().join(path.trim_start_matches('/'));
    check_offsets(addr, "elsewhere", path, &real, &listing);
    let _ = std::fs::remove_dir_all(&work);
}

/// Through a daemon whose files are here, the listing still comes from the
/// files: a file whose mtime is no longer Nix's makes it fail (the files
/// were changed behind Nix's back, as for the NAR), where the daemon's NAR
/// would have given one; and with the mtime back it is Nix's listing again.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn listing_through_a_daemon_still_from_the_files_here() {
    let _fx = Fixtures::load();
    let work = tmpdir("listing-here");
    let src = work.join("tree");
    odd_tree(&src, "here");
    let path = run(std::process::Command::new("nix-store")
        .arg("--add")
        .arg(&src));
    let path = path.trim().to_owned();
    let want = nix_listing("auto", &path, &work);
    let (_server, addr, _) = start_on_any_port(&["--store", "daemon"]);
    let ls = format!("/{}.ls", hash_part(&path));
    assert!(get(addr, &ls).body == want);

    let file = Path::new(&path).join("a/b/c/deep.txt");
    let touch = |when: &str| {
        run(std::process::Command::new("touch")
            .args(["-h", "-d", when])
            .arg(&file));
    };
    touch("@2");
    let changed = get(addr, &ls);
    touch("@1");
    assert_eq!(changed.status, 500, "{}", changed.text());
    let back = get(addr, &ls);
    assert_eq!(back.status, 200);
    assert!(back.body == want);
    run(std::process::Command::new("nix-store").args(["--delete", &path]));
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn head_and_refusals() {
    let fx = Fixtures::load();
    let (_server, addr, _) = start_on_any_port(&[]);
    let tree = hash_part(fx.path("tree"));
    let full = get(addr, &format!("/{tree}.ls"));
    let head = Request::head(&format!("/{tree}.ls")).send(addr);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some(full.body.len().to_string().as_str())
    );
    let part = Request::get(&format!("/{tree}.ls"))
        .header("Range", "bytes=0-9")
        .send(addr);
    assert_eq!((part.status, &part.body[..]), (206, &full.body[..10]));
    let past = format!("bytes={}-", full.body.len());
    let none = Request::get(&format!("/{tree}.ls"))
        .header("Range", &past)
        .send(addr);
    assert_eq!(none.status, 416);
    let absent = get(addr, &format!("/{ABSENT}.ls"));
    assert_eq!(
        (absent.status, absent.text().as_str()),
        (404, "No such path.\n")
    );
    assert_eq!(get(addr, "/nope.ls").status, 400);
    assert_eq!(get(addr, &format!("/nar/{tree}.ls")).status, 404);
}

/// `nix store ls` and `nix store cat` against the server. Nix 2.8 reads
/// neither `.ls` nor ranges for these: its RemoteFSAccessor fetches the
/// whole NAR (recorded here from the access log, so a change shows).
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn nix_store_ls_and_cat() {
    let fx = Fixtures::load();
    let (_server, addr, log) = start_on_any_port(&["--access-log", "/dev/stderr"]);
    let url = format!("http://{addr}");
    let work = tmpdir("store-ls");
    // Not `tree`: Nix 2.8's `nix store ls -l` takes its `%percent+plus`
    // for a format string and fails on its own store too.
    let mid = fx.path("dep-mid");
    let out = succeeded(
        &nix_fresh_cache(
            "nix",
            &["store", "ls", "--store", &url, "-lR", mid],
            &work.join("xdg"),
        ),
        "nix store ls",
    );
    assert!(out.contains("-r-xr-xr-x"), "{out}");
    assert!(out.contains("./bin/show"), "{out}");
    let leaf = fx.path("dep-leaf");
    assert!(out.contains(&format!("./leaf-link -> {leaf}")), "{out}");
    let deep = format!("{}/a/b/c/d/deep.txt", fx.path("tree"));
    let cat = nix_fresh_cache(
        "nix",
        &["store", "cat", "--store", &url, &deep],
        &work.join("xdg"),
    );
    succeeded(&cat, "nix store cat");
    assert_eq!(cat.stdout, std::fs::read(&deep).unwrap());
    let log = wait_log(&log, "a NAR request", |t| t.contains("/nar/"));
    let nar_lines: Vec<&str> = log.lines().filter(|l| l.contains("/nar/")).collect();
    eprintln!(
        "NAR requests of nix store ls and cat:\n{}",
        nar_lines.join("\n")
    );
    assert!(!nar_lines.is_empty(), "the client fetched no NAR:\n{log}");
    let _ = std::fs::remove_dir_all(&work);
}
