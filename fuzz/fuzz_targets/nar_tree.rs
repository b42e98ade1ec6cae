//! The NAR encoder (src/nix/nar.rs) against generated directory trees: the
//! NAR it streams parses, with an independent parser (fuzz/src/nar.rs), back
//! to the tree that was written; `nar_size()` is its length whatever the read
//! sizes; and the stream opened at any offset k is exactly the whole NAR's
//! suffix from k (what a `Range` request gets).
#![no_main]

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nix_serve_sd::nix::nar::NarReader;
use nix_serve_sd_fuzz::{nar, tree};

/// One scratch directory per fuzzing process.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("nsd-fuzz-nar-{}", std::process::id()));
        let _ = tree::remove(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

/// Reads `r` to its end in reads of at most `chunk` bytes.
fn read_all(r: &mut NarReader, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the NAR: {e}"),
        }
    }
}

/// Reads of any size from 1 byte, but at least 1/256 of a big NAR: a
/// 1-byte read costs one read(2) of a file's contents, and a quarter of a
/// million of them make the target too slow to find anything.
fn chunk_size(choice: u16, len: u64) -> usize {
    usize::from(choice).max(1).max((len / 256) as usize)
}

fuzz_target!(|input: (tree::Tree, u16, u64, u16)| {
    let (tree::Tree(node), chunk, offset, chunk2) = input;
    let root = scratch().join("root");
    tree::remove(&root).expect("clean up the last tree");
    tree::write(&root, &node).expect("write the tree");

    let mut reader = NarReader::open(&root).expect("open a tree we just wrote");
    let size = reader.nar_size();
    let whole = read_all(&mut reader, chunk_size(chunk, size));
    assert_eq!(
        whole.len() as u64,
        size,
        "nar_size() is not the NAR's length"
    );
    match nar::parse(&whole) {
        Ok(parsed) => assert_eq!(parsed, node, "the NAR is not the tree"),
        Err(e) => panic!("the encoder's NAR does not parse: {e}"),
    }

    let k = offset % (size + 1);
    let mut at = NarReader::open_at(&root, k).expect("open at an offset inside the NAR");
    assert_eq!(at.nar_size(), size);
    let suffix = read_all(&mut at, chunk_size(chunk2, size - k));
    assert!(
        suffix == whole[k as usize..],
        "open_at({k}) is not the suffix"
    );
    assert!(
        NarReader::open_at(&root, size + 1).is_err(),
        "an offset past the end opens"
    );
});
