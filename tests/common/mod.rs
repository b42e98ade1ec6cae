//! Shared by the integration tests: the fixtures that `scripts/setup-nix`
//! makes, real Nix as an oracle, scratch directories, the one HTTP client
//! (`http.rs`), a server's sockets as the kernel sees them (`sockets.rs`),
//! and the one way to wait for something ([`wait_until`]): a test waits for
//! the event that proves what it checks, never a fixed time. A test that
//! needs the fixtures and finds none fails: it never passes without having
//! run.
//!
//! Each test binary that says `mod common;` compiles all of it and uses a
//! part, hence the allowances.
#![allow(dead_code, unused_imports)]

pub mod binary;
mod chroot;
mod daemon;
mod fixtures;
pub mod http;
pub mod in_process;
pub mod logs;
pub mod nginx;
mod nix;
pub mod routes;
mod scratch;
pub mod sockets;
mod upstream;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use chroot::ChrootStore;
pub use daemon::{workers_of, TestDaemon};
pub use fixtures::{hash_part, Fixtures, ABSENT, SETUP_NIX_FIXTURES};
pub use nix::{
    nix_command, nix_copy_from, nix_fresh_cache, nix_on, nix_path_info, nix_path_infos,
    nix_store_dump, output_of, run, succeeded,
};
pub use scratch::{write_file, Scratch};
pub use upstream::{corrupt_nar, UpstreamServer};

/// Tests that count the process's file descriptors, chmod directories or
/// kill daemons take this first: one at a time within a test binary.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many file descriptors this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Polls `cond` every 20 ms until it holds, for at most `limit`: how long
/// it took, or `None` if it never held.
pub fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(start.elapsed())
}

/// Waits until `cond` holds, and returns how long that took; panics naming
/// `what` after `limit`, so that a wait that never ends fails the test
/// instead of hanging the run. `what` is formatted only then (it may say
/// what the test saw meanwhile).
pub fn wait_until(
    what: impl std::fmt::Display,
    limit: Duration,
    cond: impl FnMut() -> bool,
) -> Duration {
    poll_until(limit, cond)
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// An empty chroot store `tag` and a nix-daemon of its own for it that
/// trusts the fixtures' `keys/public` alone, requires signatures and
/// substitutes nothing: where imports (AddToStoreNar) are tested. The
/// daemon listens where Nix puts a store's socket,
/// `<root>/nix/var/nix/daemon-socket/socket`, beside its database, as on a
/// real machine: a server on that socket finds the database to watch.
pub fn store_trusting_test_key(fx: &Fixtures, tag: &str) -> (ChrootStore, TestDaemon) {
    let store = ChrootStore::new(tag);
    let public = std::fs::read_to_string(fx.key("public")).unwrap();
    let config = format!("trusted-public-keys = {public}\nrequire-sigs = true\nsubstituters =\n");
    let socket = store.root().join("nix/var/nix/daemon-socket/socket");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let daemon = TestDaemon::serving_at(&store.uri(), &config, Some(socket));
    (store, daemon)
}

/// `htpasswd -cbB FILE USER PASSWORD` (Debian's apache2-utils), then one
/// more user a line: the file an administrator makes.
pub fn htpasswd(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let file = dir.join("htpasswd");
    for (i, (user, password)) in users.iter().enumerate() {
        let create = if i == 0 { "-cbB" } else { "-bB" };
        let out = Command::new("htpasswd")
            .arg(create)
            .arg(&file)
            .args([user, password])
            .output()
            .expect("htpasswd (Debian package apache2-utils; scripts/test installs it)");
        assert!(out.status.success(), "htpasswd: {out:?}");
    }
    file
}
