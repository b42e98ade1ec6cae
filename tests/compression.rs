//! `--compression zstd` against a real Nix client: narinfos point to
//! `.nar.zst`, `nix copy --from` decompresses to `nix-store --dump`'s bytes,
//! and the plain `.nar` URLs keep serving the NAR itself (ranges too);
//! `Accept-Encoding: zstd` is honoured only when asked for. Run through
//! scripts/test.

mod common;

use std::process::Command;

use common::binary::{start_on_any_port, tmpdir, wait_log};
use common::http::{get, Request};
use common::{hash_part, nix_fresh_cache, nix_store_dump, output_of, succeeded, Fixtures};

fn url_of(narinfo: &str) -> &str {
    narinfo
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .expect("URL line")
}

fn outputs(fx: &Fixtures) -> Vec<&str> {
    fx.full_paths()
        .into_iter()
        .filter(|p| !p.ends_with(".drv"))
        .collect()
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn nix_copy_from_a_zstd_cache() {
    let fx = Fixtures::load();
    let (_server, addr, log) =
        start_on_any_port(&["--compression", "zstd:3", "--access-log", "/dev/stderr"]);
    let work = tmpdir("zstd-copy");
    let dst = work.join("store");
    let paths = outputs(&fx);
    let url = format!("http://{addr}");
    let mut args = vec![
        "copy",
        "--from",
        &url,
        "--to",
        dst.to_str().unwrap(),
        "--no-check-sigs",
    ];
    args.extend(&paths);
    succeeded(
        &nix_fresh_cache("nix", &args, &work.join("xdg")),
        "nix copy --from",
    );
    for p in &paths {
        let copied = output_of(Command::new("nix").args([
            "store",
            "dump-path",
            "--store",
            dst.to_str().unwrap(),
            p,
        ]));
        assert!(
            copied == nix_store_dump(p),
            "{p}: copied NAR differs from nix-store --dump"
        );
    }
    // The client took the compressed URLs.
    let log = wait_log(&log, "a NAR request", |t| t.contains("GET /nar/"));
    let nars: Vec<&str> = log.lines().filter(|l| l.contains("GET /nar/")).collect();
    assert!(!nars.is_empty(), "{log}");
    assert!(
        nars.iter()
            .all(|l| l.contains(".nar.zst ") && l.contains("\" 200 ")),
        "{nars:#?}"
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn compressed_and_plain_urls() {
    let fx = Fixtures::load();
    let (_server, addr, _) = start_on_any_port(&["--compression", "zstd"]);
    for path in outputs(&fx) {
        let want = nix_store_dump(path);
        let info = get(addr, &format!("/{}.narinfo", hash_part(path))).text();
        assert!(info.contains("\nCompression: zstd\n"), "{info}");
        assert!(!info.contains("FileHash") && !info.contains("FileSize"));
        let zst = url_of(&info);
        assert!(zst.ends_with(".nar.zst"), "{info}");
        let r = get(addr, &format!("/{zst}"));
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("Content-Encoding"), None);
        assert!(zstd::decode_all(&r.body[..]).unwrap() == want, "{path}");
        // HTTP/1.0: no chunks, the close ends the body.
        let r = Request::get(&format!("/{zst}")).http10().send(addr);
        assert!(zstd::decode_all(&r.body[..]).unwrap() == want, "{path}");
        assert_eq!(Request::head(&format!("/{zst}")).send(addr).status, 200);

        let plain = format!("/{}", zst.strip_suffix(".zst").unwrap());
        // Plain curl and Nix 2.8 send no Accept-Encoding: identity bytes.
        let r = get(addr, &plain);
        assert_eq!(r.header("Content-Encoding"), None);
        assert_eq!(r.header("Vary"), Some("Accept-Encoding"));
        assert!(r.body == want, "{path}");
        let r = (Request::get(&plain))
            .header("Accept-Encoding", "gzip, zstd")
            .send(addr);
        assert_eq!(r.header("Content-Encoding"), Some("zstd"), "{path}");
        assert!(zstd::decode_all(&r.body[..]).unwrap() == want, "{path}");
        let r = (Request::get(&plain))
            .header("Accept-Encoding", "gzip")
            .send(addr);
        assert_eq!(r.header("Content-Encoding"), None);
        // A range names bytes of the NAR itself, compression or not.
        if want.len() > 10 {
            let ranged = [("Accept-Encoding", "zstd"), ("Range", "bytes=3-9")];
            let r = Request::get(&plain).headers(&ranged).send(addr);
            assert_eq!((r.status, r.header("Content-Encoding")), (206, None));
            assert_eq!(r.body, &want[3..10]);
        }
    }
}

/// Without the flag nothing changes: nix-serve's narinfo, and identity
/// bytes even for a client asking for zstd.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn off_by_default() {
    let fx = Fixtures::load();
    let (_server, addr, _) = start_on_any_port(&[]);
    let path = fx.path("compressible-10M");
    let info = get(addr, &format!("/{}.narinfo", hash_part(path))).text();
    assert!(info.contains("\nCompression: none\n"), "{info}");
    let url = url_of(&info);
    assert!(url.ends_with(".nar"), "{info}");
    let r = (Request::get(&format!("/{url}")))
        .header("Accept-Encoding", "zstd")
        .send(addr);
    assert_eq!(
        (r.header("Content-Encoding"), r.header("Vary")),
        (None, None)
    );
    assert!(r.body == nix_store_dump(path));
    // No compressed route at all: an encoder costs memory (README
    // "Limits"), and only an operator who turned compression on pays it.
    let r = get(addr, &format!("/{url}.zst"));
    assert_eq!(r.status, 404);
}

/// Clients that ask for a `.nar.zst` and then read nothing hold an encoder
/// each for as long as they stay (measured before the budget: 1,024 of
/// them held 1,343 MiB at level 1, and 64 held 5,268 MiB at level 19).
/// Now the encoders alive share a budget (README "Limits"): at level 19,
/// capped at 40 MiB each, six fit in 256 MiB; the next clients get a 503
/// at once, the server's memory stays bounded, and a slot is free again as
/// soon as a stalled client goes.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn stalled_compressed_downloads_are_bounded() {
    use std::time::Duration;
    let fx = Fixtures::load();
    let (server, addr, _) = start_on_any_port(&["--compression", "zstd:19"]);
    let path = fx.path("big-10M");
    let info = get(addr, &format!("/{}.narinfo", hash_part(path))).text();
    let url = url_of(&info).to_owned();
    // Each reads the head of its reply and nothing more.
    let ask = || {
        let (reply, s) = Request::get(&format!("/{url}")).keep_alive().open(addr);
        (reply.status, s)
    };
    let mut stalled = Vec::new();
    let mut refused = 0;
    for _ in 0..10 {
        let (status, s) = ask();
        match status {
            200 => stalled.push(s),
            503 => refused += 1,
            other => panic!("status {other}"),
        }
    }
    assert_eq!((stalled.len(), refused), (6, 4));
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    eprintln!("RSS {rss_kb} kB with six encoders at level 19");
    assert!(
        rss_kb < 320 * 1024,
        "RSS {rss_kb} kB with six encoders at level 19"
    );
    drop(stalled.pop());
    common::wait_until(
        "a share of the budget back",
        Duration::from_secs(30),
        || {
            let (status, s) = ask();
            if status == 200 {
                stalled.push(s);
            }
            status == 200
        },
    );
}
