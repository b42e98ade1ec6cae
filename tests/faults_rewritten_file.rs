//! A store file overwritten in place with the same size (issue 14 §2): Nix
//! canonicalises every store file's mtime to 1 and any write changes it, so
//! the NAR layer can notice, by mtime and size at open and again (fstat)
//! after the file's bytes went out, holding back the NAR's closing bytes
//! until the last check passes. Whatever the server does, a download of the
//! changed path must never complete as a 200 of the full NarSize with bytes
//! that are not the NAR Nix recorded: a proxy in front would keep that for a
//! year (`Cache-Control: immutable`).
//!
//! Before the check in src/nix/nar.rs (692e601) the reply was 200, full
//! length, wrong bytes; now the request after the overwrite is refused
//! before the first byte, and the one during it is cut before the NAR's
//! closing bytes.

mod common;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::binary::start_on_any_port;
use common::http::{read_head, Request, LIMIT};
use common::{hash_part, ChrootStore, Fixtures};

/// Far larger than what the kernel buffers between the server and a client
/// with a small receive buffer (loopback send buffers grow to 4 MiB), so a
/// download is mid-stream when we write.
const SIZE: usize = 32 << 20;

fn contents(seed: u8) -> Vec<u8> {
    (0..SIZE)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

/// Overwrites every byte of `file` in place: same size, other bytes.
fn overwrite_in_place(file: &Path, seed: u8) {
    let f = OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(&contents(seed), 0).unwrap();
    f.sync_all().unwrap();
}

/// The NAR of `hash` asked for on a connection with a small receive buffer.
fn request(addr: SocketAddr, hash: &str) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(16 << 10).unwrap();
    s.connect(&addr.into()).unwrap();
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(&Request::get(&format!("/nar/{hash}.nar")).bytes())
        .unwrap();
    s
}

/// Reads the head, then `before` body bytes, calls `between`, reads the rest
/// until the server closes: (status, body).
fn download(mut s: TcpStream, before: usize, between: impl FnOnce()) -> (u16, Vec<u8>) {
    let status = read_head(&mut s).status;
    let mut body = Vec::new();
    let mut chunk = [0u8; 4096];
    while body.len() < before {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    between();
    let _ = s.read_to_end(&mut body);
    (status, body)
}

/// The one thing that must never happen.
fn assert_not_complete_and_wrong(what: &str, status: u16, body: &[u8], nar: &[u8]) {
    assert!(
        !(status == 200 && body.len() == nar.len() && body != nar),
        "{what}: 200 with all {} bytes of NarSize, but not the NAR Nix recorded",
        nar.len()
    );
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn file_overwritten_in_place_with_the_same_size_never_completes_a_download() {
    let _fx = Fixtures::load();
    let store = ChrootStore::new("faults-overwrite");
    let path = store.add("victim.bin", &contents(0));
    let nar = store.dump(&path);
    let hash = hash_part(&path);
    let file = store.writable_file(&path);
    let (_server, addr, _log) = start_on_any_port(&["--store", &store.uri()]);

    // During: the head (Content-Length = NarSize) and 1 MiB are out, then
    // every byte of the file changes.
    let (status, body) = download(request(addr, hash), 1 << 20, || {
        overwrite_in_place(&file, 1)
    });
    assert_not_complete_and_wrong("overwritten during the download", status, &body, &nar);
    eprintln!(
        "during: status {status}, {} of {} bytes, {}",
        body.len(),
        nar.len(),
        if body == nar {
            "the recorded NAR"
        } else {
            "other bytes"
        }
    );

    // Before: the file has changed already when the request comes.
    overwrite_in_place(&file, 2);
    let (status, body) = download(request(addr, hash), 0, || {});
    assert_not_complete_and_wrong("overwritten before the request", status, &body, &nar);

    // And later requests do not start serving the changed file either.
    let (status, body) = download(request(addr, hash), 0, || {});
    assert_not_complete_and_wrong("a later request", status, &body, &nar);
}
