use super::*;
use crate::nix::nar::listing::nar_listing;
use crate::nix::nar::listing::tests::Scratch;
use crate::nix::nar::NarReader;
use crate::nix::wire_str::put_str;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

fn nar_of(path: &Path) -> Vec<u8> {
    let mut nar = Vec::new();
    NarReader::open(path)
        .unwrap()
        .read_to_end(&mut nar)
        .unwrap();
    nar
}

/// The listing parsed from our encoder's NAR of `path` is byte for byte
/// the one made from its files.
fn assert_same(path: &Path) -> Vec<u8> {
    let (from_files, size) = nar_listing(path).unwrap();
    let nar = nar_of(path);
    assert_eq!(nar.len() as u64, size);
    let from_nar = listing_from_nar(&nar[..], size).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&from_nar),
        String::from_utf8_lossy(&from_files)
    );
    assert_eq!(from_nar, from_files);
    nar
}

#[test]
fn single_nodes_as_from_files() {
    let s = Scratch::new("from-nar-single");
    fs::write(&s.0, "hello\n").unwrap();
    assert_same(&s.0);
    fs::set_permissions(&s.0, fs::Permissions::from_mode(0o755)).unwrap();
    assert_same(&s.0);
    fs::write(&s.0, "").unwrap();
    assert_same(&s.0);
    fs::remove_file(&s.0).unwrap();
    symlink("/nix/store/nowhere", &s.0).unwrap();
    assert_same(&s.0);
    fs::remove_file(&s.0).unwrap();
    fs::create_dir(&s.0).unwrap();
    assert_same(&s.0);
}

/// Every kind of node, directories closing at several depths at once,
/// byte order, escapes and a name that is not UTF-8.
fn make_tree(r: &Path) {
    fs::create_dir_all(r.join("a/b/c")).unwrap();
    fs::write(r.join("a/b/c/deep"), "deep file\n").unwrap();
    fs::write(r.join("a/b/x"), "x").unwrap();
    fs::create_dir(r.join("e")).unwrap();
    fs::create_dir_all(r.join("f/empty")).unwrap();
    fs::write(r.join("B"), "").unwrap();
    fs::write(r.join("big"), vec![7u8; 200_003]).unwrap();
    fs::write(r.join("run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(r.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(r.join("q\"\\\n\t\u{1}\u{7f} é"), "12").unwrap();
    fs::write(r.join(OsStr::from_bytes(b"caf\xe9")), "latin1").unwrap();
    symlink("a/b/x", r.join("z-relative")).unwrap();
    symlink("/etc/passwd", r.join("z-absolute")).unwrap();
    symlink("../../dangling\"\\", r.join("z-dangling")).unwrap();
}

#[test]
fn tree_as_from_files() {
    let s = Scratch::new("from-nar-tree");
    make_tree(&s.0);
    assert_same(&s.0);
}

/// A NAR cut anywhere, or said to be any other size, is an error, never
/// a panic and never a listing.
#[test]
fn every_truncation_and_wrong_size_fails() {
    let s = Scratch::new("from-nar-truncated");
    fs::create_dir_all(s.0.join("d/e")).unwrap();
    fs::write(s.0.join("d/f"), "abc").unwrap();
    fs::write(s.0.join("x"), "12345678").unwrap();
    symlink("d", s.0.join("y")).unwrap();
    let nar = assert_same(&s.0);
    let size = nar.len() as u64;
    for cut in 0..nar.len() {
        let e = listing_from_nar(&nar[..cut], size).unwrap_err();
        assert!(matches!(e, NarParseError::Truncated { .. }), "{cut}: {e}");
        // Told it is that short, the NAR goes on past it.
        let e = listing_from_nar(&nar[..], cut as u64).unwrap_err();
        assert!(
            matches!(
                e,
                NarParseError::Longer { .. } | NarParseError::ContentsPastEnd { .. }
            ),
            "{cut}: {e}"
        );
    }
    let e = listing_from_nar(&nar[..], size + 8).unwrap_err();
    assert!(matches!(e, NarParseError::Shorter { .. }), "{e}");
    // Bytes past NarSize are not read.
    let mut longer = nar.clone();
    longer.extend_from_slice(&[1; 8]);
    assert!(listing_from_nar(&longer[..], size).is_ok());
}

fn strs(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        put_str(&mut out, p);
    }
    out
}

fn parse(nar: &[u8]) -> Result<Vec<u8>, NarParseError> {
    listing_from_nar(nar, nar.len() as u64)
}

/// A directory holding `names`, each an empty regular file, in the
/// order given.
fn dir_of(names: &[&[u8]]) -> Vec<u8> {
    let mut nar = strs(&[b"nix-archive-1", b"(", b"type", b"directory"]);
    for name in names {
        nar.extend(strs(&[b"entry", b"(", b"name", name, b"node"]));
        nar.extend(strs(&[
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"",
            b")",
            b")",
        ]));
    }
    nar.extend(strs(&[b")"]));
    nar
}

#[test]
fn names_as_nix_requires() {
    assert_eq!(
        parse(&dir_of(&[b"B", b"a", b"\xff"])).unwrap(),
        b"{\"version\":1,\"root\":{\"type\":\"directory\",\"entries\":{\
          \"B\":{\"type\":\"regular\",\"size\":0,\"narOffset\":232},\
          \"a\":{\"type\":\"regular\",\"size\":0,\"narOffset\":416},\
          \"\xff\":{\"type\":\"regular\",\"size\":0,\"narOffset\":600}}}}"
    );
    let bad: [(&[&[u8]], &str); 8] = [
        (&[b""], "is empty"),
        (&[b"."], "is . or .."),
        (&[b".."], "is . or .."),
        (&[b"a/b"], "contains /"),
        (&[b"a\0"], "contains NUL"),
        (&[b"a", b"a"], "not sorted"),
        (&[b"b", b"a"], "not sorted"),
        (&[b"a", b"B"], "not sorted"),
    ];
    for (names, why) in bad {
        let e = parse(&dir_of(names)).unwrap_err();
        assert!(
            matches!(e, NarParseError::Name { .. }) && e.to_string().contains(why),
            "{names:?}: {e}"
        );
    }
    let long = [b'n'; NAME_MAX + 1];
    let e = parse(&dir_of(&[&long])).unwrap_err();
    assert!(matches!(e, NarParseError::TooLong { .. }), "{e}");
    assert!(parse(&dir_of(&[&long[..NAME_MAX]])).is_ok());
}

#[test]
fn malformed_is_an_error() {
    let file = |parts: &[&[u8]]| {
        let mut nar = strs(&[b"nix-archive-1", b"(", b"type", b"regular"]);
        nar.extend(strs(parts));
        nar
    };
    let link = |target: &[u8]| {
        strs(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"symlink",
            b"target",
            target,
            b")",
        ])
    };
    assert!(parse(&link(b"a")).is_ok());
    assert!(parse(&file(&[b"contents", b"ab", b")"])).is_ok());
    assert!(parse(&file(&[b"executable", b"", b"contents", b"ab", b")"])).is_ok());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        (
            "magic",
            strs(&[b"nix-archive-2", b"(", b"type", b"directory", b")"]),
        ),
        (
            "type",
            strs(&[b"nix-archive-1", b"(", b"type", b"fifo", b")"]),
        ),
        (
            "executable value",
            file(&[b"executable", b"x", b"contents", b"", b")"]),
        ),
        ("no contents", file(&[b")"])),
        ("no close", file(&[b"contents", b"ab", b"("])),
        ("tag over the bound", file(&[&[b'c'; TAG_MAX + 1], b")"])),
        ("empty target", link(b"")),
        ("target with NUL", link(b"a\0")),
        ("target over the bound", link(&[b't'; TARGET_MAX + 1])),
        (
            "entry tag",
            strs(&[b"nix-archive-1", b"(", b"type", b"directory", b"entri"]),
        ),
        (
            "trailing bytes",
            strs(&[b"nix-archive-1", b"(", b"type", b"directory", b")", b")"]),
        ),
    ];
    for (what, nar) in cases {
        assert!(parse(&nar).is_err(), "{what}");
    }

    // A contents length past the NAR's end fails before any skip.
    let mut huge = file(&[b"contents"]);
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    let e = parse(&huge).unwrap_err();
    assert!(matches!(e, NarParseError::ContentsPastEnd { .. }), "{e}");
    // A string length of u64::MAX allocates nothing.
    let mut huge = strs(&[b"nix-archive-1"]);
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    let e = parse(&huge).unwrap_err();
    assert!(matches!(e, NarParseError::TooLong { .. }), "{e}");

    // Non-zero padding, in a tag and after contents.
    let mut bad = file(&[b"contents", b"ab", b")"]);
    let at = bad.len() - 16 - 1;
    bad[at] = 1;
    let e = parse(&bad).unwrap_err();
    assert!(matches!(e, NarParseError::Padding { .. }), "{e}");
    let mut bad = file(&[b"contents", b"ab", b")"]);
    *bad.last_mut().unwrap() = 1;
    let e = parse(&bad).unwrap_err();
    assert!(matches!(e, NarParseError::Padding { .. }), "{e}");
}

#[test]
fn nesting_is_bounded() {
    let nested = |depth: usize| {
        let mut nar = strs(&[b"nix-archive-1", b"(", b"type", b"directory"]);
        for _ in 0..depth {
            nar.extend(strs(&[b"entry", b"(", b"name", b"d", b"node"]));
            nar.extend(strs(&[b"(", b"type", b"directory"]));
        }
        for _ in 0..depth {
            nar.extend(strs(&[b")", b")"]));
        }
        nar.extend(strs(&[b")"]));
        nar
    };
    assert!(parse(&nested(DEPTH_MAX - 1)).is_ok());
    let e = parse(&nested(DEPTH_MAX)).unwrap_err();
    assert!(matches!(e, NarParseError::TooDeep { .. }), "{e}");
}

/// An I/O error of the stream is reported as one, with where it was.
#[test]
fn stream_errors_are_io() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::TimedOut, "slow daemon"))
        }
    }
    let e = listing_from_nar(Failing, 100).unwrap_err();
    assert!(
        matches!(&e, NarParseError::Io { at: 0, source } if source.kind() == io::ErrorKind::TimedOut),
        "{e}"
    );
}
