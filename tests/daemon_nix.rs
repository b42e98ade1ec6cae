//! The nix-daemon client against real daemons: a test daemon on its own
//! socket (which we may kill and restart) and the system daemon when present.
//! Oracles: `nix path-info --json` and `nix-store --dump`.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix_serve_sd::nix::store_path::{HashPart, StoreDir, StorePath};
use nix_serve_sd::store::daemon::DaemonStore;
use nix_serve_sd::store::{Store, StoreError};

use common::{nix_path_info, nix_store_dump, open_fds, serial, Fixtures, TestDaemon, ABSENT};

const SYSTEM_SOCKET: &str = "/nix/var/nix/daemon-socket/socket";
const TIMEOUT: Duration = Duration::from_secs(30);

fn store_dir() -> StoreDir {
    StoreDir::default()
}

fn full(p: &StorePath) -> String {
    store_dir().display_path(p)
}

/// The test daemon's store, and the system daemon's when it runs.
fn stores(test: &TestDaemon) -> Vec<(&'static str, DaemonStore)> {
    let mut out = vec![("test daemon", test.store())];
    if UnixStream::connect(SYSTEM_SOCKET).is_ok() {
        out.push((
            "system daemon",
            DaemonStore::new(SYSTEM_SOCKET.into(), store_dir(), TIMEOUT),
        ));
    }
    out
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn path_info_matches_nix_path_info() {
    let _serial = serial();
    let fx = Fixtures::load();
    let daemon = TestDaemon::start();
    for (which, mut store) in stores(&daemon) {
        store.check().unwrap();
        let info = store.daemon_info().unwrap();
        assert_eq!(info.version.major(), 1, "{which}");
        for (name, path) in fx.store_paths() {
            let nix = nix_path_info(None, &full(&path));
            let by_path = store.path_info(&path).unwrap().expect(name);
            assert_eq!(by_path, nix, "{which}: {name} as nix path-info says");
            let by_hash = store.path_info_by_hash(&path.hash_part()).unwrap();
            assert_eq!(by_hash.as_ref(), Some(&by_path), "{which} {name}");
        }
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn absent_paths_are_none_not_errors() {
    let _serial = serial();
    let fx = Fixtures::load();
    let daemon = TestDaemon::start();
    let absent_path =
        StorePath::from_base_name(&format!("{ABSENT}-{}", fx.store_path("tree").name())).unwrap();
    for (which, mut store) in stores(&daemon) {
        let hash = HashPart::parse(ABSENT).unwrap();
        assert_eq!(store.path_info_by_hash(&hash).unwrap(), None, "{which}");
        assert_eq!(store.path_info(&absent_path).unwrap(), None, "{which}");
        // The connection is still good after the negative answers.
        let present = store.path_info_by_hash(&fx.store_path("tree").hash_part());
        assert!(present.unwrap().is_some(), "{which}");
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_thousand_requests_on_one_connection() {
    let _serial = serial();
    let fx = Fixtures::load();
    let daemon = TestDaemon::start();
    let paths: Vec<StorePath> = fx.store_paths().into_iter().map(|(_, p)| p).collect();
    for (which, mut store) in stores(&daemon) {
        let before = open_fds();
        for i in 0..1000 {
            let path = &paths[i % paths.len()];
            let info = store.path_info_by_hash(&path.hash_part()).unwrap();
            assert_eq!(info.map(|i| i.path).as_ref(), Some(path), "{which} #{i}");
        }
        // One connection opened at the first request and kept: one more fd.
        assert_eq!(open_fds(), before + 1, "{which}");
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn ten_thousand_lookups_leak_no_file_descriptors() {
    let _serial = serial();
    let fx = Fixtures::load();
    let daemon = TestDaemon::start();
    let paths: Vec<StorePath> = fx.store_paths().into_iter().map(|(_, p)| p).collect();
    let absent = HashPart::parse(ABSENT).unwrap();
    let mut store = daemon.store();
    store.check().unwrap();
    let before = open_fds();
    for i in 0..10_000 {
        if i % 100 == 0 {
            // Also open and drop whole connections now and then.
            store = daemon.store();
        }
        let found = store.path_info_by_hash(&paths[i % paths.len()].hash_part());
        assert!(found.unwrap().is_some(), "#{i}");
        assert_eq!(store.path_info_by_hash(&absent).unwrap(), None, "#{i}");
    }
    assert_eq!(open_fds(), before);
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn daemon_restart_between_two_requests() {
    let _serial = serial();
    let fx = Fixtures::load();
    let mut daemon = TestDaemon::start();
    let mut store = daemon.store();
    let hash = fx.store_path("dep-top").hash_part();
    assert!(store.path_info_by_hash(&hash).unwrap().is_some());
    daemon.restart();
    // The old connection is dead; the store reconnects and retries.
    assert!(store.path_info_by_hash(&hash).unwrap().is_some());
    assert!(store.path_info(&fx.store_path("tree")).unwrap().is_some());

    // With the daemon down: a clean Unavailable, and back once it returns.
    daemon.kill();
    match store.path_info_by_hash(&hash) {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("daemon down: {other:?}"),
    }
    daemon.spawn();
    assert!(store.path_info_by_hash(&hash).unwrap().is_some());
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn nar_from_path_equals_nix_store_dump() {
    let _serial = serial();
    let fx = Fixtures::load();
    let daemon = TestDaemon::start();
    let mut store = daemon.store();
    // Every fixture: files, directories, symlinks, a dangling one.
    for (name, path) in fx.store_paths() {
        let expected = nix_store_dump(full(&path));
        let info = store.path_info(&path).unwrap().unwrap();
        assert_eq!(info.nar_size, expected.len() as u64, "{name}");
        let size = expected.len() as u64;
        for offset in [0, 1, 8, 100.min(size), size - 1, size] {
            let mut got = Vec::new();
            let mut nar = store.nar_from_daemon(&info, offset).unwrap();
            nar.read_to_end(&mut got).unwrap();
            drop(nar);
            assert!(
                got == expected[offset as usize..],
                "{name} at offset {offset}: {} bytes differ from nix-store --dump",
                got.len()
            );
            // Read to its end, the stream gave the connection back.
            assert!(store.daemon_info().is_some(), "{name}: connection kept");
        }
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn nar_reader_dropped_early_discards_the_connection() {
    let _serial = serial();
    let fx = Fixtures::load();
    let daemon = TestDaemon::start();
    let mut store = daemon.store();
    let info = store.path_info(&fx.store_path("big-10M")).unwrap().unwrap();
    let mut nar = store.nar_from_daemon(&info, 0).unwrap();
    let mut head = [0u8; 4096];
    nar.read_exact(&mut head).unwrap();
    drop(nar);
    assert!(
        store.daemon_info().is_none(),
        "half-read connection dropped"
    );
    // The next request works, on a new connection.
    let tree = store.path_info(&fx.store_path("tree")).unwrap().unwrap();
    assert_eq!(tree.path, fx.store_path("tree"));

    // Info that no longer matches the store, or a bad offset: errors.
    let mut stale = info.clone();
    stale.nar_size += 8;
    assert!(matches!(
        store.nar_from_daemon(&stale, 0),
        Err(StoreError::Corrupt(_))
    ));
    assert!(store.nar_from_daemon(&info, info.nar_size + 1).is_err());
    let mut gone = tree.clone();
    gone.path = StorePath::from_base_name(&format!("{ABSENT}-tree")).unwrap();
    match store.nar_from_daemon(&gone, 0) {
        Err(StoreError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        Err(e) => panic!("vanished path: {e}"),
        Ok(_) => panic!("vanished path: a NAR"),
    }
}

/// The hash-part memo (one round trip for a path seen before) must not
/// outlive the path: once it is deleted, the same hash part is absent again,
/// and a path added afterwards is found.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_remembered_hash_part_follows_deletion() {
    let _serial = serial();
    let _ = Fixtures::load();
    let daemon = TestDaemon::start();
    let scratch = common::Scratch::new("memo");
    let file = scratch.path().join("memo.txt");
    std::fs::write(&file, format!("memo test {}\n", std::process::id())).unwrap();
    let add = || {
        let out = std::process::Command::new("nix-store")
            .arg("--add")
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "nix-store --add");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let full_path = add();
    let path = store_dir().parse_path(&full_path).unwrap();
    let hash = path.hash_part();
    let mut store = daemon.store();
    for round in 0..2 {
        let info = store.path_info_by_hash(&hash).unwrap();
        assert_eq!(info.map(|i| i.path), Some(path.clone()), "round {round}");
    }
    let out = std::process::Command::new("nix-store")
        .args(["--delete", &full_path])
        .output()
        .unwrap();
    assert!(out.status.success(), "nix-store --delete: {out:?}");
    for round in 0..2 {
        assert_eq!(
            store.path_info_by_hash(&hash).unwrap(),
            None,
            "round {round}"
        );
    }
    assert_eq!(add(), full_path);
    assert!(store.path_info_by_hash(&hash).unwrap().is_some());
}
