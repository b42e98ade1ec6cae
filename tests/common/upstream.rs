//! Upstream binary caches for the pull-through tests: Debian's nginx
//! serving directories that real Nix wrote (`nix copy --to
//! 'file://DIR?compression=…&secret-key=…'`), over http and over https with
//! a CA the test makes (openssl CLI). Its access log says what was asked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::binary::free_port;
use super::nginx::{self, Reaper};
use super::{nix_command, output_of, Scratch};

pub struct UpstreamServer {
    scratch: Scratch,
    nginx: Reaper,
    pub http_port: u16,
    pub https_port: u16,
}

fn openssl(dir: &Path, args: &[&str]) {
    output_of(Command::new("openssl").current_dir(dir).args(args));
}

/// nginx serving `<dir>/caches` on two free ports (http, https), once it
/// listens on both; `None` when it could not bind them.
fn launch(dir: &Path) -> Option<(Reaper, u16, u16)> {
    let (http_port, https_port) = (free_port(), free_port());
    let errors = dir.join("error.log");
    let _ = std::fs::remove_file(&errors);
    let block = format!(
        "  server {{ listen 127.0.0.1:{http_port}; root {d}/caches; access_log {d}/access.log;\n    \
         location /slow/ {{ alias {d}/caches/; limit_rate 128k; }}\n    \
         location /medium/ {{ alias {d}/caches/; limit_rate 2m; }} }}\n  \
         server {{ listen 127.0.0.1:{https_port} ssl; root {d}/caches; access_log {d}/access.log;\n    \
         ssl_certificate {d}/server.crt; ssl_certificate_key {d}/server.key; }}",
        d = dir.display(),
    );
    let mut nginx = nginx::start(dir, &block);
    let mut failed = false;
    let what = format!("nginx to start (see {})", errors.display());
    super::wait_until(&what, Duration::from_secs(20), || {
        // nginx binds every socket before it serves, and logs a failed
        // bind at once (it retries for a few seconds before it exits).
        failed = std::fs::read_to_string(&errors).is_ok_and(|l| l.contains("bind()"))
            || nginx.0.try_wait().unwrap().is_some();
        failed
            || [http_port, https_port]
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
    });
    (!failed).then_some((nginx, http_port, https_port))
}

impl UpstreamServer {
    /// nginx on two free ports, serving `<scratch>/caches/` over http and
    /// https (a certificate for 127.0.0.1 signed by [`Self::ca_file`]).
    pub fn start() -> Self {
        let scratch = Scratch::new("upstream");
        let dir = scratch.path();
        std::fs::create_dir(dir.join("caches")).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=nix-serve-sd test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                "server.crt",
            ],
        );
        // Another test may take a port between our choice and nginx's
        // bind: then nginx says so in its log (and gives up), and we try
        // other ports.
        let (nginx, http_port, https_port) = (0..5)
            .find_map(|_| launch(dir))
            .expect("nginx did not start on free ports in 5 tries (see its error.log)");
        UpstreamServer {
            scratch,
            nginx,
            http_port,
            https_port,
        }
    }

    /// The CA that signed the https certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.scratch.join("ca.crt")
    }

    /// A cache `name` holding the closures of `paths`, written by
    /// `nix copy` with `compression`, signed with the key file `key` (none:
    /// unsigned). Its directory.
    pub fn add_cache(
        &self,
        name: &str,
        compression: &str,
        key: Option<&Path>,
        paths: &[&str],
    ) -> PathBuf {
        let dir = self.cache_dir(name);
        let mut to = format!("file://{}?compression={compression}", dir.display());
        if let Some(key) = key {
            to.push_str(&format!("&secret-key={}", key.display()));
        }
        output_of(&mut nix_command(&["copy", "--to", &to], paths));
        dir
    }

    /// Where cache `name` is (or would be) written.
    pub fn cache_dir(&self, name: &str) -> PathBuf {
        self.scratch.join("caches").join(name)
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.http_port)
    }

    /// Cache `name` sent at 128 KiB/s a connection (nginx's `limit_rate`):
    /// a 10 MiB NAR takes 80 s.
    pub fn slow_url(&self, name: &str) -> String {
        self.url(&format!("slow/{name}"))
    }

    /// Cache `name` sent at 2 MiB/s a connection: a 10 MiB NAR takes 5 s.
    pub fn medium_url(&self, name: &str) -> String {
        self.url(&format!("medium/{name}"))
    }

    pub fn https_url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.https_port)
    }

    /// Sends `signal` (`STOP`, `CONT`) to nginx's master and worker: a
    /// stopped upstream accepts connections (the kernel does) and answers
    /// nothing.
    pub fn signal(&self, signal: &str) {
        let mut pids = super::daemon::workers_of(self.nginx.0.id());
        pids.push(self.nginx.0.id().to_string());
        Command::new("kill")
            .arg(format!("-{signal}"))
            .args(&pids)
            .status()
            .expect("run kill(1) (package procps)");
    }

    /// Requests in the access log whose line contains `needle`.
    pub fn requests(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.scratch.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// Flips one byte near the end of the uncompressed NAR file whose NAR hash
/// is `nar_hash_nix32` in the cache at `dir`: same size, another hash.
pub fn corrupt_nar(dir: &Path, nar_hash_nix32: &str) {
    let file = dir.join("nar").join(format!("{nar_hash_nix32}.nar"));
    let mut bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let at = bytes.len() - 100;
    bytes[at] ^= 0x55;
    std::fs::write(&file, bytes).unwrap();
}
