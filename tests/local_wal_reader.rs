//! Regression: the direct database reader, running as a user that may not
//! write the db directory (a `DynamicUser=` service; Nix's db directory is
//! root's), served only while some other connection held the database open.
//! It chose the local backend while Nix had the database open (its -wal and
//! -shm files existed), closed its probe, and when Nix's last connection
//! closed SQLite deleted both files: from then on every look-up failed with
//! "unable to open database file", a 503 for every client until the process
//! exited. The opener now keeps its probe's connection open (`docs/protocols.md`
//! §8), which also keeps a writer from deleting the files.
//!
//! And the idle machine (issue 21): with no Nix process holding the
//! database, no -wal and -shm exist, and such a reader cannot open it at
//! all: `auto` fell back to the daemon, so the backend depended on what
//! else ran. `auto` now opens a nix-daemon connection, whose worker holds
//! the database open, and reads it directly through that.
//!
//! Runs the built server as `nobody` against a chroot store that real Nix
//! writes (and a nix-daemon of the test's own serves). Needs root (to switch
//! to nobody) and Nix.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::binary::{free_port, start_on_any_port_with, wait_listening, Running, BIN};
use common::http::get;
use common::{hash_part, wait_until, ChrootStore, TestDaemon};

/// Runs the server as `nobody`, who may read the store's database but not
/// write its directory (as a `DynamicUser=` service).
const AS_NOBODY: &[&str] = &[
    "setpriv",
    "--reuid=nobody",
    "--regid=nogroup",
    "--clear-groups",
    "--",
];

/// A chroot store `tag` with one path, which Nix has closed again: its
/// store, that path, and its database and `-shm` file. Checks that the test
/// runs as root (it runs the server as nobody) and that Nix left no -shm.
fn idle_store(tag: &str) -> (ChrootStore, String, PathBuf, PathBuf) {
    assert_eq!(
        fs::metadata("/proc/self").unwrap().uid(),
        0,
        "this test must run as root (it runs the server as nobody)"
    );
    let store = ChrootStore::new(tag);
    let first = store.add("first", b"written before the server starts\n");
    let db = store.root().join("nix/var/nix/db/db.sqlite");
    let shm = db.with_extension("sqlite-shm");
    assert!(!shm.exists(), "nix-store left {} behind", shm.display());
    (store, first, db, shm)
}

/// Asserts that the server at `addr` answers the narinfo of `path` (a full
/// store path) with that path's; `when` says in which state of the test.
fn assert_served(addr: SocketAddr, path: &str, when: &str) {
    let reply = get(addr, &format!("/{}.narinfo", hash_part(path)));
    let body = reply.text();
    assert_eq!(reply.status, 200, "{when}: {body}");
    assert!(
        body.contains(&format!("StorePath: {path}")),
        "{when}: {body}"
    );
}

#[test]
#[ignore = "needs root and real Nix: run scripts/test"]
fn reader_without_write_access_survives_the_last_writer_closing() {
    let (store, first, db, shm) = idle_store("wal-reader");

    // Nix's place: a root connection that has the database open, so that
    // -wal and -shm exist when the server starts.
    let nix = rusqlite::Connection::open(&db).unwrap();
    let _: i64 = nix
        .query_row("select count(*) from ValidPaths", [], |r| r.get(0))
        .unwrap();
    assert!(shm.exists(), "root's connection made no -shm");

    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = Running {
        child: Command::new(AS_NOBODY[0])
            .args(&AS_NOBODY[1..])
            .arg(BIN)
            .args(["--listen", &addr.to_string(), "--store", &store.uri()])
            .env_remove("LISTEN_FDS")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .spawn()
            .expect("setpriv"),
    };
    wait_listening(addr, Duration::from_secs(30));

    // Nix closes its last connection before any client came (the workers'
    // connections read nothing yet). Before the fix SQLite deleted -wal and
    // -shm here, and nobody could not make them again.
    drop(nix);
    assert_served(addr, &first, "after the last writer closed");

    // A writer comes and goes again; what it added is served at once.
    let second = store.add("second", b"written while the server runs\n");
    assert_served(addr, &second, "a path added while serving");
    drop(server);
}

#[test]
#[ignore = "needs root and real Nix: run scripts/test"]
fn auto_reads_an_idle_database_through_a_daemon_connection_that_holds_it() {
    let (store, first, db, shm) = idle_store("wal-idle");
    let daemon = TestDaemon::serving(&store.uri());
    // Idle: the daemon opens the database only in a connection's worker, and
    // the worker of its start-up check has gone with that connection.
    wait_until(
        "the check's worker to exit",
        Duration::from_secs(10),
        || daemon.workers().is_empty(),
    );
    assert!(!shm.exists(), "{} before any server started", shm.display());

    // `local` never asks the daemon: on the idle database it cannot start.
    let local = Command::new(AS_NOBODY[0])
        .args(&AS_NOBODY[1..])
        .arg(BIN)
        .args(["--listen", "127.0.0.1:0", "--store", &store.uri()])
        .env_remove("LISTEN_FDS")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv");
    let said = String::from_utf8_lossy(&local.stderr);
    assert_eq!(local.status.code(), Some(75), "--store local: {said}");
    assert!(said.contains("only while Nix holds it open"), "{said}");
    assert!(!shm.exists(), "a failed reader made {}", shm.display());

    // `auto` with the same database (NIX_STATE_DIR) and that daemon.
    let state = store.root().join("nix/var/nix").display().to_string();
    let socket = daemon.socket().display().to_string();
    let env = [
        ("NIX_STATE_DIR", state.as_str()),
        ("NIX_DAEMON_SOCKET_PATH", socket.as_str()),
    ];
    let (server, addr, log) = start_on_any_port_with(AS_NOBODY, &env, &["--store", "auto"]);
    let said = log.lock().unwrap().clone();
    assert!(
        said.contains(&format!("Serving store local {}", db.display())),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "held open by a connection to the nix-daemon at {socket}"
        )),
        "the log says why: {said}"
    );
    assert!(!said.contains("using the daemon"), "{said}");
    assert_served(addr, &first, "through the held database");
    let second = store.add("second", b"written while the server runs\n");
    assert_served(addr, &second, "a path added while serving");
    // The holding connection stays for the process's life, its worker idle.
    assert_eq!(daemon.workers().len(), 1, "one daemon connection, held");
    assert!(shm.exists(), "held, the database has its -shm");

    // It goes with the server, and Nix's worker is then the last to close
    // the database: it removes -wal and -shm, so nothing is left behind that
    // a later reader would open without Nix's help.
    assert!(server.terminate().success());
    wait_until(
        "the holder's worker to exit and -shm to go",
        Duration::from_secs(10),
        || daemon.workers().is_empty() && !shm.exists(),
    );
}
