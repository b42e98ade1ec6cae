//! Streaming NAR encoder (`docs/protocols.md` §3).
//!
//! [`NarReader::open_at`] plans the whole tree first (see `plan.rs`), so the
//! NAR size is known before the first byte and streaming can start at any
//! offset without producing the bytes before it: an HTTP `Range` request
//! costs one walk of the tree, not a re-encode. File contents are read only
//! when the stream reaches them, straight into the caller's buffer, one file
//! open at a time; the reader holds no content buffer of its own.
//!
//! The plan is a snapshot. A regular file is re-checked when it is opened
//! (still a regular file, same size and executable bit) and while it is read
//! (no shorter, no longer): a change is an error, never wrong bytes under a
//! promised length (docs/style.md §8). Directories and symlinks
//! are streamed as planned.

pub mod listing;
mod plan;
#[cfg(test)]
mod tests;

use std::cmp::min;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use thiserror::Error;

use plan::{Kind, Part, Plan};

/// The read size [`nar_hash_and_size`] uses, and a good minimum for any
/// caller: contents are read straight into the caller's buffer, so its size
/// is the syscall size.
#[cfg(any(test, feature = "testing"))]
pub const READ_BUF_SIZE: usize = 128 * 1024;

#[derive(Debug, Error)]
pub enum NarError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: unsupported file type (only regular files, directories and symlinks)")]
    FileType { path: String },
    #[error("{path}: changed while its NAR was streamed: {what}")]
    Changed { path: String, what: String },
    #[error("NAR offset {offset} is past the end of the {size}-byte NAR")]
    OffsetPastEnd { offset: u64, size: u64 },
    #[error("{path}: NAR size overflows 64 bits")]
    TooLarge { path: String },
    #[error("NAR stream read after it failed")]
    Aborted,
    #[error("NAR stream ended after {streamed} bytes, planned {planned}")]
    Length { planned: u64, streamed: u64 },
}

impl NarError {
    /// Recovers the `NarError` a [`NarReader::read`] error carries; any other
    /// I/O error is attributed to `path`.
    #[cfg(any(test, feature = "testing"))]
    pub fn from_read_error(path: &Path, error: io::Error) -> Self {
        if error.get_ref().is_some_and(|inner| inner.is::<NarError>()) {
            if let Some(Ok(nar)) = error.into_inner().map(|inner| inner.downcast::<NarError>()) {
                return *nar;
            }
            unreachable!("checked with is::<NarError>() just above");
        }
        NarError::Io {
            path: path.display().to_string(),
            source: error,
        }
    }

    fn into_io(self) -> io::Error {
        let kind = match &self {
            NarError::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }
}

/// A `Read` over the NAR serialisation of a filesystem path.
///
/// Read errors are `io::Error`s wrapping a [`NarError`]
/// (see [`NarError::from_read_error`]); after one, every read fails.
#[derive(Debug)]
pub struct NarReader {
    plan: Plan,
    /// The piece being streamed; `plan.pieces.len()` once at the end.
    piece: usize,
    /// Bytes of the current piece already streamed.
    done: u64,
    /// The current head or tail piece, rendered; valid when
    /// `rendered == Some(piece)`. Grows to the largest head (a name and a
    /// symlink target, both bounded by the OS), then is reused.
    scratch: Vec<u8>,
    rendered: Option<usize>,
    /// The file of the current contents piece, once opened, with its
    /// modification time then.
    file: Option<(File, Mtime)>,
    failed: bool,
}

/// A file's modification time, seconds and nanoseconds. Nix sets every store
/// file's to 1 and any write changes it, so an unchanged mtime and size at
/// the end of a file mean its bytes were the ones planned, without hashing.
type Mtime = (i64, i64);

/// A run of the NAR at the cursor, for a sender that does not copy file
/// contents through user space (`sendfile(2)`): see [`NarReader::segment`].
#[derive(Debug)]
pub enum Segment<'a> {
    /// Framing bytes (names, lengths, padding, parentheses), rendered.
    Bytes(&'a [u8]),
    /// `len` bytes of `file` from `offset`: file contents.
    File {
        file: &'a File,
        offset: u64,
        len: u64,
    },
}

impl NarReader {
    /// Walks `path` (without reading file contents) to plan the NAR and learn
    /// its size; streaming starts at `offset`. For the tests, which encode
    /// trees that are not store paths: the server serves only those
    /// ([`Self::open_store_path_at`]).
    #[cfg(any(test, feature = "testing"))]
    pub fn open_at(path: &Path, offset: u64) -> Result<Self, NarError> {
        Self::open_planned_at(Plan::new(path, false)?, offset)
    }

    /// [`NarReader::open_at`] for a valid store path: every file, directory
    /// and symlink must still have the mtime Nix gave it (1), when planned
    /// and when opened, so a file rewritten in place, even with the same
    /// size and before the request, is an error and never wrong bytes.
    pub fn open_store_path_at(path: &Path, offset: u64) -> Result<Self, NarError> {
        Self::open_planned_at(Plan::new(path, true)?, offset)
    }

    fn open_planned_at(plan: Plan, offset: u64) -> Result<Self, NarError> {
        if offset > plan.size {
            return Err(NarError::OffsetPastEnd {
                offset,
                size: plan.size,
            });
        }
        let (piece, done) = plan.locate(offset);
        Ok(NarReader {
            plan,
            piece,
            done,
            scratch: Vec::new(),
            rendered: None,
            file: None,
            failed: false,
        })
    }

    #[cfg(any(test, feature = "testing"))]
    pub fn open(path: &Path) -> Result<Self, NarError> {
        Self::open_at(path, 0)
    }

    /// Total NAR size, known before the first byte.
    pub fn nar_size(&self) -> u64 {
        self.plan.size
    }

    /// Fills `buf` from as many pieces as fit.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, NarError> {
        let mut n = 0;
        while n < buf.len() {
            let Some(&piece) = self.plan.pieces.get(self.piece) else {
                break;
            };
            let len = self.plan.piece_len(self.piece);
            if piece.part == Part::Contents {
                n += self.read_contents(piece.node, len, &mut buf[n..])?;
                continue;
            }
            if self.done == len {
                self.next_piece();
                continue;
            }
            self.render_current(piece, len)?;
            let from = self.done as usize;
            let k = min(buf.len() - n, self.scratch.len() - from);
            buf[n..n + k].copy_from_slice(&self.scratch[from..from + k]);
            n += k;
            self.done += k as u64;
        }
        Ok(n)
    }

    /// Streams the contents of file `node` (`len` bytes planned) into `buf`,
    /// opening it first; at its end checks it has no more bytes, closes it
    /// and moves on. An empty file is still opened and checked.
    fn read_contents(&mut self, node: usize, len: u64, buf: &mut [u8]) -> Result<usize, NarError> {
        let (file, _) = match self.file {
            Some(ref mut file) => file,
            None => self.file.insert(open_planned(&self.plan, node, self.done)?),
        };
        if self.done == len {
            if read_retrying(file, &mut [0u8; 1], &self.plan, node)? != 0 {
                return Err(changed(
                    &self.plan,
                    node,
                    format!("now longer than {len} bytes"),
                ));
            }
            self.finish_file(node, len)?;
            return Ok(0);
        }
        let want = min(buf.len() as u64, len - self.done) as usize;
        let k = read_retrying(file, &mut buf[..want], &self.plan, node)?;
        if k == 0 {
            let what = format!("now shorter than {len} bytes (ended at {})", self.done);
            return Err(changed(&self.plan, node, what));
        }
        self.done += k as u64;
        Ok(k)
    }

    /// Renders the head or tail `piece` at the cursor into `scratch`,
    /// once; `len` is what the plan measured for it.
    fn render_current(&mut self, piece: plan::Piece, len: u64) -> Result<(), NarError> {
        if self.rendered != Some(self.piece) {
            self.plan.render(piece, &mut self.scratch);
            self.rendered = Some(self.piece);
            // The plan measured this piece with the same renderer.
            if self.scratch.len() as u64 != len {
                return Err(NarError::Length {
                    planned: len,
                    streamed: self.scratch.len() as u64,
                });
            }
        }
        Ok(())
    }

    fn next_piece(&mut self) {
        self.piece += 1;
        self.done = 0;
    }

    /// At the end of file `node`: checks (fstat) that it still has the
    /// planned size and the mtime it had when opened, closes it and moves on.
    /// The NAR's closing bytes for the file come only after this passes, so
    /// a file rewritten in place while it streamed never yields a complete
    /// NAR (`docs/style.md` §8).
    fn finish_file(&mut self, node: usize, len: u64) -> Result<(), NarError> {
        if let Some((file, opened)) = self.file.take() {
            let meta = file.metadata().map_err(|source| NarError::Io {
                path: self.plan.path_of(node).display().to_string(),
                source,
            })?;
            if meta.len() != len {
                let what = format!("size now {} bytes, planned {len}", meta.len());
                return Err(changed(&self.plan, node, what));
            }
            if mtime(&meta) != opened {
                return Err(changed(&self.plan, node, "written to".into()));
            }
        }
        self.next_piece();
        Ok(())
    }

    /// The run of the NAR at the cursor, `None` at the end; the cursor does
    /// not move until [`NarReader::consume`]. A regular file is opened and
    /// checked when its contents come up, and checked again at their end.
    pub fn segment(&mut self) -> Result<Option<Segment<'_>>, NarError> {
        self.guard(|r| r.step_to_segment())?;
        let Some(&piece) = self.plan.pieces.get(self.piece) else {
            return Ok(None);
        };
        let len = self.plan.piece_len(self.piece);
        Ok(Some(match piece.part {
            Part::Contents => {
                let (file, _) = self.file.as_ref().expect("opened by step_to_segment");
                Segment::File {
                    file,
                    offset: self.done,
                    len: len - self.done,
                }
            }
            Part::Head | Part::Tail => Segment::Bytes(&self.scratch[self.done as usize..]),
        }))
    }

    /// Moves the cursor past `n` bytes of the segment last returned. Zero
    /// bytes of a file segment mean the file ended early: an error.
    pub fn consume(&mut self, n: u64) -> Result<(), NarError> {
        let Some(&piece) = self.plan.pieces.get(self.piece) else {
            return Ok(());
        };
        let len = self.plan.piece_len(self.piece);
        if piece.part == Part::Contents && n == 0 && self.done < len {
            let what = format!("now shorter than {len} bytes (ended at {})", self.done);
            self.failed = true;
            self.file = None;
            return Err(changed(&self.plan, piece.node, what));
        }
        self.done = (self.done + n).min(len);
        Ok(())
    }

    /// Skips finished and empty pieces, opening or closing files, until the
    /// cursor is inside a piece with bytes left (or at the end).
    fn step_to_segment(&mut self) -> Result<(), NarError> {
        while let Some(&piece) = self.plan.pieces.get(self.piece) {
            let len = self.plan.piece_len(self.piece);
            if piece.part == Part::Contents {
                if self.file.is_none() {
                    self.file = Some(open_planned(&self.plan, piece.node, self.done)?);
                }
                if self.done < len {
                    return Ok(());
                }
                self.finish_file(piece.node, len)?;
                continue;
            }
            if self.done == len {
                self.next_piece();
                continue;
            }
            return self.render_current(piece, len);
        }
        Ok(())
    }

    /// Runs `f` unless the reader failed before; a failure is final.
    fn guard(&mut self, f: impl FnOnce(&mut Self) -> Result<(), NarError>) -> Result<(), NarError> {
        if self.failed {
            return Err(NarError::Aborted);
        }
        f(self).inspect_err(|_| {
            self.failed = true;
            self.file = None;
        })
    }
}

fn mtime(meta: &std::fs::Metadata) -> Mtime {
    (meta.mtime(), meta.mtime_nsec())
}

impl Read for NarReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(NarError::Aborted.into_io());
        }
        self.fill(buf).map_err(|e| {
            // The cursor may sit mid-piece with bytes already handed out;
            // nothing after an error could be trusted, so stop for good.
            self.failed = true;
            self.file = None;
            e.into_io()
        })
    }
}

/// Opens the planned regular file `node`, positioned `skip` bytes in, after
/// checking it is still what the plan recorded.
fn open_planned(plan: &Plan, node: usize, skip: u64) -> Result<(File, Mtime), NarError> {
    let Kind::Regular { size, executable } = plan.nodes[node].kind else {
        unreachable!("contents pieces belong to regular files");
    };
    let path = plan.path_of(node);
    // O_NOFOLLOW: a symlink put in the file's place fails (ELOOP) instead of
    // being followed. O_NONBLOCK: a FIFO put there fails the check below
    // instead of blocking open(); it does nothing to a regular file.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(changed(plan, node, "vanished".into()))
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(changed(plan, node, "no longer a regular file".into()))
        }
        Err(source) => {
            let path = path.display().to_string();
            return Err(NarError::Io { path, source });
        }
    };
    let io_error = |source| NarError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = file.metadata().map_err(io_error)?;
    if !meta.file_type().is_file() {
        return Err(changed(plan, node, "no longer a regular file".into()));
    }
    if meta.len() != size {
        let what = format!("size {} bytes, planned {size}", meta.len());
        return Err(changed(plan, node, what));
    }
    if (meta.mode() & libc::S_IXUSR != 0) != executable {
        return Err(changed(plan, node, "executable bit flipped".into()));
    }
    if plan.canonical && meta.mtime() != plan::CANONICAL_MTIME {
        return Err(changed(
            plan,
            node,
            "written to since it was planned".into(),
        ));
    }
    if skip > 0 {
        file.seek(SeekFrom::Start(skip)).map_err(io_error)?;
    }
    Ok((file, mtime(&meta)))
}

fn read_retrying(
    file: &mut File,
    buf: &mut [u8],
    plan: &Plan,
    node: usize,
) -> Result<usize, NarError> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => {
                return result.map_err(|source| NarError::Io {
                    path: plan.path_of(node).display().to_string(),
                    source,
                })
            }
        }
    }
}

fn changed(plan: &Plan, node: usize, what: String) -> NarError {
    NarError::Changed {
        path: plan.path_of(node).display().to_string(),
        what,
    }
}

/// sha256 and length of the NAR of `path`, streamed with a fixed
/// [`READ_BUF_SIZE`] buffer (the narHash and narSize of docs/protocols.md §3).
#[cfg(any(test, feature = "testing"))]
pub fn nar_hash_and_size(path: &Path) -> Result<(super::hash::Sha256, u64), NarError> {
    use super::hash::Sha256;
    use sha2::Digest;
    let mut reader = NarReader::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; READ_BUF_SIZE];
    let mut streamed = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(NarError::from_read_error(path, e)),
        };
        hasher.update(&buf[..n]);
        streamed += n as u64;
    }
    let planned = reader.nar_size();
    if streamed != planned {
        return Err(NarError::Length { planned, streamed });
    }
    Ok((Sha256(hasher.finalize().into()), streamed))
}
