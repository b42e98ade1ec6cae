//! The nix-daemon client against scripted fake daemons: handshakes of every
//! supported version byte by byte, and peers that misbehave. No Nix needed.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix_serve_sd::log::chain;
use nix_serve_sd::nix::hash::Sha256;
use nix_serve_sd::nix::path_info::PathInfo;
use nix_serve_sd::nix::store_path::{HashPart, StoreDir, StorePath};
use nix_serve_sd::store::daemon::{DaemonStore, ProtocolVersion, Trust};
use nix_serve_sd::store::{Store, StoreError};

const MAGIC_1: u64 = 0x6e69_7863;
const MAGIC_2: u64 = 0x6478_696f;
const LAST: u64 = 0x616c_7473;
const ERROR: u64 = 0x6378_7470;
const NEXT: u64 = 0x6f6c_6d67;
const READ: u64 = 0x6461_7461;
const TIMEOUT: Duration = Duration::from_millis(500);
const BASE: &str = "i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt";
const PATH: &str = "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt";
const HASH16: &str = "1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13";

fn u(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn s(text: &str) -> Vec<u8> {
    let pad = (8 - text.len() % 8) % 8;
    [u(text.len() as u64), text.as_bytes().to_vec(), vec![0; pad]].concat()
}

fn expect(c: &mut UnixStream, want: &[u8]) {
    let mut got = vec![0; want.len()];
    c.read_exact(&mut got).expect("client request");
    assert_eq!(got, want, "bytes from the client");
}

fn send(c: &mut UnixStream, bytes: &[u8]) {
    // The client may already have given up on us: that is its right.
    let _ = c.write_all(bytes);
}

/// Waits until the client closes the connection.
fn wait_for_close(c: &mut UnixStream) {
    let _ = c.read_to_end(&mut Vec::new());
}

/// The daemon side of docs/protocols.md §7.4 for a daemon of protocol 1.`minor`.
fn handshake(c: &mut UnixStream, minor: u64) {
    expect(c, &[u(MAGIC_1), u(0x126)].concat());
    send(c, &[u(MAGIC_2), u(0x100 | minor)].concat());
    let v = minor.min(38);
    if v >= 38 {
        expect(c, &u(0)); // the client's (empty) feature set
        send(c, &[u(1), s("some-feature")].concat());
    }
    expect(c, &[u(0), u(0)].concat());
    let mut out = s("2.99.0");
    if v >= 35 {
        out.extend(u(2));
    }
    out.extend(u(LAST));
    send(c, &out);
}

fn path_info_reply(nar_size: u64) -> Vec<u8> {
    path_info_reply_with(nar_size, HASH16)
}

/// The reply for a path whose NAR has the sha256 `hash16` (base16).
fn path_info_reply_with(nar_size: u64, hash16: &str) -> Vec<u8> {
    [
        u(LAST),
        u(1),
        s(""),
        s(hash16),
        u(0),
        u(1795552971),
        u(nar_size),
        u(0),
        u(0),
        s(""),
    ]
    .concat()
}

fn info(nar_size: u64) -> PathInfo {
    PathInfo {
        path: StorePath::from_base_name(BASE).unwrap(),
        deriver: None,
        nar_hash: Sha256::parse_any(HASH16).unwrap(),
        nar_size,
        references: vec![],
        registration_time: 1795552971,
        ultimate: false,
        sigs: vec![],
        ca: None,
    }
}

fn hello() -> StorePath {
    StorePath::from_base_name(BASE).unwrap()
}

/// A fake daemon: `script` gets the listening socket and plays one scene.
struct Peer {
    dir: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl Peer {
    fn new(script: impl FnOnce(UnixListener) + Send + 'static) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nix-serve-sd-peer-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let listener = UnixListener::bind(dir.join("sock")).unwrap();
        let thread = std::thread::spawn(move || script(listener));
        Peer {
            dir,
            thread: Some(thread),
        }
    }

    fn store(&self) -> DaemonStore {
        DaemonStore::new(self.dir.join("sock"), StoreDir::default(), TIMEOUT)
    }

    /// Waits for the script to end, failing the test if it failed.
    fn finish(mut self) {
        if let Err(panic) = self.thread.take().unwrap().join() {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// After the client closed its connection: no second connection is waiting.
fn assert_no_reconnect(listener: &UnixListener) {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("client reconnected: {other:?}"),
    }
}

#[test]
fn handshake_for_each_supported_version() {
    for minor in [34, 35, 37, 38, 39] {
        let peer = Peer::new(move |l| {
            let (mut c, _) = l.accept().unwrap();
            handshake(&mut c, minor);
            expect(&mut c, &[u(26), s(PATH)].concat());
            send(
                &mut c,
                &[u(NEXT), s("a log line\n"), path_info_reply(120)].concat(),
            );
            wait_for_close(&mut c);
        });
        let mut store = peer.store();
        assert_eq!(
            store.path_info(&hello()).unwrap(),
            Some(info(120)),
            "1.{minor}"
        );
        let info = store.daemon_info().unwrap().clone();
        assert_eq!(info.version, ProtocolVersion::new(1, minor.min(38) as u8));
        assert_eq!(info.nix_version.as_deref(), Some("2.99.0"));
        let trust = (minor >= 35).then_some(Trust::NotTrusted);
        assert_eq!(info.trust, trust, "1.{minor}");
        drop(store);
        peer.finish();
    }
}

#[test]
fn unsupported_versions_are_refused() {
    for version in [0x121u64, 0x10a, 0x226] {
        let peer = Peer::new(move |l| {
            let (mut c, _) = l.accept().unwrap();
            expect(&mut c, &[u(MAGIC_1), u(0x126)].concat());
            send(&mut c, &[u(MAGIC_2), u(version)].concat());
            wait_for_close(&mut c);
        });
        match peer.store().check() {
            Err(StoreError::Protocol(m)) => assert!(chain(&m).contains("1.34..=1.38"), "{m:?}"),
            other => panic!("{version:#x}: {other:?}"),
        }
        peer.finish();
    }
}

#[test]
fn garbage_magic_is_a_protocol_error() {
    let peer = Peer::new(|l| {
        let (mut c, _) = l.accept().unwrap();
        send(&mut c, b"HTTP/1.1 400 Bad Request\r\n\r\n");
        wait_for_close(&mut c);
    });
    match peer.store().check() {
        Err(StoreError::Protocol(m)) => assert!(chain(&m).contains("magic"), "{m:?}"),
        other => panic!("{other:?}"),
    }
    peer.finish();
}

#[test]
fn huge_string_lengths_are_refused() {
    // In the handshake (the version string) ...
    let peer = Peer::new(|l| {
        let (mut c, _) = l.accept().unwrap();
        expect(&mut c, &[u(MAGIC_1), u(0x126)].concat());
        send(&mut c, &[u(MAGIC_2), u(0x122)].concat());
        expect(&mut c, &[u(0), u(0)].concat());
        send(&mut c, &u(1 << 50));
        wait_for_close(&mut c);
    });
    assert!(matches!(peer.store().check(), Err(StoreError::Protocol(_))));
    peer.finish();
    // ... and in a reply (the deriver), which drops the connection.
    let peer = Peer::new(|l| {
        let (mut c, _) = l.accept().unwrap();
        handshake(&mut c, 34);
        expect(&mut c, &[u(26), s(PATH)].concat());
        send(&mut c, &[u(LAST), u(1), u(u64::MAX)].concat());
        wait_for_close(&mut c);
        assert_no_reconnect(&l);
    });
    let mut store = peer.store();
    assert!(matches!(
        store.path_info(&hello()),
        Err(StoreError::Protocol(_))
    ));
    assert!(store.daemon_info().is_none());
    drop(store);
    peer.finish();
}

#[test]
fn nonzero_padding_is_a_protocol_error() {
    let peer = Peer::new(|l| {
        let (mut c, _) = l.accept().unwrap();
        handshake(&mut c, 34);
        expect(&mut c, &[u(29), s(&BASE[..32])].concat());
        let mut reply = s(PATH);
        *reply.last_mut().unwrap() = b'x';
        send(&mut c, &[u(LAST), reply].concat());
        wait_for_close(&mut c);
    });
    let hash = HashPart::parse(&BASE[..32]).unwrap();
    match peer.store().path_info_by_hash(&hash) {
        Err(StoreError::Protocol(m)) => assert!(chain(&m).contains("padding"), "{m:?}"),
        other => panic!("{other:?}"),
    }
    peer.finish();
}

#[test]
fn close_mid_reply_is_an_error_and_not_retried() {
    let (answered, client_done) = mpsc::channel();
    let peer = Peer::new(move |l| {
        let (mut c, _) = l.accept().unwrap();
        handshake(&mut c, 34);
        expect(&mut c, &[u(26), s(PATH)].concat());
        let reply = path_info_reply(120);
        send(&mut c, &reply[..reply.len() / 2]);
        drop(c);
        // The client must not resend a request whose reply had begun: once
        // its call has returned, no second connection waits.
        client_done.recv().unwrap();
        assert_no_reconnect(&l);
    });
    match peer.store().path_info(&hello()) {
        Err(StoreError::Unavailable(m)) => assert!(chain(&m).contains("closed"), "{m:?}"),
        other => panic!("{other:?}"),
    }
    answered.send(()).unwrap();
    peer.finish();
}

#[test]
fn silent_peers_time_out() {
    // Silent from the start ...
    let peer = Peer::new(|l| {
        let (mut c, _) = l.accept().unwrap();
        wait_for_close(&mut c);
    });
    assert!(matches!(peer.store().check(), Err(StoreError::Timeout(_))));
    peer.finish();
    // ... or after a request, and in the middle of a NAR.
    let peer = Peer::new(|l| {
        let (mut c, _) = l.accept().unwrap();
        handshake(&mut c, 34);
        expect(&mut c, &[u(26), s(PATH)].concat());
        wait_for_close(&mut c);
        let (mut c, _) = l.accept().unwrap();
        handshake(&mut c, 34);
        expect(&mut c, &[u(26), s(PATH)].concat());
        send(&mut c, &path_info_reply(120));
        expect(&mut c, &[u(38), s(PATH)].concat());
        send(&mut c, &[u(LAST), vec![7; 100]].concat());
        wait_for_close(&mut c);
    });
    let mut store = peer.store();
    assert!(matches!(
        store.path_info(&hello()),
        Err(StoreError::Timeout(_))
    ));
    let mut nar = store.nar_from_daemon(&info(120), 0).unwrap();
    let err = nar.read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    drop(nar);
    assert!(store.daemon_info().is_none());
    drop(store);
    peer.finish();
}

#[test]
fn idle_connection_closed_by_daemon_is_retried_once() {
    let (closed_tx, closed_rx) = mpsc::channel();
    let peer = Peer::new(move |l| {
        let (mut c, _) = l.accept().unwrap();
        handshake(&mut c, 34);
        expect(&mut c, &[u(26), s(PATH)].concat());
        send(&mut c, &path_info_reply(120));
        drop(c); // the daemon restarts
        closed_tx.send(()).unwrap();
        let (mut c, _) = l.accept().unwrap();
        handshake(&mut c, 34);
        expect(&mut c, &[u(26), s(PATH)].concat());
        // Not valid (any more).
        send(&mut c, &[u(LAST), u(0)].concat());
        wait_for_close(&mut c);
    });
    let mut store = peer.store();
    assert!(store.path_info(&hello()).unwrap().is_some());
    closed_rx.recv().unwrap();
    assert_eq!(store.path_info(&hello()).unwrap(), None);
    drop(store);
    peer.finish();
}

#[test]
fn daemon_errors_are_surfaced_without_escapes() {
    let peer = Peer::new(|l| {
        let (mut c, _) = l.accept().unwrap();
        handshake(&mut c, 34);
        expect(&mut c, &[u(26), s(PATH)].concat());
        let message = "path '\x1b[35;1m/nix/store/x\x1b[0m' is not valid";
        let error = [
            u(ERROR),
            s("Error"),
            u(0),
            s("Error"),
            s(message),
            u(0),
            u(0),
        ];
        send(&mut c, &error.concat());
        wait_for_close(&mut c);
        // After an error the client starts afresh.
        let (mut c, _) = l.accept().unwrap();
        handshake(&mut c, 34);
        expect(&mut c, &[u(26), s(PATH)].concat());
        send(&mut c, &[u(READ), u(100)].concat());
        wait_for_close(&mut c);
    });
    let mut store = peer.store();
    match store.path_info(&hello()) {
        Err(StoreError::Daemon(m)) => assert_eq!(m.to_string(), "path '/nix/store/x' is not valid"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.path_info(&hello()),
        Err(StoreError::Protocol(_))
    ));
    drop(store);
    peer.finish();
}

/// A NAR of the registered size but other bytes (a Nix 2.8 daemon writes
/// its error message where the NAR goes when the files are gone): an error
/// before the last bytes, never a whole wrong NAR.
#[test]
fn nar_stream_checks_the_registered_hash() {
    let peer = Peer::new(|l| {
        let (mut c, _) = l.accept().unwrap();
        handshake(&mut c, 34);
        expect(&mut c, &[u(26), s(PATH)].concat());
        send(&mut c, &path_info_reply(120));
        expect(&mut c, &[u(38), s(PATH)].concat());
        send(&mut c, &[u(LAST), vec![3; 120]].concat());
        wait_for_close(&mut c);
    });
    let mut store = peer.store();
    let mut nar = store.nar_from_daemon(&info(120), 0).unwrap();
    let mut got = [0u8; 200];
    let mut n = 0;
    let err = loop {
        match nar.read(&mut got[n..]) {
            Ok(0) => panic!("the whole wrong NAR was read: {n} bytes"),
            Ok(k) => n += k,
            Err(e) => break e,
        }
    };
    assert!(n < 120, "{n} bytes read before the error");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    drop(nar);
    peer.finish();
}

#[test]
fn nar_stream_is_exactly_nar_size() {
    // The NAR the daemon registered: 120 bytes of 1s (checked by its hash
    // as it streams, `nar_stream_checks_the_registered_hash`).
    let registered = Sha256::digest(&[1; 120]);
    let hash16 = registered.to_base16();
    let peer = Peer::new(move |l| {
        // Too many bytes: the reader stops at narSize and drops the connection.
        let (mut c, _) = l.accept().unwrap();
        handshake(&mut c, 34);
        expect(&mut c, &[u(26), s(PATH)].concat());
        send(&mut c, &path_info_reply_with(120, &hash16));
        expect(&mut c, &[u(38), s(PATH)].concat());
        send(&mut c, &[u(LAST), vec![1; 128]].concat());
        wait_for_close(&mut c);
        // Too few: an error, never a short NAR.
        let (mut c, _) = l.accept().unwrap();
        handshake(&mut c, 34);
        expect(&mut c, &[u(26), s(PATH)].concat());
        send(&mut c, &path_info_reply(120));
        expect(&mut c, &[u(38), s(PATH)].concat());
        send(&mut c, &[u(LAST), vec![2; 115]].concat());
    });
    let mut store = peer.store();
    let mut nar = store
        .nar_from_daemon(
            &PathInfo {
                nar_hash: registered,
                ..info(120)
            },
            20,
        )
        .unwrap();
    let mut got = Vec::new();
    nar.read_to_end(&mut got).unwrap();
    assert_eq!(got, [1; 100]);
    drop(nar);
    assert!(
        store.daemon_info().is_none(),
        "extra bytes: connection dropped"
    );

    let mut nar = store.nar_from_daemon(&info(120), 0).unwrap();
    let mut got = Vec::new();
    let err = nar.read_to_end(&mut got).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(got.len(), 115);
    drop(nar);
    drop(store);
    peer.finish();
}

#[test]
fn missing_socket_is_unavailable() {
    let mut store = DaemonStore::new(
        "/nonexistent/nix-serve-sd/sock".into(),
        StoreDir::default(),
        TIMEOUT,
    );
    assert!(matches!(store.check(), Err(StoreError::Unavailable(_))));
    assert!(matches!(
        store.path_info(&hello()),
        Err(StoreError::Unavailable(_))
    ));
}
