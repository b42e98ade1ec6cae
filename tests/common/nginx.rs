//! Debian's nginx in a minimal nginx.conf of a scratch directory, with a
//! block of its own: in front of the server, a block of the README as
//! written with only its paths and ports replaced (tests/proxy_cache.rs,
//! tests/proxy_tls.rs); or as an upstream cache (`upstream.rs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Stops the child when the test ends, passed or not: SIGTERM first, so that
/// nginx's master takes its workers with it (SIGKILL would orphan them).
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        if super::binary::wait_exit(&mut self.0, Duration::from_secs(5)).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The one `nginx` block of README.md that contains `marker`, found with
/// `fenced_blocks` (tests/support/markdown.rs, which each test binary that
/// reads the README includes itself).
pub fn readme_block(fenced_blocks: fn(&str, &str) -> Vec<String>, marker: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let mut blocks: Vec<String> = fenced_blocks(&readme, "nginx")
        .into_iter()
        .filter(|b| b.contains(marker))
        .collect();
    assert_eq!(
        blocks.len(),
        1,
        "README.md has one nginx block with {marker:?}"
    );
    blocks.remove(0)
}

/// Starts nginx in `dir` with `block` inside its `http {}`.
pub fn start(dir: &Path, block: &str) -> Reaper {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed (scripts/test installs Debian's nginx as root)");
    let conf: PathBuf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {pid};\nerror_log {err} info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {tmp}/body;\n  \
             proxy_temp_path {tmp}/proxy;\n  fastcgi_temp_path {tmp}/fcgi;\n  \
             uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n{block}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            err = dir.join("error.log").display(),
            tmp = dir.display(),
        ),
    )
    .unwrap();
    Reaper(
        Command::new(nginx)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    )
}
