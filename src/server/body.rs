//! A reply's body after its head: a NAR from the store's files, sent as
//! framing bytes and file regions (`sendfile(2)`, no copy through user
//! space), or a computed body that the workers read one chunk ahead
//! ([`StreamBody`]). The connection (`conn.rs`) owns the socket, the
//! buffer being written and the write accounting; this module says what
//! comes next.

use std::io::{self, Read};
use std::os::fd::BorrowedFd;

use crate::nix::nar::{NarReader, Segment};

use super::conn::Ctx;
use super::pool::Job;

/// The chunk a worker reads of a computed body at a time.
const FILL: usize = 64 * 1024;
/// Framing bytes gathered before a write.
const GATHER: usize = 16 * 1024;

/// The body still to send.
pub(super) enum Pending {
    None,
    Nar { reader: NarReader, left: u64 },
    Stream(StreamBody),
}

/// A computed body, read by the workers a chunk at a time, one chunk ahead:
/// while the loop writes one chunk, a worker reads the next.
pub(super) struct StreamBody {
    /// `None` while a worker has it, or after its end.
    reader: Option<Box<dyn Read + Send>>,
    /// Bytes still to ask of the reader, when the length is known.
    left: Option<u64>,
    chunked: bool,
    /// The chunk read ahead, framed, for when the one being written is out.
    pub ready: Option<Vec<u8>>,
    /// The reader gave its last byte (and, chunked, the last chunk is framed).
    pub ended: bool,
    /// A buffer to hand the next fill.
    spare: Vec<u8>,
}

impl StreamBody {
    /// `len` bytes from `reader` (`None`: until it ends), framed as chunks
    /// when `chunked`.
    pub fn new(reader: Box<dyn Read + Send>, len: Option<u64>, chunked: bool) -> StreamBody {
        StreamBody {
            reader: Some(reader),
            left: len,
            chunked,
            ready: None,
            ended: false,
            spare: Vec::new(),
        }
    }

    /// Hands the reader to a worker for the next chunk, if it is here and
    /// more is to come.
    pub fn request(&mut self, cx: &Ctx<'_>) {
        if self.ended {
            return;
        }
        let Some(reader) = self.reader.take() else {
            return;
        };
        let want = self.left.map_or(FILL, |l| l.min(FILL as u64) as usize);
        cx.pool.submit(Job::Fill {
            id: cx.id,
            reader,
            buf: std::mem::take(&mut self.spare),
            want,
        });
    }

    /// A worker read `n` bytes into `buf` (0: the reader ended): the chunk
    /// to write, framed, or why the body failed. The reader comes back here
    /// unless the body is at its end.
    pub fn take(
        &mut self,
        reader: Box<dyn Read + Send>,
        mut buf: Vec<u8>,
        n: usize,
    ) -> Result<Vec<u8>, String> {
        let mut chunk = Vec::new();
        if n == 0 {
            if let Some(l) = self.left.filter(|l| *l > 0) {
                return Err(format!("the body ended {l} bytes early"));
            }
            if self.chunked {
                chunk.extend_from_slice(b"0\r\n\r\n");
            }
            self.ended = true;
            return Ok(chunk);
        }
        if let Some(l) = &mut self.left {
            *l -= n as u64;
        }
        if self.chunked {
            chunk.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            chunk.extend_from_slice(&buf[..n]);
            chunk.extend_from_slice(b"\r\n");
            self.spare = buf;
        } else {
            chunk = std::mem::take(&mut buf);
        }
        if self.left == Some(0) {
            // Dropping the reader here, at the exact end, lets a daemon NAR
            // stream hand its connection back.
            self.ended = true;
        } else {
            self.reader = Some(reader);
        }
        Ok(chunk)
    }
}

/// What one step of a NAR body did.
pub(super) enum NarStep {
    /// Framing bytes wait in the out-buffer: write them first.
    Gathered,
    /// This many bytes of a file went out with `sendfile`.
    Sent(u64),
    /// The NAR is all out.
    Done,
    /// The socket is full.
    Blocked,
    /// The client went away.
    PeerGone(io::Error),
    /// The files failed or changed: the NAR cannot be finished.
    Failed(String),
}

/// One step of the NAR `reader` with `left` bytes still to send: gathers
/// framing bytes into `out` (up to [`GATHER`], or until a file's contents
/// come), or, with `out` empty, sends up to `budget` bytes of a file to
/// `sock` with `sendfile(2)`.
pub(super) fn nar_step(
    reader: &mut NarReader,
    left: &mut u64,
    out: &mut Vec<u8>,
    sock: BorrowedFd<'_>,
    budget: u64,
) -> NarStep {
    loop {
        if *left == 0 {
            return NarStep::Done;
        }
        let segment = match reader.segment() {
            Ok(Some(s)) => s,
            Ok(None) => return NarStep::Failed(format!("the NAR ended {left} bytes early")),
            Err(e) => return NarStep::Failed(e.to_string()),
        };
        match segment {
            Segment::Bytes(b) => {
                let k = b.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                out.extend_from_slice(&b[..k]);
                *left -= k as u64;
                let _ = reader.consume(k as u64);
                if out.len() >= GATHER {
                    return NarStep::Gathered;
                }
            }
            Segment::File { .. } if !out.is_empty() => return NarStep::Gathered,
            Segment::File { file, offset, len } => {
                let want = len.min(*left).min(budget).min(1 << 30) as usize;
                let mut off = offset;
                return match rustix::fs::sendfile(sock, file, Some(&mut off), want) {
                    Ok(k) => match reader.consume(k as u64) {
                        Ok(()) => {
                            *left -= k as u64;
                            NarStep::Sent(k as u64)
                        }
                        Err(e) => NarStep::Failed(e.to_string()),
                    },
                    Err(rustix::io::Errno::AGAIN) => NarStep::Blocked,
                    // Interrupted: nothing went out, the next step retries.
                    Err(rustix::io::Errno::INTR) => NarStep::Sent(0),
                    Err(e) if is_peer_error(e) => NarStep::PeerGone(io::Error::from(e)),
                    Err(e) => NarStep::Failed(format!("sendfile: {e}")),
                };
            }
        }
    }
}

/// Whether a failed send means the client is gone (not our source failing).
fn is_peer_error(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    matches!(
        e,
        Errno::PIPE | Errno::CONNRESET | Errno::NOTCONN | Errno::TIMEDOUT | Errno::HOSTUNREACH
    )
}
