//! The `auto` decision, with the probes injected.

use std::cell::RefCell;

use super::*;
use crate::store::Failure;

const SYS_DB: &str = "/nix/var/nix/db/db.sqlite";
const SYS_SOCK: &str = "/nix/var/nix/daemon-socket/socket";

/// The machine's local store, as `local` names it.
fn sys_local() -> LocalLocation {
    match parse("local", &|_| None) {
        Ok(Target::Local(loc)) => loc,
        other => panic!("{other:?}"),
    }
}

/// Runs [`decide`] with canned probe results (the local probe's in the order
/// it is asked); returns the backend or error text, which probes ran, and the
/// notes.
fn run_decide(
    uri: &str,
    local_ok: &[Result<(), &str>],
    daemon_ok: Result<(), &str>,
) -> (Result<Backend, String>, Vec<&'static str>, Vec<Note>) {
    let ran = RefCell::new(Vec::new());
    let mut local_ok = local_ok.iter();
    let mut notes = Vec::new();
    let got = decide(
        uri,
        parse(uri, &|_| None).unwrap(),
        &mut |loc| {
            ran.borrow_mut().push("local");
            let ok = local_ok.next().expect("no more local probes expected");
            ok.map_err(|why| {
                let what = format!("local database {}", loc.db.display());
                StoreError::Unavailable(Failure::because(what, why))
            })
        },
        &mut |_, _| {
            ran.borrow_mut().push("daemon");
            daemon_ok.map_err(|why| StoreError::Unavailable(why.into()))
        },
        &mut |n| notes.push(n),
    );
    (got.map_err(|e| e.to_string()), ran.into_inner(), notes)
}

const RO: &str = "attempt to write a readonly database";
const CANT: &str = "unable to open database file";

#[test]
fn auto_prefers_a_readable_database() {
    let (got, ran, notes) = run_decide("auto", &[Ok(())], Ok(()));
    assert_eq!(got, Ok(Backend::Local(sys_local())));
    assert_eq!(ran, ["local"], "the daemon is not even tried");
    assert!(notes.is_empty());
}

#[test]
fn auto_reads_the_database_a_daemon_connection_holds_open() {
    let (got, ran, notes) = run_decide("auto", &[Err(RO), Ok(())], Ok(()));
    assert_eq!(got, Ok(Backend::Local(sys_local())));
    assert_eq!(ran, ["local", "daemon", "local"]);
    let [Note::Held(note)] = &notes[..] else {
        panic!("one Held note expected: {notes:?}")
    };
    for part in [SYS_DB, SYS_SOCK, RO] {
        assert!(note.contains(part), "{part:?} missing from {note}");
    }
}

#[test]
fn auto_falls_back_to_the_daemon_once_and_says_why() {
    let (got, ran, notes) = run_decide("auto", &[Err(RO), Err(CANT)], Ok(()));
    assert_eq!(
        got,
        Ok(Backend::Daemon {
            socket: SYS_SOCK.into(),
            store_dir: StoreDir::default()
        })
    );
    assert_eq!(ran, ["local", "daemon", "local"]);
    let [Note::Fallback(note)] = &notes[..] else {
        panic!("one Fallback note expected: {notes:?}")
    };
    // The second attempt's error: the one made with the daemon's help.
    assert!(
        note.contains(SYS_SOCK) && note.contains(CANT) && note.contains("connection open"),
        "{note}"
    );
}

#[test]
fn auto_failure_is_one_line_naming_both_attempts() {
    let (got, ran, notes) = run_decide("auto", &[Err(RO)], Err("connection refused"));
    assert_eq!(
        got,
        Err(format!(
            "store unavailable: cannot open store 'auto': local database {SYS_DB}: {RO}; \
             daemon socket {SYS_SOCK}: connection refused"
        ))
    );
    assert_eq!(ran, ["local", "daemon"], "no second look without a daemon");
    assert!(notes.is_empty());
}

#[test]
fn explicit_local_never_falls_back() {
    let (got, ran, _) = run_decide("local", &[Err(RO)], Ok(()));
    let err = got.unwrap_err();
    assert!(err.contains(SYS_DB) && err.contains(RO), "{err}");
    assert_eq!(ran, ["local"]);
}

#[test]
fn explicit_daemon_never_reads_the_database() {
    let (got, ran, _) = run_decide("daemon", &[], Err("no such file"));
    assert_eq!(
        got,
        Err(format!(
            "store unavailable: cannot open store 'daemon': daemon socket {SYS_SOCK}: no such file"
        ))
    );
    assert_eq!(ran, ["daemon"]);
}
