//! Differential tests of the NAR encoder against real Nix (docs/style.md §11):
//! every fixture store path and ~20 random trees, whole and from many start
//! offsets, must give exactly `nix-store --dump`'s bytes, and the size and
//! hash `nix-store -q` reports.
//!
//! Run: `NIX_SERVE_SD_FIXTURES=/tmp/nix-fixtures cargo test --test nar_nix
//! -- --include-ignored`. `NIX_SERVE_SD_NAR_SEED=<n>` replays one random tree.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Cursor, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix_serve_sd::nix::hash::Sha256;
use nix_serve_sd::nix::nar::{nar_hash_and_size, NarError, NarReader, READ_BUF_SIZE};

use common::{run, write_file, Fixtures, Scratch};

/// Nix's NAR is kept in memory for the offset checks up to this size;
/// larger ones are dumped again for every start offset.
const SMALL: u64 = 1024 * 1024;

/// Every file's contents boundaries are start offsets when there are at most
/// this many files; beyond, a sample (first, last and every n-th).
const ALL_SPANS: usize = 64;

fn nix_store(args: &[&OsStr]) -> String {
    run(Command::new("nix-store").args(args)).trim().to_string()
}

/// `nix-store --dump path`, its stdout piped.
fn spawn_dump(path: &Path) -> Child {
    Command::new("nix-store")
        .arg("--dump")
        .arg(path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run nix-store (is Nix installed?): {e}"))
}

/// Reads until `buf` is full or the stream ends.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Compares two streams that start at NAR offset `base` in lockstep without
/// holding either; returns their common length, or where they first differ.
fn compare(base: u64, ours: &mut impl Read, theirs: &mut impl Read) -> Result<u64, String> {
    let (mut a, mut b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut at = base;
    loop {
        let na = fill(ours, &mut a).map_err(|e| format!("our read failed at {at}: {e}"))?;
        let nb = fill(theirs, &mut b).map_err(|e| format!("nix read failed at {at}: {e}"))?;
        let common = na.min(nb);
        if a[..common] != b[..common] {
            let i = (a.iter().zip(&b)).position(|(x, y)| x != y).unwrap();
            return Err(format!("first differing byte at offset {}", at + i as u64));
        }
        if na != nb {
            let end = at + na.min(nb) as u64;
            return Err(format!("lengths differ: one stream ends at {end}"));
        }
        if na == 0 {
            return Ok(at - base);
        }
        at += na as u64;
    }
}

/// Byte ranges of file contents in a NAR, found by walking its `str`
/// tokens (docs/protocols.md §3: every element is one) and taking each one after "contents".
fn content_spans(nar: &mut impl Read) -> Vec<(u64, u64)> {
    let mut spans = Vec::new();
    let (mut at, mut after_contents) = (0u64, false);
    let mut word = [0u8; 8];
    while fill(nar, &mut word).unwrap() == 8 {
        let len = u64::from_le_bytes(word);
        let padded = len.div_ceil(8) * 8;
        let mut token = Vec::new();
        let copied =
            io::copy(&mut nar.by_ref().take(padded), &mut TokenPrefix(&mut token)).unwrap();
        assert_eq!(copied, padded, "truncated NAR from nix-store");
        if after_contents {
            spans.push((at + 8, at + 8 + len));
        }
        after_contents = len == 8 && token == b"contents";
        at += 8 + padded;
    }
    spans
}

/// Keeps the first 8 bytes written, discards the rest.
struct TokenPrefix<'a>(&'a mut Vec<u8>);

impl io::Write for TokenPrefix<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = 8usize.saturating_sub(self.0.len());
        self.0.extend_from_slice(&buf[..room.min(buf.len())]);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Our NAR of `path` from `offset` against Nix's suffix from `offset`.
fn compare_from(path: &Path, offset: u64, nix_bytes: Option<&[u8]>) -> Result<u64, String> {
    let mut ours = NarReader::open_at(path, offset).map_err(|e| e.to_string())?;
    if let Some(bytes) = nix_bytes {
        return compare(
            offset,
            &mut ours,
            &mut Cursor::new(&bytes[offset as usize..]),
        );
    }
    let mut child = spawn_dump(path);
    let mut stdout = child.stdout.take().unwrap();
    io::copy(&mut (&mut stdout).take(offset), &mut io::sink()).unwrap();
    let result = compare(offset, &mut ours, &mut stdout);
    // On a mismatch nix-store may still be writing: stop it, then reap it.
    drop(stdout);
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Checks `path` every way: whole stream, size and hash (against `nix-store
/// -q` when it is a store path), and suffixes from many offsets. `label`
/// names the case (and its seed) in every failure.
fn check_path(label: &str, path: &Path, in_store: bool) {
    let fail = |what: String| -> ! { panic!("{label}: {}: {what}", path.display()) };
    let reader = NarReader::open(path).unwrap_or_else(|e| fail(e.to_string()));
    let size = reader.nar_size();
    let streamed = compare_from(path, 0, None).unwrap_or_else(|e| fail(format!("whole NAR: {e}")));
    if streamed != size {
        fail(format!(
            "planned {size} bytes, nix-store --dump gave {streamed}"
        ));
    }
    let (hash, hashed) = nar_hash_and_size(path).unwrap_or_else(|e| fail(e.to_string()));
    assert_eq!(hashed, size, "{label}");
    if in_store {
        let q_size: u64 = nix_store(&["-q".as_ref(), "--size".as_ref(), path.as_os_str()])
            .parse()
            .unwrap();
        let q_hash = nix_store(&["-q".as_ref(), "--hash".as_ref(), path.as_os_str()]);
        let q_hash = Sha256::parse_prefixed(&q_hash).unwrap();
        if (q_size, q_hash) != (size, hash) {
            fail(format!(
                "ours {size} {hash}, nix-store -q {q_size} {q_hash}"
            ));
        }
    }

    let mut child = spawn_dump(path);
    let mut nix = Vec::new();
    let spans = if size <= SMALL {
        child.stdout.take().unwrap().read_to_end(&mut nix).unwrap();
        content_spans(&mut Cursor::new(&nix))
    } else {
        content_spans(&mut child.stdout.take().unwrap())
    };
    assert!(child.wait().unwrap().success(), "{label}: nix-store --dump");
    let every = spans.len().div_ceil(ALL_SPANS / 4).max(1);
    let last_few = spans.len().saturating_sub(4);
    let picked: Vec<_> = (spans.iter().enumerate())
        .filter(|&(i, _)| spans.len() <= ALL_SPANS || i < 4 || i >= last_few || i % every == 0)
        .map(|(_, &span)| span)
        .collect();
    let mut offsets: BTreeSet<u64> = [0, 1, 7, 8, 9, size / 2, size.saturating_sub(1), size].into();
    for (start, end) in picked {
        for edge in [start, end] {
            offsets.extend([edge.saturating_sub(1), edge, edge + 1]);
        }
    }
    eprintln!(
        "{label}: {}: {size} bytes, {} files, {} start offsets",
        path.display(),
        spans.len(),
        offsets.len()
    );
    let nix_bytes = (size <= SMALL).then_some(nix.as_slice());
    for &offset in offsets.iter().filter(|&&o| o <= size) {
        match compare_from(path, offset, nix_bytes) {
            Ok(n) if n == size - offset => {}
            Ok(n) => fail(format!(
                "from offset {offset}: {n} bytes, expected {}",
                size - offset
            )),
            Err(e) => fail(format!("from offset {offset}: {e}")),
        }
    }
    match NarReader::open_at(path, size + 1) {
        Err(NarError::OffsetPastEnd { .. }) => {}
        other => fail(format!("offset size+1 gave {other:?}")),
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn fixture_paths_match_nix_store_dump() {
    let fx = Fixtures::load();
    let mut count = 0;
    for (name, path) in &fx.paths {
        check_path(name, Path::new(path), true);
        count += 1;
    }
    assert!(
        count >= 10,
        "{}: only {count} fixture paths",
        fx.dir.display()
    );
}

/// splitmix64: small, deterministic, good enough to pick shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out: Vec<u8> = (0..len.div_ceil(8))
            .flat_map(|_| self.next().to_le_bytes())
            .collect();
        out.truncate(len);
        out
    }
}

const NAME_PARTS: [&[u8]; 24] = [
    b"a",
    b"B",
    b"Z",
    b"x y",
    b" lead",
    b"new\nline",
    b"tab\there",
    "é".as_bytes(),
    "日本".as_bytes(),
    b"\"q\"",
    b"'s'",
    b"-dash",
    b".dot",
    b"..dd",
    b"Mixed",
    b"UPPER",
    b"lower",
    b"_",
    b"~",
    b"\xff\xfe",
    b"a.b",
    b"a-b",
    b"ab",
    b"0",
];
const SIZES: [usize; 10] = [0, 1, 7, 8, 9, 4095, 4096, 4097, 100 * 1024 + 3, 300];
const TARGETS: [&[u8]; 9] = [
    b"../x",
    b"sibling",
    b"/nix/store",
    b"/definitely/not/here",
    b"dangling",
    b".",
    b"..",
    b"a b/c\td",
    "é/ü".as_bytes(),
];

/// What the random trees contained, so a generator that stopped making some
/// kind of node fails the test instead of silently testing less.
#[derive(Debug, Default)]
struct Coverage {
    sizes: BTreeSet<usize>,
    executables: u32,
    symlinks: u32,
    empty_dirs: u32,
    nested_dirs: u32,
    non_utf8_names: u32,
    newline_names: u32,
}

/// Fills directory `dir` with `entries` random entries (fewer if names
/// collide), sub-directories getting 0 to 5, recursing while `depth` allows.
fn random_dir(rng: &mut Rng, cov: &mut Coverage, dir: &Path, depth: u32, entries: u64) {
    cov.empty_dirs += u32::from(entries == 0);
    fs::create_dir(dir).unwrap();
    let mut used = HashSet::new();
    for _ in 0..entries {
        let mut name = rng.pick(&NAME_PARTS).to_vec();
        if rng.below(2) == 0 {
            name.push(*rng.pick(b"aZ09-._ \n"));
        }
        if !used.insert(name.clone()) {
            continue;
        }
        cov.non_utf8_names += u32::from(std::str::from_utf8(&name).is_err());
        cov.newline_names += u32::from(name.contains(&b'\n'));
        let path = dir.join(OsStr::from_bytes(&name));
        match rng.below(10) {
            0..=5 => {
                let len = match rng.pick(&SIZES) {
                    300 => rng.below(300) as usize,
                    &n => n,
                };
                let contents = rng.bytes(len);
                cov.sizes.insert(len);
                let executable = rng.below(3) == 0;
                cov.executables += u32::from(executable);
                write_file(&path, &contents, executable);
            }
            6 | 7 if depth > 0 => {
                let entries = rng.below(6);
                cov.nested_dirs += 1;
                random_dir(rng, cov, &path, depth - 1, entries)
            }
            6 | 7 => {
                cov.empty_dirs += 1;
                fs::create_dir(&path).unwrap()
            }
            _ => {
                let target = *rng.pick(&TARGETS);
                cov.symlinks += 1;
                symlink(OsStr::from_bytes(target), &path).unwrap();
            }
        }
    }
}

/// Checks `path` as it is, then as the store path `nix-store --add` makes
/// of it; both must have the same NAR.
fn check_and_add(label: &str, path: &Path) {
    check_path(label, path, false);
    let stored = nix_store(&["--add".as_ref(), path.as_os_str()]);
    check_path(label, Path::new(&stored), true);
    let ours = |p: &Path| nar_hash_and_size(p).unwrap();
    assert_eq!(ours(path), ours(Path::new(&stored)), "{label}: {stored}");
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn random_trees_match_nix_store_dump() {
    let replay = std::env::var("NIX_SERVE_SD_NAR_SEED").ok();
    let seeds: Vec<u64> = match &replay {
        Some(seed) => vec![seed.parse().expect("NIX_SERVE_SD_NAR_SEED: a u64")],
        None => (0..20).map(|i| 0x5eed_0000 + i).collect(),
    };
    let mut cov = Coverage::default();
    for seed in seeds {
        let mut rng = Rng(seed);
        let tmp = Scratch::new(&format!("narnix-rand-{seed}"));
        let root = tmp.join(format!("nar-rand-{seed}"));
        let depth = 1 + rng.below(4) as u32;
        let entries = 3 + rng.below(6);
        random_dir(&mut rng, &mut cov, &root, depth, entries);
        let label = format!("random tree, seed {seed} (replay: NIX_SERVE_SD_NAR_SEED={seed})");
        check_and_add(&label, &root);
    }
    if replay.is_none() {
        let c = &cov;
        let all_sizes = SIZES
            .iter()
            .filter(|&&n| n != 300)
            .all(|n| c.sizes.contains(n));
        let kinds = [c.executables, c.symlinks, c.empty_dirs, c.nested_dirs];
        let names = [c.non_utf8_names, c.newline_names];
        assert!(
            all_sizes && kinds.iter().chain(&names).all(|&n| n >= 3),
            "{cov:?}"
        );
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn file_larger_than_the_read_buffer_and_not_a_multiple_of_8() {
    let len = 2 * READ_BUF_SIZE + 3;
    assert!(len > READ_BUF_SIZE && len % 8 != 0);
    let tmp = Scratch::new("narnix-large");
    let file = tmp.join("large-odd.bin");
    fs::write(&file, Rng(42).bytes(len)).unwrap();
    check_and_add("large file", &file);
    let dir = tmp.join("large-odd-dir");
    fs::create_dir(&dir).unwrap();
    fs::copy(&file, dir.join("big")).unwrap();
    fs::write(dir.join("small"), b"after the big one").unwrap();
    check_and_add("large file in a directory", &dir);
}
