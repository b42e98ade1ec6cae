//! A `nix-daemon` of the test's own, on its own socket, which the test may
//! kill and restart (the machine's daemon is shared and never touched).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix_serve_sd::nix::store_path::StoreDir;
use nix_serve_sd::store::daemon::DaemonStore;

use super::Scratch;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A `nix-daemon` on `<scratch>/sock`, serving the machine's store (or the
/// one [`TestDaemon::serving`] names). Killing it also kills the
/// per-connection workers it forked, as systemd does by killing the unit's
/// cgroup: Nix puts each worker in its own session, so the daemon's death
/// alone leaves them serving their connections.
pub struct TestDaemon {
    dir: Scratch,
    child: Option<Child>,
    /// `--store` of the daemon: the machine's store without it.
    store: Option<String>,
    /// `NIX_CONFIG` of the daemon (its `trusted-public-keys`, say), added
    /// to the machine's nix.conf.
    config: Option<String>,
    /// Where it listens, if not in its scratch directory.
    socket: Option<PathBuf>,
}

impl TestDaemon {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A daemon serving the store `uri` (a `ChrootStore`'s, say) instead of
    /// the machine's.
    pub fn serving(uri: &str) -> Self {
        Self::start_with(Some(uri.to_owned()))
    }

    /// A daemon serving the store `uri` with the settings `nix_config`
    /// (nix.conf lines) on top of the machine's.
    pub fn serving_with(uri: &str, nix_config: &str) -> Self {
        Self::serving_at(uri, nix_config, None)
    }

    /// [`Self::serving_with`], listening on `socket` if given.
    pub fn serving_at(uri: &str, nix_config: &str, socket: Option<PathBuf>) -> Self {
        let mut d = TestDaemon {
            dir: Scratch::new("daemon"),
            child: None,
            store: Some(uri.to_owned()),
            config: Some(nix_config.to_owned()),
            socket,
        };
        d.spawn();
        d
    }

    fn start_with(store: Option<String>) -> Self {
        let mut d = TestDaemon {
            dir: Scratch::new("daemon"),
            child: None,
            store,
            config: None,
            socket: None,
        };
        d.spawn();
        d
    }

    pub fn socket(&self) -> PathBuf {
        (self.socket.clone()).unwrap_or_else(|| self.dir.join("sock"))
    }

    /// Starts the daemon and waits until it answers.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the test daemon already runs");
        let mut daemon = Command::new("nix-daemon");
        if let Some(config) = &self.config {
            daemon.env("NIX_CONFIG", config);
        }
        let child = daemon
            .args(self.store.iter().flat_map(|uri| ["--store", uri.as_str()]))
            .env("NIX_DAEMON_SOCKET_PATH", self.socket())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run nix-daemon");
        self.child = Some(child);
        super::wait_until("the test nix-daemon to answer", TIMEOUT, || {
            self.store().check().is_ok()
        });
    }

    /// Kills the daemon and its workers: every connection to it breaks.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let mut pids = workers_of(child.id());
            pids.push(child.id().to_string());
            // A worker may have exited meanwhile: kill(1)'s complaint (and
            // its status) is noise. But kill(1) must exist, or the wait below
            // never ends (a minimal Debian lacks procps: scripts/test
            // installs it).
            Command::new("kill")
                .arg("-KILL")
                .args(&pids)
                .stderr(Stdio::null())
                .status()
                .expect("run kill(1) (package procps)");
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the daemon and its workers.
    pub fn signal(&self, signal: &str) {
        let Some(child) = &self.child else { return };
        let mut pids = workers_of(child.id());
        pids.push(child.id().to_string());
        Command::new("kill")
            .arg(format!("-{signal}"))
            .args(&pids)
            .stderr(Stdio::null())
            .status()
            .expect("run kill(1) (package procps)");
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The worker processes it forked, one per open connection.
    pub fn workers(&self) -> Vec<String> {
        self.child
            .as_ref()
            .map_or_else(Vec::new, |child| workers_of(child.id()))
    }

    /// A client of this daemon (connects on first use).
    pub fn store(&self) -> DaemonStore {
        DaemonStore::new(self.socket(), StoreDir::default(), TIMEOUT)
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Processes whose parent is `pid`, from `/proc/<pid>/stat` field 4.
pub fn workers_of(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may contain spaces and ')'.
        let after_comm = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        if after_comm.split_whitespace().nth(1) == Some(&pid.to_string()) {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out
}
