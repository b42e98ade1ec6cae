//! The narinfo cache against real Nix changing the real store (issue 15):
//! a path deleted with `nix-store --delete` is 404 at once, and an
//! input-addressed path built again with other contents has its new NarHash
//! at once, through both backends. One worker, so every request meets the
//! cache the previous one filled. The same again in process, where the
//! test sees which requests the event loop answered by itself (a narinfo
//! reply known valid) and which reached the worker. Run through scripts/test.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

use common::binary::{start_on_any_port, start_on_any_port_with_env, Running};
use common::http::{get, head, Reply};
use common::in_process::{self, Harness};
use common::{
    hash_part, nix_path_info, poll_until, run, ChrootStore, Fixtures, Scratch, TestDaemon, ABSENT,
};
use nix_serve_sd::nix::signing::SecretKey;
use nix_serve_sd::store::daemon::STALE_BOUND;

fn serve(store: &str) -> (Running, SocketAddr) {
    let (running, addr, _) = start_on_any_port(&["--store", store, "--workers", "1"]);
    (running, addr)
}

/// The narinfo of `path` twice (the second from the cache): status and body.
fn narinfo_twice(addr: SocketAddr, path: &str) -> (u16, String) {
    let target = format!("/{}.narinfo", hash_part(path));
    let first = get(addr, &target);
    let second = get(addr, &target);
    assert_eq!(
        (first.status, first.text()),
        (second.status, second.text()),
        "{target}: the same store, the same reply"
    );
    (second.status, second.text())
}

fn nar_hash_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("NarHash: "))
        .unwrap_or_else(|| panic!("no NarHash in {text}"))
}

/// What Nix says the NarHash of `path` is, as a narinfo line.
fn nix_nar_hash(path: &str) -> String {
    let info = nix_path_info(None, path);
    format!("NarHash: {}", info.nar_hash.to_prefixed_nix32())
}

fn nix_store(args: &[&str]) -> String {
    run(Command::new("nix-store")
        .args(args)
        .env_remove("NIX_REMOTE"))
}

/// An input-addressed derivation whose output differs at every build. The
/// scratch directory in its environment makes the path this test's own.
fn nondeterministic(dir: &Path) -> std::path::PathBuf {
    let expr = dir.join("nondet.nix");
    std::fs::write(
        &expr,
        format!(
            r#"derivation {{
  name = "narinfo-cache-nondet";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo $RANDOM $$ $(date +%s%N) > $out" ];
  PATH = "/usr/bin:/bin";
  salt = "{}";
}}"#,
            dir.display()
        ),
    )
    .unwrap();
    expr
}

/// Builds `expr` with a GC root in `dir` (no collection elsewhere on the
/// machine can take it mid-test); the output path.
fn build(expr: &Path, dir: &Path) -> String {
    let root = dir.join("result");
    let out = run(Command::new("nix-build")
        .arg(expr)
        .arg("-o")
        .arg(&root)
        .env_remove("NIX_REMOTE"));
    out.trim().to_owned()
}

/// Removes the GC root and deletes `path`: committed when this returns.
fn delete(path: &str, dir: &Path) {
    let _ = std::fs::remove_file(dir.join("result"));
    nix_store(&["--delete", path]);
}

/// `nix-store --add` of a file whose contents only this test writes.
fn add_own_file(scratch: &Scratch, name: &str) -> String {
    let src = scratch.join(name);
    std::fs::write(&src, format!("narinfo cache {name} {:?}\n", scratch.path())).unwrap();
    nix_store(&["--add", src.to_str().unwrap()])
        .trim()
        .to_owned()
}

fn deleted_then_rebuilt(store: &str, tag: &str) {
    let _fx = Fixtures::load();
    let scratch = Scratch::new(tag);
    let (_server, addr) = serve(store);

    // A path, its narinfo, then gone: 404 at once.
    let added = &add_own_file(&scratch, "added.txt");
    let (status, text) = narinfo_twice(addr, added);
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with(&format!("StorePath: {added}\n")), "{text}");
    nix_store(&["--delete", added]);
    assert_eq!(
        narinfo_twice(addr, added),
        (404, "No such path.\n".into()),
        "{added} deleted"
    );

    // The same input-addressed path, built twice with other contents.
    let expr = nondeterministic(scratch.path());
    let first = build(&expr, scratch.path());
    let (status, text) = narinfo_twice(addr, &first);
    assert_eq!(status, 200, "{text}");
    let old = nar_hash_line(&text).to_owned();
    assert_eq!(old, nix_nar_hash(&first));
    delete(&first, scratch.path());
    assert_eq!(narinfo_twice(addr, &first).0, 404, "{first} deleted");
    let second = build(&expr, scratch.path());
    assert_eq!(second, first, "input-addressed: the same path");
    let new = nix_nar_hash(&second);
    assert_ne!(new, old, "the builder writes other contents each time");
    let (status, text) = narinfo_twice(addr, &second);
    assert_eq!(status, 200, "{text}");
    assert_eq!(nar_hash_line(&text), new, "the rebuilt path's NarHash");
    // The NAR URL the old narinfo named is gone too.
    let stale = format!(
        "/nar/{}-{}.nar",
        hash_part(&first),
        old.trim_start_matches("NarHash: sha256:")
    );
    assert_eq!(get(addr, &stale).status, 404, "{stale}");
    delete(&second, scratch.path());
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn local_backend_sees_deletes_and_rebuilds_at_once() {
    deleted_then_rebuilt("local", "cache-local");
}

/// The machine's daemon: its socket is in the state directory, so the
/// server watches the daemon's database (exact).
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn daemon_backend_sees_deletes_and_rebuilds_at_once() {
    deleted_then_rebuilt("daemon", "cache-daemon");
}

/// A daemon whose database the server cannot show to be the daemon's: the
/// state directory it is told of holds another store (a chroot store's), so
/// it must not watch that, and remembers answers for at most `STALE_BOUND`
/// (README "Caching"). After that long a deleted path is 404.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn daemon_without_its_database_forgets_within_the_bound() {
    let _fx = Fixtures::load();
    let daemon = TestDaemon::start();
    let other = ChrootStore::new("cache-other");
    other.add("other.txt", b"another store's newest path\n");
    let other_state = other.root().join("nix/var/nix");
    let scratch = Scratch::new("cache-bound");
    let uri = format!("unix://{}", daemon.socket().display());
    let (_server, addr, log) = start_on_any_port_with_env(
        &["--store", &uri, "--workers", "1"],
        &[("NIX_STATE_DIR", other_state.to_str().unwrap())],
    );
    assert!(
        log.lock()
            .unwrap()
            .contains("is not the same in the daemon's store"),
        "the chroot store's database was not refused"
    );
    let added = &add_own_file(&scratch, "bound.txt");
    assert_eq!(narinfo_twice(addr, added).0, 200);
    nix_store(&["--delete", added]);
    // Forgotten as soon as it is, and by the bound at the latest.
    let target = format!("/{}.narinfo", hash_part(added));
    poll_until(STALE_BOUND + STALE_BOUND / 10, || {
        get(addr, &target).status == 404
    });
    assert_eq!(narinfo_twice(addr, added).0, 404, "{added} deleted");
}

/// A daemon on a socket of its own (not in a state directory) still serves
/// the machine's store: the server finds and checks the machine's database
/// and is exact.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn daemon_on_its_own_socket_is_watched_through_the_machines_database() {
    let _fx = Fixtures::load();
    let daemon = TestDaemon::start();
    let scratch = Scratch::new("cache-own-socket");
    let uri = format!("unix://{}", daemon.socket().display());
    let (_server, addr, log) = start_on_any_port(&["--store", &uri, "--workers", "1"]);
    assert!(!log.lock().unwrap().contains("narinfo cache:"), "{log:?}");
    let added = &add_own_file(&scratch, "own.txt");
    assert_eq!(narinfo_twice(addr, added).0, 200);
    nix_store(&["--delete", added]);
    assert_eq!(narinfo_twice(addr, added).0, 404, "{added} deleted");
}

/// Requests the worker was asked so far.
fn asks(h: &Harness) -> usize {
    h.asks.load(Ordering::SeqCst)
}

fn ask(h: &Harness, target: &str, head_only: bool) -> Reply {
    if head_only {
        head(h.addr, target)
    } else {
        get(h.addr, target)
    }
}

/// Asks for `target` (GET, or HEAD with `head_only`) until the event loop
/// answers it by itself: the store it shares with others may commit now
/// and then, and each commit rightly sends the next request to the worker.
fn from_the_loop(h: &Harness, target: &str, head_only: bool) -> Reply {
    for _ in 0..50 {
        let before = asks(h);
        let reply = ask(h, target, head_only);
        if asks(h) == before {
            return reply;
        }
    }
    panic!("{target}: never answered by the event loop in 50 requests");
}

/// The worker's reply to a `target` not asked for before, then the loop's.
fn worker_then_loop(h: &Harness, target: &str, head_only: bool) -> (Reply, Reply) {
    let before = asks(h);
    let first = ask(h, target, head_only);
    assert!(
        asks(h) > before,
        "{target}: the first request is the worker's"
    );
    (first, from_the_loop(h, target, head_only))
}

/// The same reply but for the `Date` header: status, headers in order, body.
fn assert_same_but_date(a: &Reply, b: &Reply, what: &str) {
    let headers = |r: &Reply| {
        (r.headers.iter())
            .filter(|(n, _)| !n.eq_ignore_ascii_case("date"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(a.status, b.status, "{what}");
    assert_eq!(headers(a), headers(b), "{what}");
    assert_eq!(a.body, b.body, "{what}");
    assert!(
        a.header("Date").is_some() && b.header("Date").is_some(),
        "{what}"
    );
}

fn text(r: &Reply) -> String {
    String::from_utf8(r.body.clone()).unwrap()
}

/// Through the event loop's own answers: a hit is the worker's reply byte
/// for byte (GET, HEAD, 404), and a delete or a rebuild committed after a
/// hit is seen by the very next request.
fn loop_answers_exactly(uri: &str, tag: &str) {
    let fx = Fixtures::load();
    let scratch = Scratch::new(tag);
    let key = SecretKey::from_file(&fx.key("secret")).unwrap();
    let h = in_process::start(in_process::opener(uri), 1, vec![key], in_process::limits());

    let added = &add_own_file(&scratch, "loop.txt");
    let target = format!("/{}.narinfo", hash_part(added));
    let (miss, hit) = worker_then_loop(&h, &target, false);
    assert_eq!(miss.status, 200, "{}", text(&miss));
    assert!(text(&miss).contains("\nSig: "), "signed: {}", text(&miss));
    assert_same_but_date(&miss, &hit, "GET, the worker's and the loop's");
    let (miss, hit) = worker_then_loop(&h, &format!("/{}.narinfo", ABSENT), false);
    assert_eq!(miss.status, 404);
    assert_same_but_date(&miss, &hit, "404, the worker's and the loop's");
    let other = &add_own_file(&scratch, "loop-head.txt");
    let (miss, hit) = worker_then_loop(&h, &format!("/{}.narinfo", hash_part(other)), true);
    assert_eq!(miss.status, 200);
    assert_same_but_date(&miss, &hit, "HEAD, the worker's and the loop's");
    nix_store(&["--delete", other]);

    // Deleted after the loop answered it: 404 at once.
    nix_store(&["--delete", added]);
    let gone = get(h.addr, &target);
    assert_eq!((gone.status, text(&gone)), (404, "No such path.\n".into()));
    assert_eq!(
        from_the_loop(&h, &target, false).status,
        404,
        "the loop's 404"
    );

    // Rebuilt with other contents after the loop answered it: the new
    // NarHash at once.
    let expr = nondeterministic(scratch.path());
    let first = build(&expr, scratch.path());
    let target = format!("/{}.narinfo", hash_part(&first));
    let (_, hit) = worker_then_loop(&h, &target, false);
    let old = nar_hash_line(&text(&hit)).to_owned();
    assert_eq!(old, nix_nar_hash(&first));
    delete(&first, scratch.path());
    assert_eq!(get(h.addr, &target).status, 404, "{first} deleted");
    assert_eq!(
        from_the_loop(&h, &target, false).status,
        404,
        "the loop's 404"
    );
    let second = build(&expr, scratch.path());
    assert_eq!(second, first, "input-addressed: the same path");
    let new = nix_nar_hash(&second);
    assert_ne!(new, old, "the builder writes other contents each time");
    let rebuilt = get(h.addr, &target);
    assert_eq!(rebuilt.status, 200, "{}", text(&rebuilt));
    assert_eq!(
        nar_hash_line(&text(&rebuilt)),
        new,
        "the rebuilt path's NarHash"
    );
    delete(&second, scratch.path());
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn local_backend_loop_answers_exactly() {
    loop_answers_exactly("local", "cache-loop-local");
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn daemon_backend_loop_answers_exactly() {
    loop_answers_exactly("daemon", "cache-loop-daemon");
}
