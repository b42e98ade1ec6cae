//! Both backends' `Store::nar` (the encoder over the store's own files) against
//! `nix-store --dump`, whole and from an offset, for every fixture; and a
//! path whose files vanished is an I/O error, never "absent".

mod common;

use std::io::Read;
use std::process::Command;

use common::{nix_store_dump, run, Fixtures, Scratch};
use nix_serve_sd::nix::hash::Sha256;
use nix_serve_sd::nix::store_path::StoreDir;
use nix_serve_sd::store::{Opener, StoreError};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).expect("NAR stream reads to its end");
    v
}

fn check_backend(uri: &str) {
    let fixtures = Fixtures::load();
    let opener = Opener::resolve(uri, &env).unwrap_or_else(|e| panic!("open {uri}: {e}"));
    let mut store = opener.open().unwrap();
    let dir = StoreDir::default();
    for (name, full) in &fixtures.paths {
        let path = dir.parse_path(full).unwrap();
        let info = store
            .path_info(&path)
            .unwrap()
            .unwrap_or_else(|| panic!("{name} is valid"));
        let want = nix_store_dump(full);
        assert_eq!(info.nar_size, want.len() as u64, "{uri}: {name} size");
        assert_eq!(info.nar_hash, Sha256::digest(&want), "{uri}: {name} hash");
        let got = read_all(store.nar(&info, 0).unwrap());
        assert!(
            got == want,
            "{uri}: {name}: NAR differs from nix-store --dump"
        );
        for offset in [1, want.len() as u64 / 2, want.len() as u64] {
            let got = read_all(store.nar(&info, offset).unwrap());
            assert!(
                got[..] == want[offset as usize..],
                "{uri}: {name}: NAR from offset {offset} is not the suffix"
            );
        }
        assert!(
            store.nar(&info, want.len() as u64 + 1).is_err(),
            "{uri}: {name}: an offset past the end is refused"
        );
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn local_backend_nar_equals_nix_store_dump() {
    check_backend("local");
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn daemon_backend_nar_equals_nix_store_dump() {
    check_backend("daemon");
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn vanished_files_are_an_io_error_not_absent() {
    let _ = Fixtures::load();
    // A path valid in a chroot store whose files we then delete behind
    // Nix's back: the database still lists it.
    let scratch = Scratch::new("vanish");
    let root = scratch.path();
    let src = root.join("gone.txt");
    std::fs::write(&src, "soon gone\n").unwrap();
    let store_arg = format!("local?root={}", root.display());
    let added = run(Command::new("nix-store")
        .args(["--store", &store_arg, "--add"])
        .arg(&src));
    let full = added.trim();
    let opener = Opener::resolve(&store_arg, &env).unwrap();
    let mut store = opener.open().unwrap();
    let path = StoreDir::default().parse_path(full).unwrap();
    let info = store
        .path_info(&path)
        .unwrap()
        .expect("valid before removal");
    let physical = root.join(full.trim_start_matches('/'));
    let mut perms = std::fs::metadata(physical.parent().unwrap())
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(physical.parent().unwrap(), perms).unwrap();
    std::fs::remove_file(&physical).unwrap();
    let nar = store.nar(&info, 0);
    match nar {
        Err(StoreError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        Err(other) => panic!("expected an I/O error, got {other}"),
        Ok(_) => panic!("a NAR of vanished files"),
    }
}
