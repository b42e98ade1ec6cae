//! The local backend against databases this test writes itself, in Nix's
//! schema (`docs/protocols.md` §8): the edge cases a real store rarely has.
//! Needs no Nix.

mod common;

use std::fs;
use std::path::Path;

use nix_serve_sd::nix::store_path::{HashPart, StoreDir};
use nix_serve_sd::store::local::{LocalLocation, LocalStore};
use nix_serve_sd::store::{Opener, Store, StoreError};
use rusqlite::{params, Connection};

use common::Scratch;

/// Nix 2.8's schema 10, as `.schema` prints it (docs/protocols.md §8), triggers left out.
const SCHEMA: &str = "
create table ValidPaths (id integer primary key autoincrement not null, path text unique not null,
  hash text not null, registrationTime integer not null, deriver text, narSize integer,
  ultimate integer, sigs text, ca text);
create table Refs (referrer integer not null, reference integer not null,
  primary key (referrer, reference),
  foreign key (referrer) references ValidPaths(id) on delete cascade,
  foreign key (reference) references ValidPaths(id) on delete restrict);
create index IndexReferrer on Refs(referrer);
create index IndexReference on Refs(reference);
create table DerivationOutputs (drv integer not null, id text not null, path text not null,
  primary key (drv, id));";

const HASH16: &str = "sha256:5412b0b0b18448967acb7ebc7822c77c446c9ba7ccea468b1b3b63219a2edfea";
const HASH32: &str = "sha256:1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl";

/// A chroot store at `root` (db and empty store dir); `wal` picks the
/// journal mode Nix uses by default.
/// `(path, hash, narSize)` of one `ValidPaths` row.
type Row<'a> = (&'a str, &'a str, Option<i64>);

fn make_store(root: &Path, wal: bool, rows: &[Row], refs: &[(i64, i64)]) {
    let db_dir = root.join("nix/var/nix/db");
    fs::create_dir_all(&db_dir).unwrap();
    fs::create_dir_all(root.join("nix/store")).unwrap();
    let conn = Connection::open(db_dir.join("db.sqlite")).unwrap();
    let mode: String = conn
        .query_row(
            &format!(
                "pragma journal_mode = {}",
                if wal { "wal" } else { "delete" }
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mode, if wal { "wal" } else { "delete" });
    conn.execute_batch(SCHEMA).unwrap();
    for (path, hash, nar_size) in rows {
        conn.execute(
            "insert into ValidPaths (path, hash, registrationTime, narSize) values (?1, ?2, 7, ?3)",
            params![path, hash, nar_size],
        )
        .unwrap();
    }
    for (a, b) in refs {
        conn.execute("insert into Refs values (?1, ?2)", params![a, b])
            .unwrap();
    }
}

fn location(root: &Path) -> LocalLocation {
    LocalLocation {
        store_dir: StoreDir::default(),
        real_store: root.join("nix/store"),
        db: root.join("nix/var/nix/db/db.sqlite"),
    }
}

fn open(root: &Path) -> LocalStore {
    let mut store = LocalStore::open(location(root)).unwrap();
    store.check().unwrap();
    store
}

fn hash(s: &str) -> HashPart {
    HashPart::parse(s).unwrap()
}

const A: &str = "/nix/store/0000000000000000000000000000000a-a";
const B: &str = "/nix/store/0000000000000000000000000000000c-b";
const C: &str = "/nix/store/0000000000000000000000000000000d-c";

#[test]
fn reads_rows_as_nix_does() {
    let dir = Scratch::new("rows");
    make_store(
        dir.path(),
        true,
        &[
            (A, HASH16, Some(176)),
            (B, HASH32, None),
            (C, HASH16, Some(1)),
        ],
        &[(1, 3), (1, 1), (1, 2), (2, 2)],
    );
    let conn = Connection::open(dir.join("nix/var/nix/db/db.sqlite")).unwrap();
    conn.execute(
        "update ValidPaths set ultimate = 1, sigs = 'k:AA== j:BB==', ca = '', deriver = ?1 \
         where id = 1",
        [format!("{C}.drv")],
    )
    .unwrap();
    drop(conn);
    let mut store = open(dir.path());
    let a = store
        .path_info_by_hash(&hash("0000000000000000000000000000000a"))
        .unwrap()
        .unwrap();
    assert_eq!(a.path.base_name(), &A[11..]);
    assert_eq!(a.nar_hash.to_prefixed_nix32(), HASH32);
    assert_eq!(a.nar_size, 176);
    assert_eq!(a.registration_time, 7);
    assert!(a.ultimate);
    assert_eq!(a.sigs, ["k:AA==", "j:BB=="]);
    assert_eq!(a.ca, None);
    assert_eq!(a.deriver.unwrap().name(), "c.drv");
    let refs: Vec<&str> = a.references.iter().map(|r| r.name()).collect();
    assert_eq!(refs, ["a", "b", "c"], "sorted by base name, self included");

    let b = store
        .path_info(&store.store_dir().parse_path(B).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(b.nar_size, 0, "NULL narSize reads as 0");
    assert_eq!(b.nar_hash.to_prefixed_nix32(), HASH32, "nix32 in the db");
    assert!(!b.ultimate && b.sigs.is_empty() && b.deriver.is_none());
}

#[test]
fn a_hash_between_two_paths_is_absent() {
    let dir = Scratch::new("neighbours");
    make_store(
        dir.path(),
        true,
        &[(A, HASH16, Some(1)), (B, HASH16, Some(1))],
        &[],
    );
    let mut store = open(dir.path());
    // Nix's open `path >= ?` would land on B for these.
    for absent in [
        "0000000000000000000000000000000b",
        "00000000000000000000000000000000",
    ] {
        assert_eq!(
            store.path_info_by_hash(&hash(absent)).unwrap(),
            None,
            "{absent}"
        );
    }
    assert_eq!(
        store
            .path_info_by_hash(&hash("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"))
            .unwrap(),
        None
    );
    let absent = store
        .store_dir()
        .parse_path("/nix/store/0000000000000000000000000000000b-a")
        .unwrap();
    assert_eq!(store.path_info(&absent).unwrap(), None);
}

#[test]
fn unreadable_rows_are_corrupt_not_absent() {
    /// Rows, Refs, and which column is wrong.
    type Case<'a> = (&'a [Row<'a>], &'a [(i64, i64)], &'a str);
    let cases: &[Case] = &[
        (
            &[(
                "/nix/store/0000000000000000000000000000000a-bad name",
                HASH16,
                Some(1),
            )],
            &[],
            "path",
        ),
        (&[(A, "md5:00", Some(1))], &[], "hash"),
        (&[(A, HASH16, Some(-1))], &[], "narSize"),
        (
            &[
                (A, HASH16, Some(1)),
                (
                    "/elsewhere/0000000000000000000000000000000c-b",
                    HASH16,
                    None,
                ),
            ],
            &[(1, 2)],
            "reference",
        ),
    ];
    for (rows, refs, what) in cases {
        let dir = Scratch::new("corrupt");
        make_store(dir.path(), true, rows, refs);
        let got = open(dir.path()).path_info_by_hash(&hash("0000000000000000000000000000000a"));
        match got {
            Err(StoreError::Corrupt(msg)) => {
                assert!(msg.to_string().contains("db.sqlite"), "{what}: {msg}")
            }
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn a_database_not_in_wal_mode_is_refused() {
    let dir = Scratch::new("rollback");
    make_store(dir.path(), false, &[(A, HASH16, Some(1))], &[]);
    let uri = format!("local?root={}", dir.path().display());
    let err = Opener::resolve(&uri, &|_| None).unwrap_err().to_string();
    assert!(
        err.contains("not WAL") && err.contains("db.sqlite"),
        "{err}"
    );
}

#[test]
fn auto_names_everything_it_tried() {
    let dir = Scratch::new("nothing");
    let state = dir.join("state");
    let socket = dir.join("sock");
    let env = |name: &str| match name {
        "NIX_STATE_DIR" => Some(state.display().to_string()),
        "NIX_DAEMON_SOCKET_PATH" => Some(socket.display().to_string()),
        _ => None,
    };
    let err = Opener::resolve("auto", &env).unwrap_err().to_string();
    assert!(!err.contains('\n'), "one line: {err}");
    let db = state.join("db/db.sqlite");
    for part in [
        "cannot open store 'auto'".to_owned(),
        format!("local database {}", db.display()),
        format!("daemon socket {}", socket.display()),
    ] {
        assert!(err.contains(&part), "{part:?} missing from {err}");
    }
}

#[test]
fn store_uri_forms_open_the_same_store() {
    let dir = Scratch::new("forms");
    make_store(dir.path(), true, &[(A, HASH16, Some(1))], &[]);
    let root = dir.path().display().to_string();
    for uri in [format!("local?root={root}"), root.clone()] {
        let opener = Opener::resolve(&uri, &|_| None).unwrap();
        assert_eq!(
            opener.describe(),
            format!("local {root}/nix/var/nix/db/db.sqlite"),
            "{uri}"
        );
        let mut store = opener.open().unwrap();
        let found = store
            .path_info_by_hash(&hash("0000000000000000000000000000000a"))
            .unwrap();
        assert_eq!(found.map(|i| i.nar_size), Some(1), "{uri}");
    }
}

#[test]
fn a_missing_store_directory_is_reported() {
    let dir = Scratch::new("nostore");
    make_store(dir.path(), true, &[], &[]);
    fs::remove_dir(dir.join("nix/store")).unwrap();
    let err = LocalStore::open(location(dir.path()))
        .unwrap()
        .check()
        .unwrap_err()
        .to_string();
    assert!(err.contains("local store directory"), "{err}");
}
