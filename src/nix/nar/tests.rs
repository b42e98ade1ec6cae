//! Byte-exact vectors from `docs/protocols.md` §3, seeking, and files that
//! change under the reader.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "nix-serve-sd-nar-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(unique);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write_file(path: &Path, contents: &[u8], executable: bool) {
    fs::write(path, contents).unwrap();
    let mode = if executable { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Reads `reader` to the end, `chunk` bytes per call at most.
fn read_chunked(reader: &mut NarReader, chunk: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        match reader.read(&mut buf)? {
            0 => return Ok(out),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn nar(path: &Path) -> Vec<u8> {
    let mut reader = NarReader::open(path).unwrap();
    let bytes = read_chunked(&mut reader, READ_BUF_SIZE).unwrap();
    assert_eq!(bytes.len() as u64, reader.nar_size(), "{}", path.display());
    bytes
}

fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// The NAR as its sequence of `str` tokens (docs/protocols.md §3: every element is one),
/// checking that all padding is zero.
fn tokens(nar: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < nar.len() {
        let len = u64::from_le_bytes(nar[at..at + 8].try_into().unwrap()) as usize;
        let padded = len.div_ceil(8) * 8;
        out.push(&nar[at + 8..at + 8 + len]);
        assert!(nar[at + 8 + len..at + 8 + padded].iter().all(|&b| b == 0));
        at += 8 + padded;
    }
    assert_eq!(at, nar.len());
    out
}

fn nar_error(path: &Path, e: io::Error) -> NarError {
    NarError::from_read_error(path, e)
}

#[test]
fn worked_example_hello_is_byte_exact() {
    // docs/protocols.md §3.6, the worked example, row by row.
    let expected = unhex(
        "0d00000000000000 6e69782d61726368 6976652d31000000
         0100000000000000 2800000000000000
         0400000000000000 7479706500000000
         0700000000000000 726567756c617200
         0800000000000000 636f6e74656e7473
         0600000000000000 68656c6c6f0a0000
         0100000000000000 2900000000000000",
    );
    assert_eq!(expected.len(), 120);
    let dir = TempDir::new();
    let path = dir.join("hello");
    write_file(&path, b"hello\n", false);
    assert_eq!(nar(&path), expected);
    let (hash, size) = nar_hash_and_size(&path).unwrap();
    assert_eq!(size, 120);
    assert_eq!(
        hash.to_base16(),
        "1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13"
    );
}

#[test]
fn verified_vectors() {
    type Make = fn(&Path);
    let table: [(&str, Make, u64, &str); 4] = [
        (
            "empty regular file",
            |p| write_file(p, b"", false),
            112,
            "0ip26j2h11n1kgkz36rl4akv694yz65hr72q4kv4b3lxcbi65b3p",
        ),
        (
            "executable hello",
            |p| write_file(p, b"hello\n", true),
            152,
            "1yhh619m3cy1mird7f0l7zsmiv9rayqn075zinda2g7rscwn0hv5",
        ),
        (
            "empty directory",
            |p| fs::create_dir(p).unwrap(),
            96,
            "0sjjj9z1dhilhpc8pq4154czrb79z9cm044jvn75kxcjv6v5l2m5",
        ),
        (
            "symlink to foo",
            |p| symlink("foo", p).unwrap(),
            120,
            "0kw8hbg9msr3l50k3kd52h295n0j17p4v4qawjfppba1spwg9c9p",
        ),
    ];
    for (what, make, size, nix32) in table {
        let dir = TempDir::new();
        let path = dir.join("x");
        make(&path);
        let (hash, got_size) = nar_hash_and_size(&path).unwrap();
        assert_eq!(
            (hash.to_nix32().as_str(), got_size),
            (nix32, size),
            "{what}"
        );
        assert_eq!(NarReader::open(&path).unwrap().nar_size(), size, "{what}");
    }
}

#[test]
fn entries_sorted_by_raw_bytes() {
    let dir = TempDir::new();
    let root = dir.join("root");
    fs::create_dir(&root).unwrap();
    for name in ["a", "B", "_", "Z", "é", "ab", "a.b", "a-b", "A", "~", "0"] {
        write_file(&root.join(name), b"", false);
    }
    let bytes = nar(&root);
    let toks = tokens(&bytes);
    let names: Vec<&[u8]> = toks
        .windows(2)
        .filter(|w| w[0] == b"name")
        .map(|w| w[1])
        .collect();
    let expected: [&[u8]; 11] = [
        b"0",
        b"A",
        b"B",
        b"Z",
        b"_",
        b"a",
        b"a-b",
        b"a.b",
        b"ab",
        b"~",
        "é".as_bytes(),
    ];
    assert_eq!(names, expected);
}

#[test]
fn symlink_target_is_raw_bytes() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new();
    let path = dir.join("link");
    let target = b"../not utf8 \xff\xfe/./x";
    symlink(OsStr::from_bytes(target), &path).unwrap();
    let bytes = nar(&path);
    let toks = tokens(&bytes);
    assert_eq!(toks[toks.len() - 2], target);
    assert_eq!(bytes.len(), 112 + 24);
}

/// A small tree with every node kind, names needing padding and not.
fn small_tree(root: &Path) {
    fs::create_dir(root).unwrap();
    write_file(&root.join("B"), b"bee\n", false);
    write_file(&root.join("a"), b"123456789", true);
    write_file(&root.join("empty"), b"", false);
    fs::create_dir(root.join("emptydir")).unwrap();
    symlink("../target with space", root.join("link")).unwrap();
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    write_file(&root.join("sub/x"), b"seven!!", false);
    write_file(&root.join("sub/y"), b"eight!!!", true);
    write_file(&root.join("sub/deeper/z"), b"seventeen bytes!!", false);
}

#[test]
fn every_offset_yields_the_suffix() {
    let dir = TempDir::new();
    let root = dir.join("tree");
    small_tree(&root);
    let full = nar(&root);
    for offset in 0..=full.len() {
        for chunk in [1, 7, 8, 4096] {
            let mut reader = NarReader::open_at(&root, offset as u64).unwrap();
            assert_eq!(reader.nar_size(), full.len() as u64);
            let got = read_chunked(&mut reader, chunk).unwrap();
            assert!(got == full[offset..], "offset {offset}, chunk {chunk}");
        }
    }
}

#[test]
fn offsets_into_a_file_larger_than_the_buffer() {
    let dir = TempDir::new();
    let path = dir.join("big");
    let len = 3 * READ_BUF_SIZE + 5;
    let contents: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    write_file(&path, &contents, true);
    let full = nar(&path);
    assert_eq!(full.len(), 144 + len + 3);
    let start = 128; // after the length word of the contents `str`
    assert_eq!(full[start..start + len], contents[..]);
    let end = start + len;
    for offset in [
        0,
        1,
        start - 1,
        start,
        start + 1,
        start + READ_BUF_SIZE + 3,
        end - 1,
        end,
        end + 1,
    ] {
        let mut reader = NarReader::open_at(&path, offset as u64).unwrap();
        let got = read_chunked(&mut reader, 4096 + 3).unwrap();
        assert!(got == full[offset..], "offset {offset}");
    }
}

#[test]
fn offset_at_end_is_empty_and_past_end_is_an_error() {
    let dir = TempDir::new();
    let path = dir.join("hello");
    write_file(&path, b"hello\n", false);
    let mut reader = NarReader::open_at(&path, 120).unwrap();
    assert_eq!(reader.read(&mut [0u8; 16]).unwrap(), 0);
    assert!(matches!(
        NarReader::open_at(&path, 121),
        Err(NarError::OffsetPastEnd {
            offset: 121,
            size: 120
        })
    ));
}

#[test]
fn other_file_types_are_rejected() {
    let dir = TempDir::new();
    let root = dir.join("root");
    fs::create_dir(&root).unwrap();
    let socket = root.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    for path in [&root, &socket] {
        match NarReader::open(path) {
            Err(NarError::FileType { path }) => assert!(path.ends_with("sock"), "{path}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn missing_root_is_an_io_error() {
    let dir = TempDir::new();
    assert!(matches!(
        NarReader::open(&dir.join("absent")),
        Err(NarError::Io { .. })
    ));
}

/// Plans a one-file tree holding 64 KiB, lets `change` act after `before`
/// bytes of the NAR were read (0: before the file is opened), and returns
/// the error that reading the rest gives.
fn error_after_change(before: usize, change: impl FnOnce(&Path)) -> String {
    let dir = TempDir::new();
    let root = dir.join("root");
    fs::create_dir(&root).unwrap();
    let file = root.join("f");
    write_file(&file, &vec![b'x'; 64 * 1024], false);
    let mut reader = NarReader::open(&root).unwrap();
    let mut head = vec![0u8; before];
    reader.read_exact(&mut head).unwrap();
    change(&file);
    let error = read_chunked(&mut reader, 4096).unwrap_err();
    let message = nar_error(&root, error).to_string();
    // Once failed, always failed: no resuming at a wrong position.
    let again = reader.read(&mut [0u8; 8]).unwrap_err();
    assert!(matches!(nar_error(&root, again), NarError::Aborted));
    message
}

fn assert_changed(message: &str, what: &str) {
    assert!(
        message.contains("changed while its NAR was streamed"),
        "{message}"
    );
    assert!(message.contains(what), "{message}");
    assert!(message.contains("/root/f"), "{message}");
}

#[test]
fn file_shrinking_mid_stream_is_an_error() {
    let message = error_after_change(1000, |f| {
        OpenOptions::new()
            .write(true)
            .open(f)
            .unwrap()
            .set_len(10_000)
            .unwrap();
    });
    assert_changed(&message, "now shorter than 65536 bytes (ended at 10000)");
}

#[test]
fn file_growing_mid_stream_is_an_error() {
    let message = error_after_change(1000, |f| {
        OpenOptions::new()
            .append(true)
            .open(f)
            .unwrap()
            .write_all(b"more")
            .unwrap();
    });
    assert_changed(&message, "now longer than 65536 bytes");
}

#[test]
fn file_changed_between_plan_and_read_is_an_error() {
    type Change = fn(&Path);
    let cases: [(&str, Change); 6] = [
        ("size 65537 bytes, planned 65536", |f| {
            OpenOptions::new()
                .append(true)
                .open(f)
                .unwrap()
                .write_all(b"!")
                .unwrap()
        }),
        ("size 3 bytes, planned 65536", |f| {
            fs::write(f, b"abc").unwrap()
        }),
        ("vanished", |f| fs::remove_file(f).unwrap()),
        ("no longer a regular file", |f| {
            fs::remove_file(f).unwrap();
            symlink("elsewhere", f).unwrap();
        }),
        // O_NONBLOCK keeps open() from waiting for a writer here.
        ("no longer a regular file", |f| {
            fs::remove_file(f).unwrap();
            let status = std::process::Command::new("mkfifo")
                .arg(f)
                .status()
                .unwrap();
            assert!(status.success());
        }),
        ("executable bit flipped", |f| {
            fs::set_permissions(f, fs::Permissions::from_mode(0o755)).unwrap()
        }),
    ];
    for (what, change) in cases {
        assert_changed(&error_after_change(0, change), what);
    }
}

#[test]
fn reads_span_pieces_and_files() {
    // One large read returns the whole NAR: pieces and files are chained
    // within a call, not one per call.
    let dir = TempDir::new();
    let root = dir.join("tree");
    small_tree(&root);
    let full = nar(&root);
    let mut reader = NarReader::open(&root).unwrap();
    let mut buf = vec![0u8; full.len() + 10];
    assert_eq!(reader.read(&mut buf).unwrap(), full.len());
    assert_eq!(reader.read(&mut buf).unwrap(), 0);
}

/// Walks the NAR through `segment`/`consume`, as the server's sendfile path
/// does, reading file regions with pread.
fn by_segments(reader: &mut NarReader) -> Result<Vec<u8>, NarError> {
    use std::os::unix::fs::FileExt;
    let mut out = Vec::new();
    while let Some(segment) = reader.segment()? {
        let n = match segment {
            Segment::Bytes(b) => {
                // Take a part at a time, as a socket might.
                let k = b.len().min(5);
                out.extend_from_slice(&b[..k]);
                k
            }
            Segment::File { file, offset, len } => {
                let mut buf = vec![0u8; len.min(3) as usize];
                let k = file.read_at(&mut buf, offset).unwrap();
                out.extend_from_slice(&buf[..k]);
                k
            }
        };
        reader.consume(n as u64)?;
    }
    Ok(out)
}

/// Sets every node's mtime to Nix's canonical 1, as a store path has.
fn canonicalise(root: &Path) {
    let status = std::process::Command::new("find")
        .arg(root)
        .args(["-exec", "touch", "-h", "-d", "@1", "{}", "+"])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn segments_reassemble_the_nar_from_any_offset() {
    let dir = TempDir::new();
    let root = dir.join("tree");
    small_tree(&root);
    let full = nar(&root);
    for offset in [0, 1, 7, 8, 100, full.len() as u64 - 1, full.len() as u64] {
        let mut reader = NarReader::open_at(&root, offset).unwrap();
        let got = by_segments(&mut reader).unwrap();
        assert!(got == full[offset as usize..], "offset {offset}");
    }
}

#[test]
fn a_file_shorter_than_planned_ends_the_segments_with_an_error() {
    let dir = TempDir::new();
    let root = dir.join("tree");
    small_tree(&root);
    let mut reader = NarReader::open(&root).unwrap();
    fs::write(root.join("a"), b"1234").unwrap();
    let e = by_segments(&mut reader).unwrap_err();
    assert!(matches!(e, NarError::Changed { .. }), "{e}");
}

#[test]
fn a_store_path_rewritten_in_place_before_the_request_is_refused() {
    let dir = TempDir::new();
    let root = dir.join("tree");
    small_tree(&root);
    canonicalise(&root);
    let full = nar(&root);
    let mut reader = NarReader::open_store_path_at(&root, 0).unwrap();
    assert!(by_segments(&mut reader).unwrap() == full);
    // Same size, other bytes: only the mtime tells.
    fs::write(root.join("sub/x"), b"SEVEN!!").unwrap();
    match NarReader::open_store_path_at(&root, 0) {
        Err(NarError::Changed { path, what }) => {
            assert!(path.ends_with("sub/x"), "{path}");
            assert!(what.contains("modified after Nix registered it"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_store_path_rewritten_in_place_while_it_streams_is_refused() {
    let dir = TempDir::new();
    let root = dir.join("tree");
    small_tree(&root);
    canonicalise(&root);
    let mut reader = NarReader::open_store_path_at(&root, 0).unwrap();
    // Up to the first file's contents, which opens it.
    loop {
        match reader.segment().unwrap() {
            Some(Segment::File { .. }) => break,
            Some(Segment::Bytes(b)) => {
                let n = b.len() as u64;
                reader.consume(n).unwrap();
            }
            None => panic!("no file"),
        }
    }
    // "B" is the first entry (raw byte order): same size, other bytes.
    fs::write(root.join("B"), b"BEE\n").unwrap();
    let e = by_segments(&mut reader).unwrap_err();
    match e {
        NarError::Changed { path, what } => {
            assert!(path.ends_with("/B"), "{path}");
            assert_eq!(what, "written to");
        }
        other => panic!("{other}"),
    }
}
