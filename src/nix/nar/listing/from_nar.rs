//! The NAR listing made from a NAR stream rather than from files: for a
//! store whose files are not on this machine, where the NAR is all the
//! nix-daemon can send (NarFromPath).
//!
//! One pass, in order, holding no file contents: a file's bytes are skipped
//! and only counted, so the memory used is the listing's plus one name per
//! open directory. The grammar and the checks are `docs/protocols.md` §3's:
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
/// (and Nix ≥ 2.35's bound, docs/protocols.md §3).
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

/// Nix's rules for an entry name (docs/protocols.md §3), and the order: strictly after the
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

    /// A `str` of at most `max` bytes (docs/protocols.md §3), padding checked.
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

    /// The tag `want` (docs/protocols.md §3: tokens must be exact).
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
mod tests;
