//! The local backend against the real Nix here, with `nix path-info --json`
//! as the oracle (`docs/protocols.md` §8). Needs the fixtures: run scripts/test.

mod common;

use std::collections::HashMap;
use std::env;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix_serve_sd::nix::path_info::PathInfo;
use nix_serve_sd::nix::store_path::{HashPart, StoreDir, StorePath};
use nix_serve_sd::store::local::{LocalLocation, LocalStore};
use nix_serve_sd::store::{Opener, Store};

use common::{nix_on, nix_path_infos, open_fds, run, serial, Fixtures, Scratch};

fn no_env(_: &str) -> Option<String> {
    None
}

fn dir() -> StoreDir {
    StoreDir::default()
}

fn store_path(full: &str) -> StorePath {
    dir().parse_path(full).unwrap()
}

/// A chroot store at `<scratch>/chroot` holding `paths` and their closures.
fn chroot_with(scratch: &Scratch, paths: &[&str]) -> PathBuf {
    let root = scratch.join("chroot");
    let to = root.to_str().unwrap();
    nix_on(&["copy", "--no-check-sigs", "--to", to], paths);
    root
}

/// `hash` with its last character changed: a hash no path has.
fn neighbour(hash: &HashPart) -> HashPart {
    let mut s = hash.as_str().to_owned();
    let last = s.pop().unwrap();
    s.push(if last == '0' { '1' } else { '0' });
    HashPart::parse(&s).unwrap()
}

/// Every fixture answers as `want` says, by path and by hash part.
fn assert_answers(store: &mut dyn Store, want: &HashMap<String, PathInfo>, what: &str) {
    for (full, info) in want {
        let path = store_path(full);
        let by_path = store.path_info(&path).unwrap();
        assert_eq!(by_path.as_ref(), Some(info), "{what}: {full}");
        let by_hash = store.path_info_by_hash(&path.hash_part()).unwrap();
        assert_eq!(by_hash.as_ref(), Some(info), "{what}: {full} by hash");
        assert_eq!(
            store
                .path_info_by_hash(&neighbour(&path.hash_part()))
                .unwrap(),
            None,
            "{what}: neighbour of {full}"
        );
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn path_info_matches_nix_path_info() {
    let _serial = serial();
    let fx = Fixtures::load();
    let paths = fx.full_paths();
    let want = nix_path_infos(None, &paths);
    // The oracle must exercise every column we read.
    assert!(want.values().any(|i| i.deriver.is_some()));
    assert!(want.values().any(|i| i.ca.is_some()));
    assert!(want.values().any(|i| i.ultimate));
    assert!(want.values().any(|i| i.references.contains(&i.path)));
    let opener = Opener::resolve("local", &no_env).unwrap();
    assert_eq!(opener.describe(), "local /nix/var/nix/db/db.sqlite");
    let mut store = opener.open().unwrap();
    assert_answers(store.as_mut(), &want, "system store");
    let absent = store_path("/nix/store/00000000000000000000000000000000-absent");
    assert_eq!(store.path_info(&absent).unwrap(), None);
    assert_eq!(store.path_info_by_hash(&absent.hash_part()).unwrap(), None);
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn chroot_store_answers_like_nix() {
    let _serial = serial();
    let fx = Fixtures::load();
    let paths = fx.full_paths();
    let scratch = Scratch::new("chroot");
    let root = chroot_with(&scratch, &paths);
    // Signatures in the chroot's database, so the comparison covers them.
    let key = fx.key("secret");
    let (key, store) = (key.to_str().unwrap(), root.to_str().unwrap());
    nix_on(
        &["store", "sign", "--key-file", key, "--store", store],
        &paths,
    );
    let want = nix_path_infos(Some(&root), &paths);
    assert!(
        want.values().all(|i| !i.sigs.is_empty()),
        "nix store sign did not sign"
    );
    let system = nix_path_infos(None, &paths);
    for (full, info) in &want {
        let sys = &system[full];
        // Copying keeps what the path is; registration and trust may differ.
        assert_eq!(
            (
                &info.nar_hash,
                info.nar_size,
                &info.references,
                &info.deriver,
                &info.ca
            ),
            (
                &sys.nar_hash,
                sys.nar_size,
                &sys.references,
                &sys.deriver,
                &sys.ca
            ),
            "{full}: the chroot copy differs from the original"
        );
    }
    let root_s = root.display().to_string();
    for uri in [format!("local?root={root_s}"), root_s.clone()] {
        let opener = Opener::resolve(&uri, &no_env).unwrap();
        assert_eq!(
            opener.describe(),
            format!("local {root_s}/nix/var/nix/db/db.sqlite")
        );
        let mut store = opener.open().unwrap();
        assert_answers(store.as_mut(), &want, &uri);
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn lookups_never_block_a_writer() {
    const WRITES: usize = 40;
    const LOOKUPS: usize = 2_000;
    let _serial = serial();
    let fx = Fixtures::load();
    let scratch = Scratch::new("writer");
    let root = chroot_with(&scratch, &[fx.path("dep-top")]);
    let present: Vec<StorePath> = ["dep-top", "dep-mid", "dep-leaf", "tree", "empty"]
        .iter()
        .map(|n| store_path(fx.path(n)))
        .collect();
    let mut store = Opener::resolve(root.to_str().unwrap(), &no_env)
        .unwrap()
        .open()
        .unwrap();

    let (added_tx, added_rx) = mpsc::channel();
    let src = scratch.join("src");
    fs::create_dir(&src).unwrap();
    let writer_root = root.clone();
    let writer = thread::spawn(move || {
        for i in 0..WRITES {
            let file = src.join(format!("f{i}"));
            fs::write(&file, format!("write {i} of {:?}\n", src)).unwrap();
            let out = run(Command::new("nix-store")
                .arg("--store")
                .arg(&writer_root)
                .arg("--add")
                .arg(&file));
            added_tx.send(out.trim().to_owned()).unwrap();
        }
    });

    let started = Instant::now();
    let (mut lookups, mut added, mut errors) = (0usize, Vec::new(), Vec::new());
    loop {
        let writer_done = writer.is_finished();
        added.extend(added_rx.try_iter().map(|p: String| store_path(&p)));
        for path in present.iter().chain(&added) {
            match store.path_info_by_hash(&path.hash_part()) {
                Ok(Some(info)) if info.path == *path => {}
                other => errors.push(format!("{path}: {other:?}")),
            }
            match store.path_info_by_hash(&neighbour(&path.hash_part())) {
                Ok(None) => {}
                other => errors.push(format!("neighbour of {path}: {other:?}")),
            }
            lookups += 2;
        }
        if writer_done && lookups >= LOOKUPS {
            break;
        }
        // A hang guard, not a speed check: Nix would wait an hour on a lock.
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the writer has not finished after 10 min: blocked by our reader?"
        );
    }
    writer.join().expect("nix-store --add failed");
    added.extend(added_rx.try_iter().map(|p: String| store_path(&p)));
    assert_eq!(added.len(), WRITES, "every write completed");
    assert!(
        errors.is_empty(),
        "{} errors in {lookups} look-ups: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    for path in &added {
        assert!(
            store.path_info(path).unwrap().is_some(),
            "{path} added by Nix, not seen"
        );
    }
    eprintln!("information only: {lookups} look-ups while Nix added {WRITES} paths");
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn lookups_leak_no_file_descriptors() {
    const LOOKUPS: u32 = 10_000;
    let _serial = serial();
    let fx = Fixtures::load();
    let scratch = Scratch::new("fds");
    let root = chroot_with(&scratch, &[fx.path("dep-top")]);
    let opener = Opener::resolve(root.to_str().unwrap(), &no_env).unwrap();
    let hit = store_path(fx.path("dep-mid")).hash_part();
    let miss = neighbour(&hit);
    let mut store = opener.open().unwrap();
    store
        .path_info_by_hash(&hit)
        .unwrap()
        .expect("dep-mid is in the chroot");
    // SQLite defers closing a file that another connection of the process
    // has locked and reuses that descriptor on the next open: one spare,
    // not a leak. Count from after one such cycle.
    opener.open().unwrap().path_info_by_hash(&hit).unwrap();
    let before = open_fds();
    let started = Instant::now();
    for i in 0..LOOKUPS {
        let found = store
            .path_info_by_hash(if i % 2 == 0 { &hit } else { &miss })
            .unwrap();
        assert_eq!(found.is_some(), i % 2 == 0);
    }
    let per_lookup = started.elapsed() / LOOKUPS;
    assert_eq!(
        open_fds(),
        before,
        "file descriptors after {LOOKUPS} look-ups"
    );
    // Workers come and go: a dropped connection gives its files back.
    for _ in 0..100 {
        let mut s = opener.open().unwrap();
        s.path_info_by_hash(&hit).unwrap().unwrap();
        assert!(open_fds() > before, "this connection holds its own files");
    }
    assert_eq!(open_fds(), before, "file descriptors after 100 connections");
    eprintln!("information only: {per_lookup:?} per look-up (half hits)");
}

/// Set in the child that [`read_only_database_without_wal_files`] runs as
/// `nobody`: `<expectation>:<chroot root>`.
const CHILD: &str = "NIX_SERVE_SD_TEST_READ_ONLY_CHILD";

/// docs/protocols.md §8: a WAL database opens read-only without write access to its directory
/// only while its -wal/-shm files exist. Runs this test binary again as
/// `nobody` against a chroot store whose db directory is not writable.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn read_only_database_without_wal_files() {
    if let Ok(arg) = env::var(CHILD) {
        return read_only_child(&arg);
    }
    let _serial = serial();
    let fx = Fixtures::load();
    assert_eq!(
        fs::metadata("/proc/self").unwrap().uid(),
        0,
        "this test must run as root (it runs a part of itself as nobody)"
    );
    let scratch = Scratch::new("readonly");
    let root = chroot_with(&scratch, &[fx.path("dep-leaf")]);
    let db_dir = root.join("nix/var/nix/db");
    for f in ["db.sqlite-wal", "db.sqlite-shm"] {
        assert!(!db_dir.join(f).exists(), "{f} left behind by nix copy");
    }
    fs::set_permissions(&db_dir, fs::Permissions::from_mode(0o555)).unwrap();

    let as_nobody = |expect: &str| {
        let out = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(env::current_exe().unwrap())
            .args(["--exact", "read_only_database_without_wal_files"])
            .args(["--include-ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD, format!("{expect}:{}", root.display()))
            .output()
            .expect("setpriv");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "child ({expect}) as nobody failed:\n{text}"
        );
        assert!(
            text.contains("1 passed"),
            "child ({expect}) ran no test:\n{text}"
        );
    };
    as_nobody("refused");

    // Root may create -wal/-shm (as Nix does); while that connection is
    // open, a reader without write access works too.
    let mut held = LocalStore::open(LocalLocation {
        store_dir: dir(),
        real_store: root.join("nix/store"),
        db: db_dir.join("db.sqlite"),
    })
    .unwrap();
    held.check().unwrap();
    assert!(
        db_dir.join("db.sqlite-shm").exists(),
        "root's reader made no -shm"
    );
    as_nobody("served");
    drop(held);
}

fn read_only_child(arg: &str) {
    let (expect, root) = arg.split_once(':').unwrap();
    let leaf = store_path(Fixtures::load().path("dep-leaf"));
    let local = format!("local?root={root}");
    match expect {
        "refused" => {
            let err = Opener::resolve(&local, &no_env).unwrap_err().to_string();
            let db = format!("{root}/nix/var/nix/db/db.sqlite");
            assert!(err.contains(&db) && err.contains("readonly"), "{err}");
            // auto tries the daemon next and names both attempts.
            let state = format!("{root}/nix/var/nix");
            let socket = format!("{root}/no-daemon.sock");
            let env = |name: &str| match name {
                "NIX_STATE_DIR" => Some(state.clone()),
                "NIX_DAEMON_SOCKET_PATH" => Some(socket.clone()),
                _ => None,
            };
            let err = Opener::resolve("auto", &env).unwrap_err().to_string();
            assert!(
                err.contains(&db) && err.contains("readonly") && err.contains(&socket),
                "{err}"
            );
        }
        "served" => {
            let mut store = Opener::resolve(&local, &no_env).unwrap().open().unwrap();
            let info = store.path_info_by_hash(&leaf.hash_part()).unwrap();
            assert_eq!(info.map(|i| i.path), Some(leaf));
        }
        other => panic!("unknown child expectation {other}"),
    }
}
