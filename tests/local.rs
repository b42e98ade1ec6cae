//! The local backend against the real Nix here, with `nix path-info --json`
//! as the oracle (`nix-protocols.md` §8). Needs the fixtures: run scripts/test.
//!
//! serde_json (dev only) reads the oracle's JSON; nothing else prints
//! signatures and content addresses.

use std::collections::HashMap;
use std::env;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix_serve_sd::nix::hash::Sha256;
use nix_serve_sd::nix::path_info::PathInfo;
use nix_serve_sd::nix::store_path::{HashPart, StoreDir, StorePath};
use nix_serve_sd::store::local::{LocalLocation, LocalStore};
use nix_serve_sd::store::{Opener, Store};
use serde_json::Value;

const FIXTURE_NAMES: &[&str] = &[
    "empty",
    "big-10M",
    "big-10M-flat",
    "hello-exe",
    "tree",
    "text-with-ref",
    "dep-leaf",
    "dep-mid",
    "dep-top",
    "many-files",
    "compressible-10M",
    "multi-output.out",
    "multi-output.lib",
    "multi-output.dev",
    "multi-output.drv",
];

/// Tests here count file descriptors and chmod directories: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixture_dir() -> PathBuf {
    let dir = env::var_os("NIX_SERVE_SD_FIXTURES").expect(
        "NIX_SERVE_SD_FIXTURES is unset: it must name the fixture directory (scripts/test)",
    );
    PathBuf::from(dir)
}

/// `(name, full store path)` for every fixture, all present on disk.
fn fixtures() -> Vec<(String, String)> {
    let tsv = fixture_dir().join("paths.tsv");
    let text = fs::read_to_string(&tsv).unwrap_or_else(|e| panic!("{}: {e}", tsv.display()));
    let all: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, p)| (n.to_owned(), p.to_owned()))
        .collect();
    for name in FIXTURE_NAMES {
        let (_, path) = all
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("fixture {name} missing from {}", tsv.display()));
        assert!(
            Path::new(path).exists(),
            "fixture {name}: {path} does not exist"
        );
    }
    all
}

fn fixture(all: &[(String, String)], name: &str) -> String {
    all.iter().find(|(n, _)| n == name).unwrap().1.clone()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn dir() -> StoreDir {
    StoreDir::default()
}

fn store_path(full: &str) -> StorePath {
    dir().parse_path(full).unwrap()
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            env::temp_dir().join(format!("nix-serve-sd-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `nix <args> <paths>`, returning stdout per call. A `.drv` path needs
/// `--derivation`, or the `nix` command acts on its outputs instead.
fn nix_on_paths(args: &[&str], store: Option<&Path>, paths: &[String]) -> Vec<String> {
    let (drvs, others): (Vec<&String>, Vec<&String>) =
        paths.iter().partition(|p| p.ends_with(".drv"));
    let mut outs = Vec::new();
    for (group, flag) in [(drvs, Some("--derivation")), (others, None)] {
        if group.is_empty() {
            continue;
        }
        let mut cmd = Command::new("nix");
        cmd.args(args).args(flag).args(group);
        if let Some(s) = store {
            cmd.arg("--store").arg(s);
        }
        outs.push(run(&mut cmd));
    }
    outs
}

/// A chroot store at `<scratch>/chroot` holding `paths` and their closures.
fn chroot_with(scratch: &Scratch, paths: &[String]) -> PathBuf {
    let root = scratch.0.join("chroot");
    let to = root.to_str().unwrap();
    nix_on_paths(&["copy", "--no-check-sigs", "--to", to], None, paths);
    root
}

/// What `nix path-info --json` says about `paths` (in `store`, or the
/// machine's).
fn oracle(store: Option<&Path>, paths: &[String]) -> HashMap<String, PathInfo> {
    let mut found = HashMap::new();
    for out in nix_on_paths(&["path-info", "--json"], store, paths) {
        let json: Value = serde_json::from_str(&out).unwrap();
        for v in json.as_array().unwrap() {
            let info = from_json(v);
            found.insert(dir().display_path(&info.path), info);
        }
    }
    for p in paths {
        assert!(
            found.contains_key(p),
            "nix path-info said nothing about {p}"
        );
    }
    found
}

fn from_json(v: &Value) -> PathInfo {
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let mut references: Vec<StorePath> = v["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| store_path(r.as_str().unwrap()))
        .collect();
    references.sort();
    PathInfo {
        path: store_path(text("path").unwrap()),
        deriver: text("deriver").map(store_path),
        nar_hash: Sha256::parse_prefixed(text("narHash").unwrap()).unwrap(),
        nar_size: v["narSize"].as_u64().unwrap(),
        references,
        registration_time: v["registrationTime"].as_u64().unwrap(),
        ultimate: v.get("ultimate").and_then(Value::as_bool).unwrap_or(false),
        sigs: v
            .get("signatures")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default(),
        ca: text("ca").map(str::to_owned),
    }
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
        assert!(store.is_valid_path(&path).unwrap(), "{what}: {full}");
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
    let paths: Vec<String> = fixtures().into_iter().map(|(_, p)| p).collect();
    let want = oracle(None, &paths);
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
    assert!(!store.is_valid_path(&absent).unwrap());
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn chroot_store_answers_like_nix() {
    let _serial = serial();
    let paths: Vec<String> = fixtures().into_iter().map(|(_, p)| p).collect();
    let scratch = Scratch::new("chroot");
    let root = chroot_with(&scratch, &paths);
    // Signatures in the chroot's database, so the comparison covers them.
    let key = fixture_dir().join("keys/secret");
    let key = key.to_str().unwrap();
    nix_on_paths(&["store", "sign", "--key-file", key], Some(&root), &paths);
    let want = oracle(Some(&root), &paths);
    assert!(
        want.values().all(|i| !i.sigs.is_empty()),
        "nix store sign did not sign"
    );
    let system = oracle(None, &paths);
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
    let fx = fixtures();
    let scratch = Scratch::new("writer");
    let root = chroot_with(&scratch, &[fixture(&fx, "dep-top")]);
    let present: Vec<StorePath> = ["dep-top", "dep-mid", "dep-leaf", "tree", "empty"]
        .iter()
        .map(|n| store_path(&fixture(&fx, n)))
        .collect();
    let mut store = Opener::resolve(root.to_str().unwrap(), &no_env)
        .unwrap()
        .open()
        .unwrap();

    let (added_tx, added_rx) = mpsc::channel();
    let src = scratch.0.join("src");
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
            store.is_valid_path(path).unwrap(),
            "{path} added by Nix, not seen"
        );
    }
    eprintln!("information only: {lookups} look-ups while Nix added {WRITES} paths");
}

fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn lookups_leak_no_file_descriptors() {
    const LOOKUPS: u32 = 10_000;
    let _serial = serial();
    let fx = fixtures();
    let scratch = Scratch::new("fds");
    let root = chroot_with(&scratch, &[fixture(&fx, "dep-top")]);
    let opener = Opener::resolve(root.to_str().unwrap(), &no_env).unwrap();
    let hit = store_path(&fixture(&fx, "dep-mid")).hash_part();
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

/// §8: a WAL database opens read-only without write access to its directory
/// only while its -wal/-shm files exist. Runs this test binary again as
/// `nobody` against a chroot store whose db directory is not writable.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn read_only_database_without_wal_files() {
    if let Ok(arg) = env::var(CHILD) {
        return read_only_child(&arg);
    }
    let _serial = serial();
    let fx = fixtures();
    assert_eq!(
        fs::metadata("/proc/self").unwrap().uid(),
        0,
        "this test must run as root (it runs a part of itself as nobody)"
    );
    let scratch = Scratch::new("readonly");
    let root = chroot_with(&scratch, &[fixture(&fx, "dep-leaf")]);
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
    let leaf = store_path(&fixture(&fixtures(), "dep-leaf"));
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
