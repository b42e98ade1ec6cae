//! Planning a NAR: one walk of the tree (lstat, readdir, readlink, never a
//! file's contents) that records every node and cuts the byte stream into
//! pieces whose offsets are known before the first byte (`docs/protocols.md` §3).
//!
//! The stream is, in tree pre-order, for every node: its *head* (the entry
//! wrapper and every token up to the file contents), for a regular file its
//! *contents*, for a directory its children, then its *tail* (the contents'
//! padding and the closing parentheses). Heads and tails are rendered from
//! the node on demand, so the plan holds one small record per node and never
//! the NAR's metadata bytes.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::NarError;
use crate::nix::wire_str::{padding, put_str};

/// A byte range in [`Plan::names`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Span {
    start: usize,
    len: usize,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    Regular { size: u64, executable: bool },
    Symlink { target: Span },
    Directory,
}

#[derive(Debug)]
pub(super) struct Node {
    /// The directory holding this node; `None` for the root.
    pub parent: Option<usize>,
    /// The entry name in `parent` (empty for the root).
    name: Span,
    pub kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    Head,
    Contents,
    Tail,
}

/// A contiguous run of the NAR stream. Its length is the distance to the
/// next piece's start (or to the end of the NAR).
#[derive(Clone, Copy, Debug)]
pub(super) struct Piece {
    pub start: u64,
    pub node: usize,
    pub part: Part,
}

#[derive(Debug)]
pub(super) struct Plan {
    root: PathBuf,
    pub nodes: Vec<Node>,
    /// In stream order, starts strictly increasing except that an empty
    /// file's contents piece shares its start with the tail after it.
    pub pieces: Vec<Piece>,
    /// Entry names and symlink targets, raw bytes, back to back.
    names: Vec<u8>,
    pub size: u64,
    /// Every node must have Nix's canonical mtime (see [`CANONICAL_MTIME`]).
    pub canonical: bool,
}

/// The modification time Nix gives every file, directory and symlink of a
/// valid store path (canonicalisePathMetaData). Any write changes it, so a
/// store path's file with another mtime was modified after Nix registered
/// its NarHash, and its bytes cannot be trusted without hashing them.
pub(super) const CANONICAL_MTIME: i64 = 1;

impl Plan {
    /// Walks `root` without following symlinks. With `canonical`, a node
    /// whose mtime is not [`CANONICAL_MTIME`] is an error.
    pub fn new(root: &Path, canonical: bool) -> Result<Self, NarError> {
        let mut planner = Planner {
            plan: Plan {
                root: root.to_path_buf(),
                nodes: Vec::new(),
                pieces: Vec::new(),
                names: Vec::new(),
                size: 0,
                canonical,
            },
            path: root.to_path_buf(),
            scratch: Vec::new(),
        };
        let root_name = Span { start: 0, len: 0 };
        planner.visit(None, root_name)?;
        Ok(planner.plan)
    }

    pub fn piece_len(&self, index: usize) -> u64 {
        let end = self.pieces.get(index + 1).map_or(self.size, |p| p.start);
        end - self.pieces[index].start
    }

    /// The piece holding byte `offset` and how far into it that byte is;
    /// `(pieces.len(), 0)` for `offset == size`. The caller checks
    /// `offset <= size`.
    pub fn locate(&self, offset: u64) -> (usize, u64) {
        if offset >= self.size {
            return (self.pieces.len(), 0);
        }
        // pieces[0] starts at 0, so at least one piece qualifies. Taking the
        // last piece starting at or before `offset` skips an empty file's
        // zero-length contents piece.
        let index = self.pieces.partition_point(|p| p.start <= offset) - 1;
        (index, offset - self.pieces[index].start)
    }

    fn bytes(&self, span: Span) -> &[u8] {
        &self.names[span.start..span.start + span.len]
    }

    /// The path of `node` on disk: the root joined with the entry names.
    pub fn path_of(&self, node: usize) -> PathBuf {
        let mut chain = Vec::new();
        let mut at = node;
        while let Some(parent) = self.nodes[at].parent {
            chain.push(at);
            at = parent;
        }
        let mut path = self.root.clone();
        for &n in chain.iter().rev() {
            path.push(OsStr::from_bytes(self.bytes(self.nodes[n].name)));
        }
        path
    }

    /// Renders a head or tail piece into `out` (cleared first).
    pub fn render(&self, piece: Piece, out: &mut Vec<u8>) {
        out.clear();
        let node = &self.nodes[piece.node];
        match piece.part {
            Part::Head => self.render_head(node, out),
            Part::Tail => render_tail(node, out),
            Part::Contents => {}
        }
    }

    fn render_head(&self, node: &Node, out: &mut Vec<u8>) {
        match node.parent {
            None => put_str(out, b"nix-archive-1"),
            Some(_) => {
                for token in [
                    b"entry" as &[u8],
                    b"(",
                    b"name",
                    self.bytes(node.name),
                    b"node",
                ] {
                    put_str(out, token);
                }
            }
        }
        put_str(out, b"(");
        put_str(out, b"type");
        match node.kind {
            Kind::Regular { size, executable } => {
                put_str(out, b"regular");
                // docs/protocols.md §3: the `"executable" ""` pair comes before "contents".
                if executable {
                    put_str(out, b"executable");
                    put_str(out, b"");
                }
                put_str(out, b"contents");
                // The contents are one `str`: this is its length word; the
                // bytes are the contents piece, the padding is in the tail.
                out.extend_from_slice(&size.to_le_bytes());
            }
            Kind::Symlink { target } => {
                put_str(out, b"symlink");
                put_str(out, b"target");
                put_str(out, self.bytes(target));
            }
            Kind::Directory => put_str(out, b"directory"),
        }
    }
}

fn render_tail(node: &Node, out: &mut Vec<u8>) {
    if let Kind::Regular { size, .. } = node.kind {
        out.resize(padding(size), 0);
    }
    put_str(out, b")");
    if node.parent.is_some() {
        // Closes the `"entry" "("` wrapper.
        put_str(out, b")");
    }
}

struct Planner {
    plan: Plan,
    /// The path of the node being visited.
    path: PathBuf,
    /// Heads and tails are rendered here to learn their lengths, by the same
    /// code that renders them when streaming, so sizes cannot drift.
    scratch: Vec<u8>,
}

impl Planner {
    /// Plans the node at `self.path` and everything under it. Recursion depth
    /// is the tree depth, which PATH_MAX bounds: every level adds at least two
    /// bytes to the full path handed to lstat, which fails beyond 4096.
    fn visit(&mut self, parent: Option<usize>, name: Span) -> Result<(), NarError> {
        let meta = fs::symlink_metadata(&self.path).map_err(|e| self.io_error(e))?;
        if self.plan.canonical && meta.mtime() != CANONICAL_MTIME {
            return Err(NarError::Changed {
                path: self.path.display().to_string(),
                what: format!(
                    "modified after Nix registered it (mtime {}, not {CANONICAL_MTIME})",
                    meta.mtime()
                ),
            });
        }
        let file_type = meta.file_type();
        let kind = if file_type.is_file() {
            Kind::Regular {
                size: meta.len(),
                executable: meta.mode() & libc::S_IXUSR != 0,
            }
        } else if file_type.is_symlink() {
            let target = fs::read_link(&self.path).map_err(|e| self.io_error(e))?;
            Kind::Symlink {
                target: self.intern(target.as_os_str().as_bytes()),
            }
        } else if file_type.is_dir() {
            Kind::Directory
        } else {
            return Err(NarError::FileType {
                path: self.path.display().to_string(),
            });
        };
        let node = self.plan.nodes.len();
        self.plan.nodes.push(Node { parent, name, kind });

        self.push_piece(node, Part::Head)?;
        match kind {
            Kind::Regular { size, .. } => {
                self.plan.pieces.push(Piece {
                    start: self.plan.size,
                    node,
                    part: Part::Contents,
                });
                self.advance(size)?;
            }
            Kind::Symlink { .. } => {}
            Kind::Directory => {
                for entry in self.sorted_entries()? {
                    let name = self.intern(entry.as_bytes());
                    self.path.push(&entry);
                    let result = self.visit(Some(node), name);
                    self.path.pop();
                    result?;
                }
            }
        }
        self.push_piece(node, Part::Tail)
    }

    /// Entry names of the directory at `self.path`, sorted as raw unsigned
    /// bytes (memcmp), as docs/protocols.md §3 requires: `B` (0x42) before `a` (0x61).
    /// readdir never yields `.`, `..`, or names with `/` or NUL.
    fn sorted_entries(&self) -> Result<Vec<OsString>, NarError> {
        let mut names = fs::read_dir(&self.path)
            .and_then(|entries| {
                entries
                    .map(|entry| entry.map(|e| e.file_name()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| self.io_error(e))?;
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Ok(names)
    }

    fn push_piece(&mut self, node: usize, part: Part) -> Result<(), NarError> {
        let piece = Piece {
            start: self.plan.size,
            node,
            part,
        };
        self.plan.render(piece, &mut self.scratch);
        self.plan.pieces.push(piece);
        self.advance(self.scratch.len() as u64)
    }

    fn advance(&mut self, len: u64) -> Result<(), NarError> {
        self.plan.size = self.plan.size.checked_add(len).ok_or(NarError::TooLarge {
            path: self.path.display().to_string(),
        })?;
        Ok(())
    }

    fn intern(&mut self, bytes: &[u8]) -> Span {
        let start = self.plan.names.len();
        self.plan.names.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len(),
        }
    }

    fn io_error(&self, source: std::io::Error) -> NarError {
        NarError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }
}

/// One planned node as the NAR listing sees it (`listing.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Visit<'p> {
    Regular {
        size: u64,
        executable: bool,
        /// Where the file's bytes start in the NAR.
        contents_at: u64,
    },
    Symlink {
        target: &'p [u8],
    },
    Directory,
}

/// Read-only walk of the plan for the NAR listing: no file is read.
impl Plan {
    /// Every node in NAR order (pre-order, entries sorted) as `(depth, entry
    /// name, what it is)`; the root has depth 0 and an empty name.
    pub fn visits(&self) -> impl Iterator<Item = (usize, &[u8], Visit<'_>)> + '_ {
        let mut depths: Vec<usize> = Vec::with_capacity(self.nodes.len());
        self.pieces
            .iter()
            .enumerate()
            .filter_map(move |(i, piece)| {
                if piece.part != Part::Head {
                    return None;
                }
                let node = &self.nodes[piece.node];
                // Pre-order: a parent's depth is known before its children's.
                let depth = node.parent.map_or(0, |p| depths[p] + 1);
                depths.push(depth);
                let visit = match node.kind {
                    Kind::Regular { size, executable } => Visit::Regular {
                        size,
                        executable,
                        // A head is always followed by its contents piece.
                        contents_at: self.pieces[i + 1].start,
                    },
                    Kind::Symlink { target } => Visit::Symlink {
                        target: self.bytes(target),
                    },
                    Kind::Directory => Visit::Directory,
                };
                Some((depth, self.bytes(node.name), visit))
            })
    }
}
