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
//! Runs the built server as `nobody` against a chroot store that real Nix
//! writes. Needs root (to switch to nobody) and Nix.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::binary::{free_port, get, wait_listening, Running, BIN};
use common::ChrootStore;

/// The narinfo of `path` (a full store path) as the server at `addr` answers.
fn narinfo(addr: SocketAddr, path: &str) -> (u16, String) {
    let base = path.rsplit('/').next().expect("a store path");
    let reply = get(addr, &format!("/{}.narinfo", &base[..32]));
    (reply.status, reply.text())
}

#[test]
#[ignore = "needs root and real Nix: run scripts/test"]
fn reader_without_write_access_survives_the_last_writer_closing() {
    assert_eq!(
        fs::metadata("/proc/self").unwrap().uid(),
        0,
        "this test must run as root (it runs the server as nobody)"
    );
    let store = ChrootStore::new("wal-reader");
    let first = store.add("first", b"written before the server starts\n");
    let db = store.root().join("nix/var/nix/db/db.sqlite");
    let shm = db.with_extension("sqlite-shm");
    assert!(!shm.exists(), "nix-store left {} behind", shm.display());

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
        child: Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
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
    let (status, body) = narinfo(addr, &first);
    assert_eq!(status, 200, "after the last writer closed: {body}");
    assert!(body.contains(&format!("StorePath: {first}")), "{body}");

    // A writer comes and goes again; what it added is served at once.
    let second = store.add("second", b"written while the server runs\n");
    let (status, body) = narinfo(addr, &second);
    assert_eq!(status, 200, "a path added while serving: {body}");
    assert!(body.contains(&format!("StorePath: {second}")), "{body}");
    drop(server);
}
