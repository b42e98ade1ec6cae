//! A scripted daemon peer for the wire-decoder target: a Unix socket whose
//! every connection gets the bytes of one script, so the real client
//! (`DaemonStore`: handshake, stderr loop, ValidPathInfo, NarFromPath) reads
//! whatever the fuzzer wrote, through its public API and real sockets.
//!
//! Scripts are built from pieces, not raw bytes only: well-formed frames
//! (handshake, STDERR codes, a ValidPathInfo) so the fuzzer gets past the
//! first check, and lengths and counts chosen at every bound the client
//! enforces (one under, at, one over), with repetition to reach the counts
//! (100 000 log messages) that raw bytes never would.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Most bytes one connection's script expands to.
pub const MAX_SCRIPT: usize = 4 << 20;

pub const MAGIC_2: u64 = 0x6478_696f;
pub const STDERR_NEXT: u64 = 0x6f6c_6d67;
pub const STDERR_READ: u64 = 0x6461_7461;
pub const STDERR_WRITE: u64 = 0x6461_7416;
pub const STDERR_LAST: u64 = 0x616c_7473;
pub const STDERR_ERROR: u64 = 0x6378_7470;
pub const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
pub const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
pub const STDERR_RESULT: u64 = 0x5253_4c54;

/// The store directory the target uses.
pub const STORE_DIR: &str = "/nix/store";
/// The one path the target asks about: the fixture `text-with-ref` with its
/// first hash character changed, so that it is not on disk and the client's
/// NARs come from the daemon (NarFromPath). The seeds are a real daemon's
/// replies about `text-with-ref`, with the same change (fuzz/seeds.py).
pub const PATH: &str = "0lxbs2f1w3h7ky7wqzlksspqh9d7saam-text-with-ref";
/// Its NAR hash and size (232 bytes, in [`NAR_SIZES`]).
pub const NAR_HASH: &str = "sha256:0zmk9qhb3pq81ny8kc27m7iaa386wpmbbfjwy5sz0h6g3ai1mn5q";

/// Lengths and counts at the client's bounds (src/store/daemon/*.rs,
/// src/store/wire.rs), and their neighbours.
const LENGTHS: &[u64] = &[
    0,
    1,
    7,
    8,
    9,
    255,
    256,
    257,
    // The store-path bound for STORE_DIR: dir + / + 32 + - + 211.
    (STORE_DIR.len() + 1 + 32 + 1 + 211) as u64,
    (STORE_DIR.len() + 1 + 32 + 1 + 211 + 1) as u64,
    1023,
    1024,
    1025,
    65_535,
    65_536,
    65_537,
    999,
    1000,
    1001,
    99_999,
    100_000,
    100_001,
    u32::MAX as u64,
    u64::MAX / 2,
    u64::MAX,
];

/// Sizes a NAR may be announced with; shared by the ValidPathInfo piece and
/// the target's NAR requests so that they can agree.
pub const NAR_SIZES: &[u64] = &[232, 0, 1, 96, 112, 176, 65_535, 65_536, 65_537, 200_000];

/// Constants a script can name in one byte.
const CODES: &[u64] = &[
    MAGIC_2,
    STDERR_NEXT,
    STDERR_READ,
    STDERR_WRITE,
    STDERR_LAST,
    STDERR_ERROR,
    STDERR_START_ACTIVITY,
    STDERR_STOP_ACTIVITY,
    STDERR_RESULT,
    0x122,
    0x123,
    0x125,
    0x126,
    0x127,
    0x121,
    0x200,
    0,
    1,
    2,
];

fn bound(i: u8) -> u64 {
    LENGTHS[usize::from(i) % LENGTHS.len()]
}

fn u64le(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    u64le(out, s.len() as u64);
    out.extend_from_slice(s);
    out.resize(out.len() + (8 - s.len() % 8) % 8, 0);
}

/// Instruction bytes of the script language (documented in fuzz/README.md):
/// `0x00..=0x7f` n: the next n+1 bytes literally; `0x80 + i`: the u64
/// `CODES[i]`; then the well-formed frames below; `NEXT_CONNECTION`
/// starts the next connection's script.
pub const LITERAL_MAX: u8 = 0x7f;
pub const CODE_BASE: u8 = 0x80;
pub const STR: u8 = 0xa0;
pub const HANDSHAKE: u8 = 0xa1;
pub const ERROR: u8 = 0xa2;
pub const PATH_INFO: u8 = 0xa3;
pub const BYTES: u8 = 0xa4;
pub const REPEAT: u8 = 0xa5;
pub const BOUND: u8 = 0xa6;
pub const NEXT_CONNECTION: u8 = 0xf0;

/// Expands a script program into one byte string per connection, each at
/// most [`MAX_SCRIPT`] bytes.
pub fn expand_connections(program: &[u8]) -> Vec<Vec<u8>> {
    program
        .split(|&b| b == NEXT_CONNECTION)
        .map(|p| {
            let mut out = Vec::new();
            expand(p, &mut out, 0);
            out
        })
        .collect()
}

fn room(out: &[u8]) -> usize {
    MAX_SCRIPT.saturating_sub(out.len())
}

fn expand(program: &[u8], out: &mut Vec<u8>, depth: usize) {
    let mut p = program.iter().copied();
    while let Some(op) = p.next() {
        if out.len() >= MAX_SCRIPT {
            return;
        }
        match op {
            0..=LITERAL_MAX => {
                for _ in 0..=op {
                    match p.next() {
                        Some(b) => out.push(b),
                        None => break,
                    }
                }
            }
            b if b >= CODE_BASE && usize::from(b - CODE_BASE) < CODES.len() => {
                u64le(out, CODES[usize::from(b - CODE_BASE)])
            }
            STR => {
                let len = bound(arg(&mut p));
                let fill = arg(&mut p);
                if len > room(out) as u64 {
                    // Too long to send: announce it and let the data run short.
                    u64le(out, len);
                } else {
                    string(out, &vec![fill; len as usize]);
                }
            }
            BOUND => u64le(out, bound(arg(&mut p))),
            HANDSHAKE => {
                let minor = 34 + arg(&mut p) % 6;
                let trust = arg(&mut p) % 4;
                u64le(out, MAGIC_2);
                u64le(out, 0x100 | u64::from(minor));
                if minor >= 38 {
                    u64le(out, 1);
                    string(out, b"some-feature");
                }
                string(out, b"2.8.0");
                if minor >= 35 {
                    u64le(out, u64::from(trust));
                }
                u64le(out, STDERR_LAST);
            }
            ERROR => {
                let traces = arg(&mut p);
                u64le(out, STDERR_ERROR);
                string(out, b"Error");
                u64le(out, 0);
                string(out, b"Error");
                string(out, b"\x1b[31;1merror:\x1b[0m path is not valid");
                u64le(out, 0);
                u64le(out, u64::from(traces));
                for _ in 0..traces {
                    u64le(out, 0);
                    string(out, b"trace");
                }
            }
            PATH_INFO => {
                let size = arg(&mut p);
                let refs = arg(&mut p) % 4;
                let sigs = arg(&mut p) % 3;
                u64le(out, STDERR_LAST);
                u64le(out, 1);
                string(out, b"");
                string(out, NAR_HASH.as_bytes());
                u64le(out, u64::from(refs));
                for _ in 0..refs {
                    string(out, format!("{STORE_DIR}/{PATH}").as_bytes());
                }
                u64le(out, 1_795_552_971);
                u64le(out, NAR_SIZES[usize::from(size) % NAR_SIZES.len()]);
                u64le(out, 0);
                u64le(out, u64::from(sigs));
                for _ in 0..sigs {
                    string(out, b"cache.example.org-1:AAAA");
                }
                string(out, b"");
            }
            BYTES => {
                let n = NAR_SIZES[usize::from(arg(&mut p)) % NAR_SIZES.len()] as usize;
                let n = n.min(room(out));
                out.extend((0..n).map(|i| i as u8));
            }
            REPEAT => {
                let t = arg(&mut p);
                let times = if t % 2 == 0 {
                    u64::from(t)
                } else {
                    bound(t / 2)
                };
                let body_len = usize::from(arg(&mut p));
                let body: Vec<u8> = p.by_ref().take(body_len).collect();
                if depth >= 3 {
                    continue;
                }
                // Expanded once, then copied: a body that expands to
                // nothing costs nothing however often it repeats.
                let mut once = Vec::new();
                expand(&body, &mut once, depth + 1);
                if once.is_empty() {
                    continue;
                }
                for _ in 0..times {
                    if out.len() >= MAX_SCRIPT {
                        return;
                    }
                    let n = once.len().min(room(out));
                    out.extend_from_slice(&once[..n]);
                }
            }
            _ => {}
        }
    }
}

/// An instruction's argument byte; 0 past the end.
fn arg(p: &mut impl Iterator<Item = u8>) -> u8 {
    p.next().unwrap_or(0)
}

/// The peer: serves `scripts[i]` to the i-th connection (nothing to later
/// ones), each on its own thread, until dropped.
pub struct Peer {
    pub socket: PathBuf,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Peer {
    pub fn start(socket: &Path, scripts: Vec<Vec<u8>>) -> Peer {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).expect("bind the peer socket");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let acceptor = thread::spawn(move || {
            let mut scripts = scripts.into_iter();
            let mut served = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let script = scripts.next().unwrap_or_default();
                        served.push(thread::spawn(move || serve(conn, script)));
                    }
                    Err(_) => thread::sleep(Duration::from_micros(50)),
                }
            }
            for s in served {
                let _ = s.join();
            }
        });
        Peer {
            socket: socket.to_owned(),
            stop,
            acceptor: Some(acceptor),
        }
    }
}

/// Sends the script, then reads what the client writes until it hangs up,
/// so that the client never meets a closed socket mid-request by chance:
/// what it sees depends on the script alone.
fn serve(conn: UnixStream, script: Vec<u8>) {
    conn.set_nonblocking(false).ok();
    conn.set_write_timeout(Some(Duration::from_secs(10))).ok();
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = conn.try_clone().expect("clone the peer socket");
    let drain = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    let _ = (&conn).write_all(&script);
    let _ = conn.shutdown(Shutdown::Write);
    let _ = drain.join();
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Writing to a socket whose peer has gone raises SIGPIPE; a Rust `main`
/// ignores it, but libFuzzer's `main` is C's. Ignore it as the server does.
pub fn ignore_sigpipe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: setting a signal's disposition to SIG_IGN, once, before
        // any socket is written; no handler code runs.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    });
}
