//! `/log/…` against a real Nix client: derivations built here with a known
//! log line, once with `compress-build-log = false` (a plain log) and once
//! with `true` (`.bz2`), read back with `nix log --store http://…`. Run
//! through scripts/test.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::binary::{start_on_any_port, tmpdir};
use common::http::{get, Request};
use common::{hash_part, nix_fresh_cache, run, succeeded, ChrootStore, Fixtures};

/// A fresh derivation (the nonce makes it new, so it really builds) whose
/// log is `line` and one more line: its `.drv` and output paths.
fn build(line: &str, compress: bool, xdg: &Path) -> (String, String) {
    let expr = format!(
        r#"derivation {{ name = "routes-log"; system = builtins.currentSystem;
           builder = "/bin/sh"; args = [ "-c" "echo '{line}'; echo second line; echo > $out" ];
           PATH = "/usr/bin:/bin"; }}"#
    );
    let compress = if compress { "true" } else { "false" };
    let out = succeeded(
        &nix_fresh_cache(
            "nix-build",
            &[
                "--no-out-link",
                "--option",
                "compress-build-log",
                compress,
                "-E",
                &expr,
            ],
            xdg,
        ),
        "nix-build",
    );
    let out = out.trim().to_owned();
    let drv = run(Command::new("nix-store").args(["-q", "--deriver", &out]))
        .trim()
        .to_owned();
    (drv, out)
}

fn nonce() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}-{}", std::process::id(), t.as_nanos())
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap()
}

fn check_log(addr: SocketAddr, drv: &str, out: &str, want: &str, bz2: bool, xdg: &Path) {
    // Where Nix put it, so the test knows it checks what it says.
    let b = base(drv);
    let file = format!("/nix/var/log/nix/drvs/{}/{}", &b[..2], &b[2..]);
    let file = if bz2 { format!("{file}.bz2") } else { file };
    assert!(Path::new(&file).is_file(), "Nix wrote no {file}");

    let url = format!("http://{addr}");
    for path in [drv, out] {
        let got = succeeded(
            &nix_fresh_cache("nix", &["log", "--store", &url, path], xdg),
            "nix log",
        );
        assert_eq!(got, want, "nix log {path}");
    }
    for target in [
        format!("/log/{b}"),
        format!("/log/{}", hash_part(drv)),
        format!("/log/{}", base(out)),
        format!("/log/{}", hash_part(out)),
    ] {
        let r = get(addr, &target);
        assert_eq!((r.status, r.text().as_str()), (200, want), "{target}");
        assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
        // A plain log has a length; a .bz2 one streams decompressed.
        if bz2 {
            assert_eq!(r.header("Transfer-Encoding"), Some("chunked"), "{target}");
        } else {
            assert_eq!(
                r.header("Content-Length"),
                Some(want.len().to_string().as_str())
            );
        }
        let h = Request::head(&target).send(addr);
        assert_eq!(h.status, 200);
        assert_eq!(h.header("Content-Length"), r.header("Content-Length"));
        // A plain log takes a range (its end, here); a .bz2 one is whole.
        let tail = Request::get(&target)
            .header("Range", "bytes=-12")
            .send(addr);
        if bz2 {
            assert_eq!((tail.status, tail.text().as_str()), (200, want));
        } else {
            assert_eq!(tail.status, 206, "{target}");
            assert_eq!(tail.text(), want[want.len() - 12..]);
            assert_eq!(
                tail.header("Content-Range"),
                Some(
                    format!(
                        "bytes {}-{}/{}",
                        want.len() - 12,
                        want.len() - 1,
                        want.len()
                    )
                    .as_str()
                )
            );
        }
        // HTTP/1.0 has no chunks: the body ends with the connection.
        let old = Request::get(&target).http10().send(addr);
        assert_eq!((old.status, old.text().as_str()), (200, want), "{target}");
        assert_eq!(old.header("Transfer-Encoding"), None);
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn nix_log_reads_plain_and_bz2_logs() {
    Fixtures::load();
    let work = tmpdir("routes-log");
    let xdg = work.join("xdg");
    let n = nonce();
    let plain_line = format!("nix-serve-sd plain log {n}");
    let bz2_line = format!("nix-serve-sd bz2 log {n}");
    let plain = build(&plain_line, false, &xdg);
    let bz2 = build(&bz2_line, true, &xdg);
    for store in [&[][..], &["--store", "daemon"][..]] {
        let (_server, addr, _) = start_on_any_port(store);
        check_log(
            addr,
            &plain.0,
            &plain.1,
            &format!("{plain_line}\nsecond line\n"),
            false,
            &xdg,
        );
        check_log(
            addr,
            &bz2.0,
            &bz2.1,
            &format!("{bz2_line}\nsecond line\n"),
            true,
            &xdg,
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// Nothing outside `<log dir>/drvs` is reachable, whatever the URL: a chroot
/// store whose log dir holds a symlink to a secret, and URLs that try to
/// climb out.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn nothing_outside_the_log_directory() {
    let store = ChrootStore::new("routes-log-chroot");
    let valid = store.add("some-file", b"contents\n");
    let secret = store.root().join("secret");
    std::fs::write(&secret, "secret\n").unwrap();
    let drvs = store.root().join("nix/var/log/nix/drvs");
    let linked = "9ygls0mbwcvql4g896aar9vxfbzqwf0n-linked.drv";
    let plain = "9ygls0mbwcvql4g896aar9vxfbzqwf0n-plain.drv";
    let corrupt = "9ygls0mbwcvql4g896aar9vxfbzqwf0n-corrupt.drv";
    std::fs::create_dir_all(drvs.join("9y")).unwrap();
    // A `.bz2` whose header is bzip2's and whose first block is not.
    std::fs::write(
        drvs.join("9y").join(format!("{}.bz2", &corrupt[2..])),
        b"BZh91AY&SYnot a block at all, but long enough to be read as one\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&secret, drvs.join("9y").join(&linked[2..])).unwrap();
    std::fs::write(drvs.join("9y").join(&plain[2..]), "a log\n").unwrap();

    let uri = store.uri();
    let (_server, addr, _) = start_on_any_port(&["--store", &uri]);
    // The chroot's log dir is the one served.
    let r = get(addr, &format!("/log/{plain}"));
    assert_eq!((r.status, r.text().as_str()), (200, "a log\n"));
    let r = get(addr, &format!("/log/{linked}"));
    assert_eq!((r.status, r.text().as_str()), (404, "No such log.\n"));
    // A corrupt `.bz2` fails in its first block, before the status: a 500
    // for GET and HEAD alike, never a 200 cut short.
    let r = get(addr, &format!("/log/{corrupt}"));
    assert_eq!((r.status, r.text().as_str()), (500, "Internal error.\n"));
    let r = Request::head(&format!("/log/{corrupt}"))
        .http10()
        .send(addr);
    assert_eq!(r.status, 500);
    // A valid path without a deriver has no log.
    let r = get(addr, &format!("/log/{}", base(&valid)));
    assert_eq!((r.status, r.text().as_str()), (404, "No such log.\n"));
    let r = get(addr, &format!("/log/{}", hash_part(&valid)));
    assert_eq!(r.status, 404);
    for target in [
        "/log/..%2f..%2fsecret".to_owned(),
        "/log/../secret".to_owned(),
        "/log/%2e%2e/secret".to_owned(),
        format!("/log/nix/store/{plain}"),
        format!("/log/{plain}/../../secret"),
        format!("/log/9y/{}", &plain[2..]),
        "/log/".to_owned(),
    ] {
        let r = get(addr, &target);
        assert!(
            matches!(r.status, 400 | 404) && !r.text().contains("secret"),
            "{target}: {} {}",
            r.status,
            r.text()
        );
    }
}
