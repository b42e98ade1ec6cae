//! `/<hash>.ls` against Nix itself: the listing `nix copy --to
//! 'file://DIR?write-nar-listing=true'` writes for every fixture, and every
//! `narOffset` checked through our own `Range` replies. Run through
//! scripts/test.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::binary::{start_on_any_port, tmpdir};
use common::routes::{get, hash_part, request};
use common::{nix_fresh_cache, succeeded, Fixtures};

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
            check_offsets(addr, name, path, &ours);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// For every file (see `step`): `NAR[narOffset .. narOffset + size]`, fetched with a
/// `Range` request, is the file. Empty files cannot be asked for with a
/// range; their offset must still be inside the NAR.
fn check_offsets(addr: SocketAddr, name: &str, path: &str, listing: &Value) {
    let mut all = Vec::new();
    files(&listing["root"], PathBuf::new(), &mut all);
    let nar_url = format!("/nar/{}.nar", hash_part(path));
    let total: u64 = request(addr, "HEAD", &nar_url, &[], false)
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
            PathBuf::from(path)
        } else {
            Path::new(path).join(&inner)
        };
        assert!(offset + size <= total, "{name}/{}", inner.display());
        if size == 0 {
            continue;
        }
        let range = format!("bytes={offset}-{}", offset + size - 1);
        let got = request(addr, "GET", &nar_url, &[("Range", &range)], false);
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

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn head_and_refusals() {
    let fx = Fixtures::load();
    let (_server, addr, _) = start_on_any_port(&[]);
    let tree = hash_part(fx.path("tree"));
    let full = get(addr, &format!("/{tree}.ls"));
    let head = request(addr, "HEAD", &format!("/{tree}.ls"), &[], false);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some(full.body.len().to_string().as_str())
    );
    let part = request(
        addr,
        "GET",
        &format!("/{tree}.ls"),
        &[("Range", "bytes=0-9")],
        false,
    );
    assert_eq!((part.status, &part.body[..]), (206, &full.body[..10]));
    let past = format!("bytes={}-", full.body.len());
    let none = request(
        addr,
        "GET",
        &format!("/{tree}.ls"),
        &[("Range", &past)],
        false,
    );
    assert_eq!(none.status, 416);
    let absent = get(addr, "/00000000000000000000000000000000.ls");
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
    let log = log.lock().unwrap().clone();
    let nar_lines: Vec<&str> = log.lines().filter(|l| l.contains("/nar/")).collect();
    eprintln!(
        "NAR requests of nix store ls and cat:\n{}",
        nar_lines.join("\n")
    );
    assert!(!nar_lines.is_empty(), "the client fetched no NAR:\n{log}");
    let _ = std::fs::remove_dir_all(&work);
}
