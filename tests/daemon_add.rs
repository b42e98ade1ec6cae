//! AddToStoreNar against a real nix-daemon (Nix 2.8 here): a daemon of the
//! test's own serving an empty chroot store that trusts the fixtures' test
//! key. Oracles: `nix path-info --store` and `nix store dump-path`.

mod common;

use std::io::{self, Read};
use std::time::Duration;

use nix_serve_sd::nix::hash::Sha256;
use nix_serve_sd::nix::path_info::PathInfo;
use nix_serve_sd::nix::signing::SecretKey;
use nix_serve_sd::nix::store_path::StoreDir;
use nix_serve_sd::store::{Store, StoreError};

use common::{
    nix_path_info, nix_store_dump, store_trusting_test_key, ChrootStore, Fixtures, TestDaemon,
};

const REPLY: Duration = Duration::from_secs(60);

fn empty_store(fx: &Fixtures) -> (ChrootStore, TestDaemon) {
    store_trusting_test_key(fx, "add-to-store")
}

/// The machine's info of fixture `name`, signed with `key` (none: unsigned).
fn info_of(fx: &Fixtures, name: &str, key: Option<&str>) -> PathInfo {
    let mut info = nix_path_info(None, fx.path(name));
    info.sigs = match key {
        Some(file) => {
            let key = SecretKey::from_file(&fx.key(file)).unwrap();
            vec![key.sign(&info.fingerprint(&StoreDir::default()))]
        }
        None => vec![],
    };
    info
}

fn valid_in(daemon: &TestDaemon, info: &PathInfo) -> bool {
    daemon.store().path_info(&info.path).unwrap().is_some()
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_signed_nar_is_added_with_its_signature() {
    let fx = Fixtures::load();
    let (store, daemon) = empty_store(&fx);
    let mut client = daemon.store();
    for name in ["dep-leaf", "dep-mid", "many-files"] {
        let info = info_of(&fx, name, Some("secret"));
        let nar = nix_store_dump(fx.path(name));
        client
            .add_to_store_nar(&info, &mut &nar[..], REPLY)
            .unwrap_or_else(|e| panic!("{name}: {}", nix_serve_sd::log::chain(&e)));
        let added = nix_path_info(Some(store.root()), fx.path(name));
        assert_eq!(added.nar_hash, info.nar_hash, "{name}");
        assert_eq!(added.references, info.references, "{name}");
        assert_eq!(added.sigs, info.sigs, "{name}: the signature is kept");
        assert!(!added.ultimate, "{name}: not built here");
        assert_eq!(store.dump(fx.path(name)), nar, "{name}: the same bytes");
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn the_daemon_refuses_what_its_keys_do_not_sign_and_the_connection_stays() {
    let fx = Fixtures::load();
    let (_store, daemon) = empty_store(&fx);
    let mut client = daemon.store();
    let nar = nix_store_dump(fx.path("dep-leaf"));
    for (key, what) in [
        (None, "unsigned"),
        (Some("wrong.secret"), "an untrusted key"),
    ] {
        let info = info_of(&fx, "dep-leaf", key);
        match client.add_to_store_nar(&info, &mut &nar[..], REPLY) {
            Err(StoreError::Daemon(m)) => assert!(
                m.to_string().contains("lacks a valid signature"),
                "{what}: {m}"
            ),
            other => panic!("{what}: {other:?}"),
        }
        assert!(!valid_in(&daemon, &info), "{what}: not added");
        // The daemon read the whole NAR before refusing: the same
        // connection answers the next request.
        assert!(client.path_info(&info.path).unwrap().is_none());
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_wrong_nar_or_a_missing_reference_adds_nothing() {
    let fx = Fixtures::load();
    let (_store, daemon) = empty_store(&fx);
    let mut client = daemon.store();

    let mut info = info_of(&fx, "dep-leaf", Some("secret"));
    let mut nar = nix_store_dump(fx.path("dep-leaf"));
    // A byte of the file's contents: the NAR still parses, its hash differs.
    let contents = nar.windows(8).position(|w| w == b"contents").unwrap();
    nar[contents + 16] ^= 1;
    match client.add_to_store_nar(&info, &mut &nar[..], REPLY) {
        Err(StoreError::Daemon(m)) => assert!(m.to_string().contains("hash mismatch"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!valid_in(&daemon, &info));

    // dep-mid refers to dep-leaf, which is not valid yet.
    let mid = info_of(&fx, "dep-mid", Some("secret"));
    let mid_nar = nix_store_dump(fx.path("dep-mid"));
    match client.add_to_store_nar(&mid, &mut &mid_nar[..], REPLY) {
        Err(StoreError::Daemon(m)) => assert!(m.to_string().contains("is not valid"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!valid_in(&daemon, &mid));

    // Once its reference is there it goes in.
    info.sigs = info_of(&fx, "dep-leaf", Some("secret")).sigs;
    let leaf = nix_store_dump(fx.path("dep-leaf"));
    client
        .add_to_store_nar(&info, &mut &leaf[..], REPLY)
        .unwrap();
    client
        .add_to_store_nar(&mid, &mut &mid_nar[..], REPLY)
        .unwrap();
    assert!(valid_in(&daemon, &mid));
}

/// A NAR source that fails after `left` bytes, as a download cut short.
struct CutAfter<'a> {
    nar: &'a [u8],
    left: usize,
}

impl Read for CutAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("the upstream went away"));
        }
        let n = buf.len().min(self.left).min(self.nar.len());
        buf[..n].copy_from_slice(&self.nar[..n]);
        self.nar = &self.nar[n..];
        self.left -= n;
        Ok(n)
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn an_import_cut_short_leaves_nothing_registered() {
    let fx = Fixtures::load();
    let (store, daemon) = empty_store(&fx);
    let info = info_of(&fx, "compressible-10M", Some("secret"));
    let nar = nix_store_dump(fx.path("compressible-10M"));
    for cut in [0, 8, 5 << 20, nar.len() - 1] {
        let mut client = daemon.store();
        let e = client
            .add_to_store_nar(
                &info,
                &mut CutAfter {
                    nar: &nar,
                    left: cut,
                },
                REPLY,
            )
            .unwrap_err();
        assert!(
            !matches!(e, StoreError::Daemon(_)),
            "cut at {cut}: the transfer broke, not a verdict: {e}"
        );
        assert!(!valid_in(&daemon, &info), "cut at {cut}");
    }
    // Nothing left behind blocks the same path afterwards.
    daemon
        .store()
        .add_to_store_nar(&info, &mut &nar[..], REPLY)
        .unwrap();
    let added = nix_path_info(Some(store.root()), fx.path("compressible-10M"));
    assert_eq!(added.nar_hash, Sha256::digest(&nar));
}
