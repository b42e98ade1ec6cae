//! `--htpasswd` (issue 23) against the built binary, the real store, a user
//! file made by Apache's own `htpasswd -B`, curl, and a real Nix client
//! reading its credentials from a `netrc-file`:
//! - `nix copy --from` with the netrc works; without it, it fails with the
//!   401 in Nix's output; with a wrong password or an unknown user too;
//! - with `--serve-closure-of`, anonymous clients copy the closure and get
//!   an outside path refused as an absent one, users copy both;
//! - every malformed `Authorization`, an unknown user and a wrong password
//!   get the same 401 (`WWW-Authenticate`, `no-store`), on every route and
//!   for HEAD too, while `/nix-cache-info` stays public; the event loop's
//!   narinfo answers never reach a request whose header did not verify;
//! - an unknown user and a wrong password take the same time (medians of
//!   interleaved tries within 20 %);
//! - the access log names the user, escaped.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use common::binary::{start_on_any_port, wait_log, Running};
use common::http::{Reply, Request};
use common::routes::{every_route, nar_hash};
use common::{hash_part, htpasswd, run, Fixtures, Scratch, ABSENT};

const LIMIT: Duration = Duration::from_secs(60);

/// `Basic base64(user:password)`, as curl and Nix send it.
fn basic(user_password: &str) -> String {
    format!("Basic {}", STANDARD.encode(user_password))
}

/// One request on a fresh connection, with `Authorization: <auth>`.
fn ask(addr: SocketAddr, method: &str, target: &str, auth: Option<&str>) -> Reply {
    let request = Request::new(method, target);
    match auth {
        Some(a) => request.header("Authorization", a).send(addr),
        None => request.send(addr),
    }
}

fn assert_unauthorized(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.head);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some("Basic realm=\"nix-serve\""),
        "{what}"
    );
    assert_eq!(r.header("Cache-Control"), Some("no-store"), "{what}");
}

/// Every route of a path, and the routes that are no path's.
fn all_routes(path: &str) -> Vec<String> {
    let mut all = every_route(hash_part(path), &nar_hash(path));
    all.extend([
        format!("/{ABSENT}.narinfo"),
        "/metrics".to_owned(),
        "/no/such/route".to_owned(),
    ]);
    all
}

#[test]
#[ignore = "needs real Nix, fixtures and htpasswd: run scripts/test"]
fn every_route_asks_for_credentials_but_nix_cache_info() {
    let fx = Fixtures::load();
    let path = fx.path("dep-top");
    let work = Scratch::new("auth-routes");
    let file = htpasswd(work.path(), &[("alice", "secret"), ("bob", "hunter2")]);
    let (_server, addr, _log) = start_on_any_port(&[
        "--htpasswd",
        file.to_str().unwrap(),
        "--metrics-route",
        "--workers",
        "2",
    ]);
    let good = basic("alice:secret");
    // Past the 1 KiB the server reads of the header, within the head's 16 KiB.
    let huge = format!("Basic {}", "QUFB".repeat(300));
    let refused: Vec<(&str, String)> = vec![
        ("not Basic", "Bearer YWxpY2U6c2VjcmV0".to_owned()),
        ("bad base64", "Basic !!!not-base64!!!".to_owned()),
        ("no colon", basic("alicesecret")),
        ("huge", huge),
        ("empty", String::new()),
        ("unknown user", basic("mallory:secret")),
        ("wrong password", basic("alice:hunter2")),
        ("another user's password", basic("bob:secret")),
    ];
    let narinfo = format!("/{}.narinfo", hash_part(path));
    // First a user, so that the loop has the narinfo to answer by itself:
    // it must not answer the refused ones with it.
    assert_eq!(ask(addr, "GET", &narinfo, Some(&good)).status, 200);
    assert_eq!(ask(addr, "GET", &narinfo, Some(&good)).status, 200);
    let first = ask(addr, "GET", &narinfo, None);
    assert_unauthorized(&first, "no header");
    assert_eq!(first.body, b"Unauthorized.\n");
    for method in ["GET", "HEAD"] {
        for target in all_routes(path) {
            let none = ask(addr, method, &target, None);
            assert_unauthorized(&none, &format!("{method} {target} without a header"));
            if method == "HEAD" {
                assert!(none.body.is_empty(), "a body on HEAD {target}");
            }
            for (what, value) in &refused {
                let r = ask(addr, method, &target, Some(value));
                assert_eq!(
                    r.without_date(),
                    none.without_date(),
                    "{method} {target}, {what}: not the same 401"
                );
            }
            let user = ask(addr, method, &target, Some(&good));
            assert_ne!(user.status, 401, "{method} {target} with credentials");
            assert!(user.status != 503, "{method} {target}: {}", user.head);
        }
        // The public route, with or without credentials, good or bad.
        for auth in [None, Some(good.as_str()), Some("Basic !!")] {
            let r = ask(addr, method, "/nix-cache-info", auth);
            assert_eq!(r.status, 200, "{method} /nix-cache-info with {auth:?}");
        }
    }
    // With credentials, each route answers what it answers without
    // --htpasswd, but that no shared cache may keep it.
    let (_open, open_addr, _) = start_on_any_port(&["--metrics-route", "--workers", "2"]);
    let public = ask(open_addr, "GET", &narinfo, None);
    assert_eq!(public.header("Cache-Control"), Some("public, max-age=3600"));
    for method in ["GET", "HEAD"] {
        for target in all_routes(path).into_iter().filter(|t| t != "/metrics") {
            let user = ask(addr, method, &target, Some(&good));
            let mut open = ask(open_addr, method, &target, None).without_date();
            open.1 = open
                .1
                .replace("Cache-Control: public", "Cache-Control: private");
            assert_eq!(
                user.without_date(),
                open,
                "{method} {target}: a user's reply differs from the open server's"
            );
        }
    }
    // curl's own header (`-u`), right and wrong.
    let curl = |user: &str| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", user])
            .arg(format!("http://{addr}{narinfo}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl("alice:secret"), "200");
    assert_eq!(curl("bob:hunter2"), "200");
    assert_eq!(curl("alice:wrong"), "401");
    assert_eq!(curl("nobody:secret"), "401");
}

/// `nix copy --from` as a user: the netrc-file Nix reads (nix.conf's
/// `netrc-file`, here given with `--option`). With `--debug` when `debug`:
/// the only place Nix 2.8 shows a refusal's HTTP status.
fn nix_copy(url: &str, path: &str, to: &Path, netrc: Option<&Path>, debug: bool) -> Output {
    let mut cmd = Command::new("nix");
    if debug {
        cmd.arg("--debug");
    }
    cmd.args(["--extra-experimental-features", "nix-command", "copy"])
        .args(["--from", url, "--to"])
        .arg(to)
        .args(["--no-check-sigs", path])
        // A fresh narinfo cache for each copy: Nix caches 404s.
        .env("XDG_CACHE_HOME", to.with_extension("xdg"))
        .env_remove("NIX_REMOTE");
    // Always a netrc option, so that a machine-wide one never counts.
    let none = to.with_extension("no-netrc");
    std::fs::write(&none, "").unwrap();
    cmd.args(["--option", "netrc-file"])
        .arg(netrc.unwrap_or(&none));
    cmd.output().unwrap()
}

fn netrc(dir: &Path, name: &str, login: &str, password: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(
        &file,
        format!("machine 127.0.0.1 login {login} password {password}\n"),
    )
    .unwrap();
    file
}

fn assert_copied(out: &Output, path: &str, to: &Path) {
    assert!(
        out.status.success(),
        "nix copy of {path} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let closure = run(Command::new("nix-store").args(["-qR", path]));
    for p in closure.lines() {
        let copied = to.join(p.trim_start_matches('/'));
        assert!(copied.symlink_metadata().is_ok(), "{p} not copied");
    }
}

#[test]
#[ignore = "needs real Nix, fixtures and htpasswd: run scripts/test"]
fn nix_copy_with_a_netrc_file() {
    let fx = Fixtures::load();
    let path = fx.path("dep-top");
    let work = Scratch::new("auth-nix");
    let file = htpasswd(work.path(), &[("alice", "secret")]);
    let access = work.join("access.log");
    let (_server, addr, _log) = start_on_any_port(&[
        "--htpasswd",
        file.to_str().unwrap(),
        "--access-log",
        access.to_str().unwrap(),
    ]);
    let url = format!("http://{addr}");

    let right = netrc(work.path(), "right", "alice", "secret");
    let to = work.join("with");
    assert_copied(&nix_copy(&url, path, &to, Some(&right), false), path, &to);

    for (what, netrc) in [
        ("no netrc", None),
        (
            "a wrong password",
            Some(netrc(work.path(), "wrong", "alice", "hunter2")),
        ),
        (
            "an unknown user",
            Some(netrc(work.path(), "unknown", "bob", "secret")),
        ),
    ] {
        let to = work.join(what.replace(' ', "-"));
        let out = nix_copy(&url, path, &to, netrc.as_deref(), true);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "nix copy with {what} worked");
        // Nix 2.8 takes a 401 (as a 403) for "not in this cache": it says
        // so in its error, and the 401 itself in its debug lines.
        let narinfo = format!(
            "/{}.narinfo'; curl status = 0, HTTP status = 401",
            hash_part(path)
        );
        assert!(
            err.contains(&narinfo),
            "{what}: no 401 in Nix's output: {err}"
        );
        assert!(
            err.contains("no substituter that can build it"),
            "{what}: {err}"
        );
    }
    let log = std::fs::read_to_string(&access).unwrap();
    let nar = format!("/nar/{}", hash_part(path));
    assert!(
        log.lines()
            .any(|l| l.contains(" - alice [") && l.contains(&nar) && l.contains("\" 200 ")),
        "no NAR line for alice in the access log:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(" - - [") && l.contains("\" 401 ")),
        "no anonymous 401 in the access log:\n{log}"
    );
}

#[test]
#[ignore = "needs real Nix, fixtures and htpasswd: run scripts/test"]
fn with_serve_closure_of_anonymous_clients_get_the_closure_and_users_the_store() {
    let fx = Fixtures::load();
    let (top, outside) = (fx.path("dep-top"), fx.path("hello-exe"));
    let work = Scratch::new("auth-closure");
    let file = htpasswd(work.path(), &[("alice", "secret")]);
    let (_server, addr, _log) = start_on_any_port(&[
        "--htpasswd",
        file.to_str().unwrap(),
        "--serve-closure-of",
        top,
    ]);
    let url = format!("http://{addr}");
    let good = basic("alice:secret");

    // Narinfos first, in both orders, so that neither view's remembered
    // replies (the workers' or the loop's) leak into the other's.
    let outside_ni = format!("/{}.narinfo", hash_part(outside));
    let inside_ni = format!("/{}.narinfo", hash_part(top));
    let absent = ask(addr, "GET", &format!("/{ABSENT}.narinfo"), None).without_date();
    for _ in 0..2 {
        assert_eq!(ask(addr, "GET", &outside_ni, Some(&good)).status, 200);
        let anonymous = ask(addr, "GET", &outside_ni, None);
        assert_eq!(absent, anonymous.without_date(), "outside, anonymous");
        // The closure is public; what a user sees, no shared cache keeps.
        let anonymous = ask(addr, "GET", &inside_ni, None);
        assert_eq!(anonymous.status, 200);
        assert_eq!(
            anonymous.header("Cache-Control"),
            Some("public, max-age=3600")
        );
        let user = ask(addr, "GET", &inside_ni, Some(&good));
        assert_eq!(user.status, 200);
        assert_eq!(user.header("Cache-Control"), Some("private, max-age=3600"));
        assert_eq!(user.body, anonymous.body);
    }
    // A wrong password is refused even for the closure.
    assert_unauthorized(
        &ask(addr, "GET", &inside_ni, Some(&basic("alice:wrong"))),
        "wrong password, inside",
    );

    let anon = work.join("anon-inside");
    assert_copied(&nix_copy(&url, top, &anon, None, false), top, &anon);
    let out = nix_copy(&url, outside, &work.join("anon-outside"), None, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "anonymous nix copy of {outside} worked"
    );
    // Nix 2.8's words for a path no substituter has: what an absent path gets.
    assert!(err.contains("no substituter that can build it"), "{err}");

    let right = netrc(work.path(), "right", "alice", "secret");
    for (path, to) in [(top, "user-inside"), (outside, "user-outside")] {
        let to = work.join(to);
        assert_copied(&nix_copy(&url, path, &to, Some(&right), false), path, &to);
    }
}

/// The explicit ask: a refusal takes as long for an unknown user as
/// for a known one with a wrong password (the unknown one is checked
/// against a dummy hash of the same cost). Interleaved, so that a change of
/// load hits both kinds alike; medians, so that a stray slow try does not
/// count; a generous sample.
#[test]
#[ignore = "needs real Nix, fixtures and htpasswd: run scripts/test"]
fn an_unknown_user_takes_as_long_as_a_wrong_password() {
    let _fx = Fixtures::load();
    let work = Scratch::new("auth-timing");
    let file = htpasswd(work.path(), &[("alice", "secret")]);
    let (_server, addr, _log) =
        start_on_any_port(&["--htpasswd", file.to_str().unwrap(), "--workers", "2"]);
    let target = format!("/{ABSENT}.narinfo");
    let unknown = basic("mallory:secret");
    let wrong = basic("alice:wrong-password");
    let time = |auth: &str| {
        let t = Instant::now();
        assert_eq!(ask(addr, "GET", &target, Some(auth)).status, 401);
        t.elapsed()
    };
    // Warm up: the first connections start the workers.
    for _ in 0..3 {
        time(&unknown);
        time(&wrong);
    }
    const TRIES: usize = 50;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..TRIES {
        // Alternate which goes first, too.
        if i % 2 == 0 {
            a.push(time(&unknown));
            b.push(time(&wrong));
        } else {
            b.push(time(&wrong));
            a.push(time(&unknown));
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (ma, mb) = (median(&mut a), median(&mut b));
    let ratio = ma.as_secs_f64() / mb.as_secs_f64();
    println!("median of {TRIES}: unknown user {ma:?}, wrong password {mb:?}, ratio {ratio:.3}");
    assert!(
        (1.0 / 1.2..=1.2).contains(&ratio),
        "unknown user {ma:?} vs wrong password {mb:?}: ratio {ratio:.3}"
    );
    // And both did the work of bcrypt: far slower than a malformed header,
    // which runs none. (Not a timing bound: a check that the dummy ran.)
    let mut m: Vec<Duration> = (0..9).map(|_| time("Basic !!")).collect();
    let mm = median(&mut m);
    assert!(mm < mb, "a malformed header {mm:?} vs bcrypt {mb:?}");
}

#[test]
#[ignore = "needs real Nix, fixtures and htpasswd: run scripts/test"]
fn the_access_log_names_the_user_escaped() {
    let fx = Fixtures::load();
    let path = fx.path("dep-leaf");
    let work = Scratch::new("auth-log");
    let file = htpasswd(work.path(), &[("alice", "secret"), ("qu\"o\\te", "pw")]);
    let access = work.join("access.log");
    let (_server, addr, log) = start_on_any_port(&[
        "--htpasswd",
        file.to_str().unwrap(),
        "--access-log",
        access.to_str().unwrap(),
    ]);
    let narinfo = format!("/{}.narinfo", hash_part(path));
    for _ in 0..2 {
        assert_eq!(
            ask(addr, "GET", &narinfo, Some(&basic("qu\"o\\te:pw"))).status,
            200
        );
    }
    assert_eq!(
        ask(addr, "GET", &narinfo, Some(&basic("alice:secret"))).status,
        200
    );
    assert_eq!(
        ask(addr, "GET", &narinfo, Some(&basic("alice:nope"))).status,
        401
    );
    common::wait_until("four access lines", LIMIT, || {
        std::fs::read_to_string(&access).is_ok_and(|l| l.lines().count() >= 4)
    });
    let lines = std::fs::read_to_string(&access).unwrap();
    let users: Vec<&str> = lines
        .lines()
        .map(|l| l.split(' ').nth(2).unwrap())
        .collect();
    // The second request of qu"o\te is the loop's own answer: named too.
    assert_eq!(
        users,
        ["qu\\x22o\\x5Cte", "qu\\x22o\\x5Cte", "alice", "-"],
        "{lines}"
    );
    // The error log says why, never the password.
    let said = wait_log(&log, "the refusal", |l| l.contains("wrong password"));
    assert!(said.contains("wrong password for user \"alice\""), "{said}");
    assert!(!said.contains("nope"), "{said}");
}

/// A file that is not all bcrypt stops the start: status 78, one line
/// naming the file and the line, before anything is served.
#[test]
fn a_bad_user_file_stops_the_start_naming_its_line() {
    let work = Scratch::new("auth-bad");
    let file = work.join("htpasswd");
    std::fs::write(
        &file,
        "alice:$2y$05$Fc06vfg4ritNGQONh1LBrOOF76FbcCN13crOGFN43qNR2p4vVkMk6\n\
         bob:$apr1$ar1aCuvY$O2g17bm/1vBygLdhO14wG0\n",
    )
    .unwrap();
    let missing = work.join("missing");
    for (f, said) in [
        (
            &file,
            "line 2: user \"bob\": Apache MD5 ($apr1$) hashes are not accepted",
        ),
        (&missing, "No such file"),
    ] {
        let mut server = Running::start(
            &["--listen", "127.0.0.1:0", "--htpasswd", f.to_str().unwrap()],
            std::process::Stdio::piped(),
        );
        let status = common::binary::wait_exit(&mut server.child, LIMIT).expect("exits");
        let mut err = String::new();
        server
            .child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(78), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("--htpasswd {}: ", f.display())) && err.contains(said),
            "{err}"
        );
    }
}
