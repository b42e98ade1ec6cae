//! The NAR listing: the JSON that Nix writes next to a NAR with
//! `write-nar-listing=true` (`<hash>.ls`), made from the NAR plan, so no
//! file is read, only walked; or, for files not on this machine, from the
//! NAR itself ([`listing_from_nar`]), the same bytes.
//!
//! The shape is Nix 2.8's `listNar` (checked against `nix copy --to
//! 'file://DIR?write-nar-listing=true'` in `tests/routes_listing.rs`):
//! `{"version":1,"root":NODE}` with no whitespace, where NODE is
//! `{"type":"regular","size":N[,"executable":true],"narOffset":N}`,
//! `{"type":"symlink","target":"…"}` or
//! `{"type":"directory","entries":{"name":NODE,…}}`, entries in NAR order.
//! `narOffset` is where the file's bytes start in the NAR, so a client can
//! fetch one file with a `Range` request.
//!
//! Names and symlink targets are bytes, not text. They are written as Nix
//! 2.8's JSON writer does, so that our listing is byte for byte Nix's: `"`
//! and `\` get a backslash, `\n`, `\r`, `\t` their short escapes, other bytes
//! below 0x20 `\u00xx`, and every other byte goes out as is. A name that is
//! not UTF-8 therefore makes a listing that is not UTF-8 either, exactly as
//! Nix's own; JSON parsers that insist on UTF-8 reject both alike.

use std::path::Path;

use super::plan::{Plan, Visit};
use super::NarError;

mod from_nar;

pub use from_nar::{listing_from_nar, NarParseError};

/// The listing of the NAR of `path`, and that NAR's size (for the caller to
/// check against what the store recorded). For the tests: the server lists
/// store paths only ([`store_path_listing`]).
#[cfg(any(test, feature = "testing"))]
pub fn nar_listing(path: &Path) -> Result<(Vec<u8>, u64), NarError> {
    let plan = Plan::new(path, false)?;
    Ok((render(&plan), plan.size))
}

/// [`nar_listing`] of a valid store path: as `NarReader::open_store_path_at`,
/// a node without Nix's canonical mtime is an error (its files were changed
/// after Nix registered them, so the NAR we would serve is refused too).
pub fn store_path_listing(path: &Path) -> Result<(Vec<u8>, u64), NarError> {
    let plan = Plan::new(path, true)?;
    Ok((render(&plan), plan.size))
}

fn render(plan: &Plan) -> Vec<u8> {
    let mut json = Json::new();
    for (depth, name, visit) in plan.visits() {
        json.visit(depth, name, visit);
    }
    json.finish()
}

/// The listing written node by node in NAR order: from a plan here, from a
/// NAR stream in `listing/from_nar.rs`, so both write the same bytes.
pub(super) struct Json {
    out: Vec<u8>,
    /// Directories still open, by depth; each closes with `}}` (its entries
    /// object, then itself).
    open: usize,
    /// Whether the innermost open directory has had an entry yet.
    first: bool,
}

impl Json {
    pub(super) fn new() -> Self {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(br#"{"version":1,"root":"#);
        Json {
            out,
            open: 0,
            first: true,
        }
    }

    /// The next node in NAR order (pre-order, entries sorted), `depth` 0
    /// and an empty name for the root.
    pub(super) fn visit(&mut self, depth: usize, name: &[u8], visit: Visit) {
        let out = &mut self.out;
        while self.open > depth {
            out.extend_from_slice(b"}}");
            self.open -= 1;
            self.first = false;
        }
        if depth > 0 {
            if !self.first {
                out.push(b',');
            }
            put_string(out, name);
            out.push(b':');
        }
        self.first = false;
        match visit {
            Visit::Regular {
                size,
                executable,
                contents_at,
            } => {
                out.extend_from_slice(br#"{"type":"regular","size":"#);
                out.extend_from_slice(size.to_string().as_bytes());
                if executable {
                    out.extend_from_slice(br#","executable":true"#);
                }
                out.extend_from_slice(br#","narOffset":"#);
                out.extend_from_slice(contents_at.to_string().as_bytes());
                out.push(b'}');
            }
            Visit::Symlink { target } => {
                out.extend_from_slice(br#"{"type":"symlink","target":"#);
                put_string(out, target);
                out.push(b'}');
            }
            Visit::Directory => {
                out.extend_from_slice(br#"{"type":"directory","entries":{"#);
                self.open += 1;
                self.first = true;
            }
        }
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        for _ in 0..self.open {
            self.out.extend_from_slice(b"}}");
        }
        self.out.push(b'}');
        self.out
    }
}

/// A JSON string of raw bytes, escaped as Nix 2.8's `toJSON` does (see the
/// module comment).
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::nar::NarReader;
    use std::ffi::OsStr;
    use std::fs;
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::PathBuf;

    /// A path in the temporary directory, removed (with what is under it)
    /// at the end; also for `from_nar`'s tests.
    pub(super) struct Scratch(pub(super) PathBuf);

    impl Scratch {
        pub(super) fn new(name: &str) -> Self {
            let d = std::env::temp_dir().join(format!(
                "nix-serve-sd-listing-{}-{name}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&d);
            Scratch(d)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// The listing of `path`, after checking that its size is the NAR's and
    /// that every `narOffset` points at the file's bytes in the NAR.
    fn listing(path: &Path) -> String {
        let (json, size) = nar_listing(path).unwrap();
        let mut nar = Vec::new();
        NarReader::open(path)
            .unwrap()
            .read_to_end(&mut nar)
            .unwrap();
        assert_eq!(size, nar.len() as u64);
        let plan = Plan::new(path, false).unwrap();
        let files = plan.visits().filter_map(|(_, _, v)| match v {
            Visit::Regular {
                size, contents_at, ..
            } => Some((contents_at as usize, size as usize)),
            _ => None,
        });
        let mut on_disk = Vec::new();
        for ((node, _), (at, size)) in plan
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.kind, super::super::plan::Kind::Regular { .. }))
            .zip(files)
        {
            on_disk.clear();
            fs::File::open(plan.path_of(node))
                .unwrap()
                .read_to_end(&mut on_disk)
                .unwrap();
            assert_eq!(&nar[at..at + size], &on_disk[..], "node {node}");
        }
        String::from_utf8(json).unwrap()
    }

    /// Offsets: the worked example of `docs/protocols.md` §3.6 puts `hello\n` at 0x60.
    #[test]
    fn single_file() {
        let s = Scratch::new("file");
        fs::write(&s.0, "hello\n").unwrap();
        assert_eq!(
            listing(&s.0),
            r#"{"version":1,"root":{"type":"regular","size":6,"narOffset":96}}"#
        );
        // The executable pair adds two 16-byte strings before "contents".
        fs::set_permissions(&s.0, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            listing(&s.0),
            r#"{"version":1,"root":{"type":"regular","size":6,"executable":true,"narOffset":128}}"#
        );
    }

    #[test]
    fn symlink_and_empty_dir() {
        let s = Scratch::new("link");
        symlink("../some/where", &s.0).unwrap();
        assert_eq!(
            listing(&s.0),
            r#"{"version":1,"root":{"type":"symlink","target":"../some/where"}}"#
        );
        let d = Scratch::new("emptydir");
        fs::create_dir(&d.0).unwrap();
        assert_eq!(
            listing(&d.0),
            r#"{"version":1,"root":{"type":"directory","entries":{}}}"#
        );
    }

    /// Nested directories closing at several depths at once, byte order of
    /// entries, and the escapes. Offsets checked by hand with docs/protocols.md §3's size
    /// arithmetic and against `nix copy` in tests/routes_listing.rs.
    #[test]
    fn tree() {
        let s = Scratch::new("tree");
        let r = &s.0;
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::write(r.join("a/b/x"), "x").unwrap();
        fs::create_dir(r.join("e")).unwrap();
        fs::write(r.join("B"), "").unwrap();
        fs::write(r.join("q\"\\\n\t\u{1}"), "12").unwrap();
        symlink("a/b/x", r.join("z")).unwrap();
        assert_eq!(
            listing(r),
            concat!(
                r#"{"version":1,"root":{"type":"directory","entries":{"#,
                r#""B":{"type":"regular","size":0,"narOffset":232},"#,
                r#""a":{"type":"directory","entries":{"b":{"type":"directory","entries":{"#,
                r#""x":{"type":"regular","size":1,"narOffset":688}}}}},"#,
                r#""e":{"type":"directory","entries":{}},"#,
                r#""q\"\\\n\t\u0001":{"type":"regular","size":2,"narOffset":1112},"#,
                r#""z":{"type":"symlink","target":"a/b/x"}}}}"#
            )
        );
    }

    /// Bytes that are not UTF-8 go out raw, as Nix 2.8 writes them.
    #[test]
    fn non_utf8_name() {
        let s = Scratch::new("latin1");
        fs::create_dir(&s.0).unwrap();
        fs::write(s.0.join(OsStr::from_bytes(b"caf\xe9")), "").unwrap();
        let (json, _) = nar_listing(&s.0).unwrap();
        let want: &[u8] = b"{\"version\":1,\"root\":{\"type\":\"directory\",\"entries\":{\
            \"caf\xe9\":{\"type\":\"regular\",\"size\":0,\"narOffset\":232}}}}";
        assert_eq!(json, want);
    }
}
