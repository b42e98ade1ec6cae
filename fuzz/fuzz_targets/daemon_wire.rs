//! The nix-daemon client's wire decoding (src/store/wire.rs,
//! src/store/daemon/*.rs): handshake, the STDERR message loop, ValidPathInfo
//! and the NAR after NarFromPath, driven through `DaemonStore`'s public API
//! against a peer (fuzz/src/peer.rs) that sends what the fuzzer scripted, one
//! script per connection, so reconnects and retries are exercised too.
//!
//! Checked: no panic, no hang, no unbounded allocation (libFuzzer's
//! -rss_limit_mb and -malloc_limit_mb), the handshake's version within what
//! we support, a path info only for the path asked, and a NAR stream that
//! yields exactly narSize - offset bytes or fails: never short, never long.
#![no_main]

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nix_serve_sd::nix::hash::Sha256;
use nix_serve_sd::nix::path_info::PathInfo;
use nix_serve_sd::nix::store_path::{StoreDir, StorePath};
use nix_serve_sd::store::daemon::{DaemonStore, ProtocolVersion};
use nix_serve_sd::store::Store;
use nix_serve_sd_fuzz::peer::{self, Peer, NAR_HASH, NAR_SIZES, PATH, STORE_DIR};

enum Op {
    Check,
    ByHash,
    PathInfo,
    Nar { size: u8, offset: u8 },
}

/// The input: a byte n, then n operations (one byte each, two more for a
/// NAR: its size and offset selectors), then the peer's script program
/// (fuzz/src/peer.rs `expand_connections`).
fn split(data: &[u8]) -> (Vec<Op>, &[u8]) {
    let mut it = data.iter().copied();
    let n = it.next().unwrap_or(0) % 7;
    let mut ops = Vec::new();
    let mut used = 1;
    for _ in 0..n {
        let Some(b) = it.next() else { break };
        used += 1;
        ops.push(match b % 5 {
            0 => Op::Check,
            1 => Op::ByHash,
            2 => Op::PathInfo,
            3 => Op::PathInfo,
            _ => {
                used += 2;
                Op::Nar {
                    size: it.next().unwrap_or(0),
                    offset: it.next().unwrap_or(0),
                }
            }
        });
    }
    (ops, data.get(used..).unwrap_or(&[]))
}

/// Offsets worth trying in a NAR of `size` bytes: the ends and their
/// neighbours, past the end included (refused before any request).
fn pick_offset(sel: u8, size: u64) -> u64 {
    match sel % 8 {
        0 => 0,
        1 => 1,
        2 => 8,
        3 => size / 2,
        4 => size.saturating_sub(1),
        5 => size,
        6 => size + 1,
        _ => u64::from(sel),
    }
}

fn socket() -> PathBuf {
    std::env::temp_dir().join(format!("nsd-fuzz-daemon-{}.sock", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    peer::ignore_sigpipe();
    let (ops, program) = split(data);
    let mut scripts = peer::expand_connections(program);
    scripts.truncate(4);
    let daemon = Peer::start(&socket(), scripts);

    let dir = StoreDir::new(STORE_DIR).unwrap();
    let path = StorePath::from_base_name(PATH).unwrap();
    // The peer always answers or hangs up; the time-out only bounds a bug.
    let mut store = DaemonStore::new(daemon.socket.clone(), dir.clone(), Duration::from_secs(20));
    for op in &ops {
        match op {
            Op::Check => {
                if store.check().is_ok() {
                    let v = store.daemon_info().expect("connected").version;
                    assert!(v >= ProtocolVersion::OLDEST && v <= ProtocolVersion::CLIENT);
                }
            }
            Op::ByHash => {
                if let Ok(Some(info)) = store.path_info_by_hash(&path.hash_part()) {
                    // The daemon names the path; only its hash part is asked.
                    assert_eq!(info.path.hash_part(), path.hash_part());
                    assert!(info.references.windows(2).all(|w| w[0] <= w[1]));
                }
            }
            Op::PathInfo => {
                if let Ok(Some(info)) = store.path_info(&path) {
                    assert_eq!(info.path, path);
                }
            }
            Op::Nar { size, offset } => {
                let nar_size = NAR_SIZES[usize::from(*size) % NAR_SIZES.len()];
                let info = PathInfo {
                    path: path.clone(),
                    deriver: None,
                    nar_hash: Sha256::parse_prefixed(NAR_HASH).unwrap(),
                    nar_size,
                    references: vec![],
                    registration_time: 0,
                    ultimate: false,
                    sigs: vec![],
                    ca: None,
                };
                let offset = pick_offset(*offset, nar_size);
                let Ok(mut nar) = store.nar(&info, offset) else {
                    continue;
                };
                let mut got = Vec::new();
                if nar.read_to_end(&mut got).is_ok() {
                    assert_eq!(
                        got.len() as u64,
                        nar_size - offset,
                        "NAR stream of {nar_size} from {offset} ended early or late"
                    );
                }
            }
        }
    }
    drop(store);
    drop(daemon);
});
