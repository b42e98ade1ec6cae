//! `--serve-closure-of` against the built binary, the real store and a real
//! Nix client (issue 12 part 2): a path outside the closure is answered
//! byte for byte as an absent one on every route (narinfo, NAR in every URL
//! form, `.ls`, a build log), through both backends; a derivation's log only
//! when the `.drv` is in the closure; a root switched to another closure is
//! honoured; `nix copy` of the closure works while an outside path is
//! refused.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::{start_on_any_port, wait_log, Running};
use common::http::{Reply, Request};
use common::routes::{every_route, nar_hash};
use common::{hash_part, nix_fresh_cache, run, succeeded, wait_until, Fixtures, Scratch, ABSENT};
/// The issue asks for "within a second"; the watch loop looks every second
/// and the recompute is milliseconds, so this margin only absorbs a loaded
/// machine.
const SWITCH_BOUND: Duration = Duration::from_secs(3);

fn request(addr: SocketAddr, method: &str, target: &str) -> Reply {
    Request::new(method, target).send(addr)
}

fn serve(store: &str, roots: &[&str]) -> (Running, SocketAddr) {
    let mut args = vec!["--store", store, "--workers", "2"];
    for r in roots {
        args.extend(["--serve-closure-of", r]);
    }
    let (running, addr, _) = start_on_any_port(&args);
    (running, addr)
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn outside_paths_answer_as_absent_on_every_route() {
    let fx = Fixtures::load();
    fx.require(&["dep-top", "dep-leaf", "hello-exe"]);
    let top = fx.path("dep-top");
    let inside = fx.path("dep-leaf");
    let outside = fx.path("hello-exe");
    for store in ["local", "daemon"] {
        let (_server, addr) = serve(store, &[top]);
        let nar = nar_hash(outside);
        for method in ["GET", "HEAD"] {
            for (out, absent) in every_route(hash_part(outside), &nar)
                .iter()
                .zip(every_route(ABSENT, &nar))
            {
                let refused = request(addr, method, out);
                assert_eq!(refused.status, 404, "{store} {method} {out}");
                assert_eq!(
                    refused.without_date(),
                    request(addr, method, &absent).without_date(),
                    "{store} {method} {out}: not the reply of an absent path"
                );
            }
            // The zstd NAR streams chunked, and dep-leaf has no build log:
            // the other routes show that the closure is served.
            let served = every_route(hash_part(inside), &nar_hash(inside))
                .into_iter()
                .filter(|t| !t.ends_with(".zst") && !t.starts_with("/log/"));
            for t in served {
                let r = request(addr, method, &t);
                assert_eq!(r.status, 200, "{store} {method} {t} is in the closure");
            }
        }
    }
}

/// A derivation built now (the nonce makes it new), so it has a build log:
/// its `.drv` and its output.
fn build_with_log(xdg: &Path) -> (String, String) {
    let nonce = format!("{:?}", Instant::now());
    let expr = format!(
        r#"derivation {{ name = "closure-log"; system = builtins.currentSystem;
           builder = "/bin/sh"; args = [ "-c" "echo 'log of {nonce}'; echo > $out" ];
           PATH = "/usr/bin:/bin"; }}"#
    );
    let args = [
        "--no-out-link",
        "--option",
        "compress-build-log",
        "false",
        "-E",
        &expr,
    ];
    let out = succeeded(&nix_fresh_cache("nix-build", &args, xdg), "nix-build");
    let out = out.trim().to_owned();
    let drv = run(Command::new("nix-store").args(["-q", "--deriver", &out]));
    (drv.trim().to_owned(), out)
}

/// A build log is public only when its `.drv` is in the closure: a closure
/// of outputs refuses it by every name (the `.drv`, the output, either hash
/// part) exactly as a log that does not exist; a root that is the `.drv`
/// serves it.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_build_log_is_served_only_when_its_derivation_is_in_the_closure() {
    let _fx = Fixtures::load();
    let work = Scratch::new("closure-log");
    let (drv, out) = build_with_log(&work.join("xdg"));
    let base = |p: &str| p.rsplit('/').next().unwrap().to_owned();
    let absent_drv = format!("{ABSENT}-closure-log.drv");
    let names = [
        (base(&drv), absent_drv.clone()),
        (hash_part(&drv).to_owned(), ABSENT.to_owned()),
        (base(&out), format!("{ABSENT}-closure-log")),
        (hash_part(&out).to_owned(), ABSENT.to_owned()),
    ];
    for store in ["local", "daemon"] {
        let (_server, addr) = serve(store, &[&out]);
        for (name, absent) in &names {
            for method in ["GET", "HEAD"] {
                let refused = request(addr, method, &format!("/log/{name}"));
                assert_eq!(refused.status, 404, "{store} {method} /log/{name}");
                assert_eq!(
                    refused.without_date(),
                    request(addr, method, &format!("/log/{absent}")).without_date(),
                    "{store} {method} /log/{name}: not the reply of an absent log"
                );
            }
        }
        let (_server, addr) = serve(store, &[&drv]);
        let served = request(addr, "GET", &format!("/log/{}", base(&drv)));
        assert_eq!(served.status, 200, "{store}: the .drv is the root");
        assert!(served.text().starts_with("log of "), "{}", served.text());
    }
}

/// Replaces the symlink `link` with one to `target` in one rename, as
/// `nix-env` and `nixos-rebuild switch` do.
fn switch(link: &Path, target: &str) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_switched_root_is_honoured_within_a_second() {
    let fx = Fixtures::load();
    fx.require(&["dep-top", "hello-exe"]);
    let (first, second) = (fx.path("dep-top"), fx.path("hello-exe"));
    let dir = Scratch::new("closure-switch");
    // profile -> profile-1-link -> store path: a chain like a profile's.
    let generation = dir.join("profile-1-link");
    switch(&generation, first);
    let profile = dir.join("profile");
    switch(&profile, "profile-1-link");
    for store in ["local", "daemon"] {
        switch(&generation, first);
        let (_server, addr) = serve(store, &[profile.to_str().unwrap()]);
        let status = |p: &str| request(addr, "GET", &format!("/{}.narinfo", hash_part(p))).status;
        assert_eq!((status(first), status(second)), (200, 404), "{store}");
        switch(&generation, second);
        let took = wait_until(
            format!("{store}: the switched root to be honoured"),
            SWITCH_BOUND,
            || (status(first), status(second)) == (404, 200),
        );
        eprintln!("{store}: switch honoured after {took:?}");
    }
}

/// A root that is not there yet (a profile not made), then names a path
/// the store does not have yet: nothing is served, with a warning, and the
/// path is served once it is added.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_root_that_appears_later_is_honoured() {
    let _fx = Fixtures::load();
    let dir = Scratch::new("closure-later");
    for store in ["local", "daemon"] {
        let file = dir.join(format!("later-{store}"));
        std::fs::write(&file, format!("closure test {:?}\n", Instant::now())).unwrap();
        // Where `nix-store --add` will put it, before it does.
        let hash = run(Command::new("nix-hash")
            .args(["--type", "sha256", "--base32"])
            .arg(&file));
        let name = format!("later-{store}");
        let path = run(Command::new("nix-store").args([
            "--print-fixed-path",
            "--recursive",
            "sha256",
            hash.trim(),
            &name,
        ]));
        let path = path.trim();
        let root = dir.join(format!("root-{store}"));
        let (_server, addr, log) = start_on_any_port(&[
            "--store",
            store,
            "--serve-closure-of",
            root.to_str().unwrap(),
        ]);
        assert!(log.lock().unwrap().contains("serving nothing from it"));
        let status = || request(addr, "GET", &format!("/{}.narinfo", hash_part(path))).status;
        let recomputed = |l: &str| l.matches("--serve-closure-of: now ").count();
        let before = recomputed(&log.lock().unwrap());
        std::os::unix::fs::symlink(path, &root).unwrap();
        // The watch has seen the root name the path (a closure computed
        // again, of nothing yet): the path is still refused.
        wait_log(&log, "the closure computed with the new root", |l| {
            recomputed(l) > before
        });
        assert_eq!(status(), 404, "{store}: not in the store yet");
        let added = run(Command::new("nix-store").arg("--add").arg(&file));
        assert_eq!(added.trim(), path);
        wait_until(
            format!("{store}: the added root to be served"),
            SWITCH_BOUND,
            || status() == 200,
        );
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn nix_copy_of_the_closure_works_and_outside_paths_are_refused() {
    let fx = Fixtures::load();
    fx.require(&["dep-top", "hello-exe"]);
    let (top, outside) = (fx.path("dep-top"), fx.path("hello-exe"));
    let work = Scratch::new("closure-copy");
    let root = work.join("result");
    std::os::unix::fs::symlink(top, &root).unwrap();
    let (_server, addr) = serve("auto", &[root.to_str().unwrap()]);
    let url = format!("http://{addr}");
    let copy = |path: &str, to: &str| {
        Command::new("nix")
            .args(["--extra-experimental-features", "nix-command", "copy"])
            .args(["--from", &url, "--to"])
            .arg(work.join(to))
            .args(["--no-check-sigs", path])
            // A fresh narinfo cache: Nix caches 404s (docs/protocols.md §4.4).
            .env("XDG_CACHE_HOME", work.join(format!("xdg-{to}")))
            .env_remove("NIX_REMOTE")
            .output()
            .unwrap()
    };
    let ok = copy(top, "inside");
    assert!(
        ok.status.success(),
        "nix copy of the closure failed: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let closure = run(Command::new("nix-store").args(["-qR", top]));
    for p in closure.lines() {
        let copied = work.join("inside").join(p.trim_start_matches('/'));
        assert!(
            copied.symlink_metadata().is_ok(),
            "{p} of the closure not copied"
        );
    }
    let refused = copy(outside, "outside");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "nix copy of {outside} worked");
    assert!(
        // Nix 2.8's words for a path no substituter has.
        err.contains("no substituter that can build it"),
        "refused for another reason: {err}"
    );
}
