//! README "Asking for credentials": TLS in front, with the README's own
//! nginx block (its certificate made here with the `openssl` CLI, its
//! address and the server's port replaced). Over https, curl and a real
//! `nix copy --from` with credentials are served; without them, a 401
//! comes back through the proxy as the server sent it.

mod common;
#[path = "support/markdown.rs"]
mod markdown;

use std::path::Path;
use std::process::Command;

use common::binary::{free_port, start_on_any_port, wait_listening};
use common::nginx;
use common::{hash_part, htpasswd, output_of, run, Fixtures, Scratch};

/// A self-signed certificate for 127.0.0.1 (the address the clients use).
fn certificate(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (scripts/test installs it)");
    assert!(out.status.success(), "openssl: {out:?}");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    (s(&cert), s(&key))
}

#[test]
#[ignore = "needs real Nix, fixtures, nginx, openssl and htpasswd: run scripts/test"]
fn readme_tls_block_carries_credentials_to_the_server() {
    let fx = Fixtures::load();
    let path = fx.path("dep-top");
    let work = Scratch::new("proxy-tls");
    let users = htpasswd(work.path(), &[("alice", "secret")]);
    let (_server, addr, _log) = start_on_any_port(&["--htpasswd", users.to_str().unwrap()]);

    let (cert, key) = certificate(work.path());
    let port = free_port();
    let block = nginx::readme_block(markdown::fenced_blocks, "listen 443 ssl;");
    let block = block
        .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port} ssl;"))
        .replace("/etc/ssl/nix-serve/cert.pem", &cert)
        .replace("/etc/ssl/nix-serve/key.pem", &key)
        .replace("127.0.0.1:5000", &addr.to_string());
    assert!(
        block.contains(&cert) && block.contains(&key) && block.contains(&addr.to_string()),
        "the README's TLS block names listen 443 ssl, /etc/ssl/nix-serve/{{cert,key}}.pem \
         and 127.0.0.1:5000:\n{block}"
    );
    let _nginx = nginx::start(work.path(), &block);
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(at, std::time::Duration::from_secs(20));

    let base = format!("https://127.0.0.1:{port}");
    let narinfo = format!("{base}/{}.narinfo", hash_part(path));
    let curl = |user: Option<&str>| {
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "--cacert",
            &cert,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ]);
        if let Some(u) = user {
            c.args(["-u", u]);
        }
        run(c.arg(&narinfo))
    };
    assert_eq!(curl(Some("alice:secret")), "200");
    assert_eq!(curl(Some("alice:wrong")), "401");
    assert_eq!(curl(None), "401");
    let challenge = run(Command::new("curl")
        .args(["-sS", "--cacert", &cert, "-o", "/dev/null", "-D", "-"])
        .arg(&narinfo));
    assert!(
        challenge.contains("WWW-Authenticate: Basic realm=\"nix-serve\""),
        "{challenge}"
    );

    // A real Nix client over https, trusting the certificate, with a netrc.
    let netrc = work.join("netrc");
    std::fs::write(&netrc, "machine 127.0.0.1 login alice password secret\n").unwrap();
    let to = work.join("copy");
    let out = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "copy"])
        .args(["--from", &base, "--to"])
        .arg(&to)
        .args(["--no-check-sigs", path, "--option", "netrc-file"])
        .arg(&netrc)
        .env("NIX_SSL_CERT_FILE", &cert)
        .env("XDG_CACHE_HOME", work.join("xdg"))
        .env_remove("NIX_REMOTE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix copy over https failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = output_of(Command::new("nix-store").args(["--dump", path]));
    let got = output_of(
        Command::new("nix-store")
            .arg("--store")
            .arg(&to)
            .args(["--dump", path]),
    );
    assert!(want == got, "the copied NAR differs");
}
