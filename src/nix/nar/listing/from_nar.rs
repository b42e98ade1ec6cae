//! The NAR listing made from a NAR stream rather than from files: for a
//! store whose files are not on this machine, where the NAR is all the
//! nix-daemon can send (NarFromPath).
//!
//! One pass, in order, holding no file contents: a file's bytes are skipped
//! and only counted, so the memory used is the listing's plus one name per
//! open directory. The grammar and the checks are `nix-protocols.md` §3's:
//! exact tokens, zero padding, entry names as Nix requires them (not empty,
//! `.` or `..`, no `/` or NUL) in strictly increasing byte order, and the
//! whole NAR exactly `nar_size` bytes long. Every length is checked against
//! a bound, or against what is left of `nar_size`, before anything is
//! allocated or skipped, so a hostile stream cannot make us allocate without
//! limit, and every step consumes input, so a parse always ends.

use std::io::{self, Read};

use thiserror::Error;

use super::Json;
use crate::nix::nar::plan::Visit;
use crate::nix::wire_str::padding;

/// Longest tag: `nix-archive-1` has 13 bytes.
const TAG_MAX: usize = 16;
/// Longest entry name: Linux's NAME_MAX, the longest a file on disk can have
/// (and Nix ≥ 2.35's bound, §3).
pub const NAME_MAX: usize = 255;
/// Longest symlink target: PATH_MAX less its NUL (also Nix ≥ 2.35's).
pub const TARGET_MAX: usize = 4095;
/// Deepest directory nesting: a tree on disk is bounded by PATH_MAX too,
/// each level adding at least two bytes (`a/`) to the path, so no tree whose
/// listing we can make from files is deeper.
pub const DEPTH_MAX: usize = 2048;

#[derive(Debug, Error)]
pub enum NarParseError {
    #[error("reading the NAR at byte {at}: {source}")]
    Io {
        at: u64,
        #[source]
        source: io::Error,
    },
    /// The stream ended inside the NAR.
    #[error("the NAR stream ends at byte {at}, inside the NAR (NarSize {nar_size})")]
    Truncated { at: u64, nar_size: u64 },
    /// The NAR goes on where NarSize says it ends.
    #[error("the NAR goes on past its NarSize of {nar_size} bytes")]
    Longer { nar_size: u64 },
    /// The NAR ends before NarSize says it does.
    #[error("the NAR ends at byte {at}, short of its NarSize of {nar_size} bytes")]
    Shorter { at: u64, nar_size: u64 },
    #[error("at byte {at}: expected {expected}, found {found:?}")]
    Token {
        at: u64,
        expected: String,
        found: String,
    },
    #[error("at byte {at}: {what} of {len} bytes, more than {max}")]
    TooLong {
        at: u64,
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("at byte {at}: a file of {size} bytes, where {left} are left of the NAR")]
    ContentsPastEnd { at: u64, size: u64, left: u64 },
    #[error("at byte {at}: non-zero padding after the {what}")]
    Padding { at: u64, what: &'static str },
    #[error("at byte {at}: entry name {name:?} {why}")]
    Name {
        at: u64,
        name: String,
        why: &'static str,
    },
    #[error("at byte {at}: directories nested deeper than {DEPTH_MAX}")]
    TooDeep { at: u64 },
}

/// The listing (as `listing::nar_listing` writes it from files) of the NAR
/// that `nar` streams, which must be exactly `nar_size` bytes long. Reads at
/// most `nar_size` bytes.
pub fn listing_from_nar(nar: impl Read, nar_size: u64) -> Result<Vec<u8>, NarParseError> {
    let mut p = Parser {
        r: nar.take(nar_size),
        at: 0,
        nar_size,
    };
    let mut json = Json::new();
    p.expect("nix-archive-1")?;
    // The entry names of the open directories, innermost last: the last
    // name seen in each (empty before its first entry), for the order check.
    let mut open: Vec<Vec<u8>> = Vec::new();
    if p.node(&mut json, 0, b"")? {
        open.push(Vec::new());
    }
    while let Some(last) = open.last_mut() {
        let at = p.at;
        match p.tag()?.as_slice() {
            b")" => {
                open.pop();
                if !open.is_empty() {
                    // The directory was an entry's node: close the entry.
                    p.expect(")")?;
                }
            }
            b"entry" => {
                p.expect("(")?;
                p.expect("name")?;
                let name_at = p.at;
                let name = p.string("entry name", NAME_MAX)?;
                check_name(name_at, &name, last)?;
                *last = name;
                p.expect("node")?;
                let depth = open.len();
                if p.node(&mut json, depth, open[depth - 1].as_slice())? {
                    if depth >= DEPTH_MAX {
                        return Err(NarParseError::TooDeep { at: p.at });
                    }
                    open.push(Vec::new());
                } else {
                    p.expect(")")?;
                }
            }
            other => return Err(token(at, "\"entry\" or \")\"", other)),
        }
    }
    if p.at != nar_size {
        return Err(NarParseError::Shorter { at: p.at, nar_size });
    }
    Ok(json.finish())
}

/// Nix's rules for an entry name (§3), and the order: strictly after the
/// directory's previous entry `last` (empty before the first, and no valid
/// name is empty).
fn check_name(at: u64, name: &[u8], last: &[u8]) -> Result<(), NarParseError> {
    let why = if name.is_empty() {
        "is empty"
    } else if name == b"." || name == b".." {
        "is . or .."
    } else if name.contains(&b'/') {
        "contains /"
    } else if name.contains(&0) {
        "contains NUL"
    } else if name <= last {
        "is not after the previous entry (the NAR directory is not sorted)"
    } else {
        return Ok(());
    };
    Err(NarParseError::Name {
        at,
        name: String::from_utf8_lossy(name).into_owned(),
        why,
    })
}

fn token(at: u64, expected: impl Into<String>, found: &[u8]) -> NarParseError {
    NarParseError::Token {
        at,
        expected: expected.into(),
        found: String::from_utf8_lossy(found).into_owned(),
    }
}

struct Parser<R> {
    /// The stream, cut at `nar_size`: a NAR that claims more ends early.
    r: io::Take<R>,
    /// Bytes consumed: the NAR offset of the next byte.
    at: u64,
    nar_size: u64,
}

impl<R: Read> Parser<R> {
    /// `"(" "type" …` up to the end of a regular file or symlink node (its
    /// `")"` read) or to the start of a directory's entries, written to
    /// `json`. Whether it was a directory.
    fn node(&mut self, json: &mut Json, depth: usize, name: &[u8]) -> Result<bool, NarParseError> {
        self.expect("(")?;
        self.expect("type")?;
        let at = self.at;
        match self.tag()?.as_slice() {
            b"regular" => {
                let mut at = self.at;
                let mut tag = self.tag()?;
                let executable = tag == b"executable";
                if executable {
                    self.expect("")?;
                    at = self.at;
                    tag = self.tag()?;
                }
                if tag != b"contents" {
                    return Err(token(at, "\"contents\"", &tag));
                }
                let size = self.u64()?;
                let contents_at = self.at;
                self.skip_contents(size)?;
                json.visit(
                    depth,
                    name,
                    Visit::Regular {
                        size,
                        executable,
                        contents_at,
                    },
                );
                self.expect(")")?;
                Ok(false)
            }
            b"symlink" => {
                self.expect("target")?;
                let at = self.at;
                let target = self.string("symlink target", TARGET_MAX)?;
                if target.is_empty() || target.contains(&0) {
                    return Err(token(at, "a symlink target (not empty, no NUL)", &target));
                }
                json.visit(depth, name, Visit::Symlink { target: &target });
                self.expect(")")?;
                Ok(false)
            }
            b"directory" => {
                json.visit(depth, name, Visit::Directory);
                Ok(true)
            }
            other => Err(token(
                at,
                "\"regular\", \"symlink\" or \"directory\"",
                other,
            )),
        }
    }

    fn u64(&mut self) -> Result<u64, NarParseError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A `str` of at most `max` bytes (§3), padding checked.
    fn string(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, NarParseError> {
        let at = self.at;
        let len = self.u64()?;
        if len > max as u64 {
            return Err(NarParseError::TooLong {
                at,
                what,
                len,
                max: max as u64,
            });
        }
        let mut s = vec![0u8; len as usize];
        self.read_exact(&mut s)?;
        self.padding(len, what)?;
        Ok(s)
    }

    fn tag(&mut self) -> Result<Vec<u8>, NarParseError> {
        self.string("tag", TAG_MAX)
    }

    /// The tag `want` (§3: tokens must be exact).
    fn expect(&mut self, want: &str) -> Result<(), NarParseError> {
        let at = self.at;
        let found = self.tag()?;
        if found != want.as_bytes() {
            return Err(token(at, format!("{want:?}"), &found));
        }
        Ok(())
    }

    /// Skips a file's `size` bytes and their padding, after checking they
    /// fit in what is left of the NAR (so a huge length fails at once).
    fn skip_contents(&mut self, size: u64) -> Result<(), NarParseError> {
        let left = self.nar_size - self.at;
        if size > left {
            return Err(NarParseError::ContentsPastEnd {
                at: self.at - 8,
                size,
                left,
            });
        }
        let skipped =
            io::copy(&mut (&mut self.r).take(size), &mut io::sink()).map_err(|source| {
                NarParseError::Io {
                    at: self.at,
                    source,
                }
            })?;
        self.at += skipped;
        if skipped != size {
            return Err(self.ended());
        }
        self.padding(size, "file contents")
    }

    fn padding(&mut self, len: u64, what: &'static str) -> Result<(), NarParseError> {
        let mut pad = [0u8; 8];
        let pad = &mut pad[..padding(len)];
        let at = self.at;
        self.read_exact(pad)?;
        if pad.iter().any(|&b| b != 0) {
            return Err(NarParseError::Padding { at, what });
        }
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), NarParseError> {
        let mut done = 0;
        while done < buf.len() {
            match self.r.read(&mut buf[done..]) {
                Ok(0) => return Err(self.ended()),
                Ok(n) => {
                    done += n;
                    self.at += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(NarParseError::Io {
                        at: self.at,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// The stream ended: before `nar_size` (the NAR is short), or at it
    /// (the NAR claims more bytes than that).
    fn ended(&self) -> NarParseError {
        if self.at < self.nar_size {
            NarParseError::Truncated {
                at: self.at,
                nar_size: self.nar_size,
            }
        } else {
            NarParseError::Longer {
                nar_size: self.nar_size,
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
}
