//! A reply's body after its head, in the two forms that are not simply
//! bytes in memory:
//!
//! - [`SegmentsBody`]: bytes in memory and regions of open files (a NAR
//!   from the store's files). A body thread sends it with `write` and
//!   `sendfile(2)` (no copy through user space): [`send`]. Never on an
//!   event loop, since opening a file and reading it may wait for the disk
//!   (measured with a store whose reads take 2 ms: one loop doing the
//!   `sendfile`s made every client wait, a fresh narinfo 32 ms at the
//!   median; bench/README.md, "Cold disk").
//! - [`StreamBody`]: bytes a reader computes (a daemon's NAR stream, zstd,
//!   a `.bz2` log), read a chunk at a time by a body thread, one chunk
//!   ahead: while the loop writes one chunk, a thread reads the next.

use std::io::{self, ErrorKind, Read};
use std::time::Duration;

use super::app::{Segment, Segments};
use super::sock::Sock;

/// The chunk a body thread reads of a computed body at a time.
pub(super) const FILL: usize = 64 * 1024;
/// How long a body thread waits for room in a full socket before it
/// gives the connection back to its loop: a client that reads at link
/// speed makes room within microseconds, and going back to the loop and
/// out again for every socket buffer costs two thread wake-ups each time
/// (one download at 3.6 GB/s where nginx made 5.6, in one run on a busy
/// machine); one that reads slowly holds the thread no longer than this.
const ROOM_WAIT: Duration = Duration::from_millis(2);
/// Bytes in memory gathered before a write.
const GATHER: usize = 16 * 1024;

/// A body of segments still to send, and the bytes to write before its
/// next segment (the reply's head at first).
pub(super) struct SegmentsBody {
    source: Box<dyn Segments>,
    /// Body bytes not yet taken from `source`.
    left: u64,
    out: Vec<u8>,
    out_pos: usize,
}

impl SegmentsBody {
    /// `len` bytes of `source`, after `head` (bytes not yet written).
    pub fn new(source: Box<dyn Segments>, len: u64, head: Vec<u8>) -> SegmentsBody {
        SegmentsBody {
            source,
            left: len,
            out: head,
            out_pos: 0,
        }
    }
}

/// How a [`send`] turn ended.
#[derive(Debug)]
pub(super) enum SendEnd {
    /// All of it is out.
    Complete,
    /// The socket is full: wait until it is writable.
    Blocked,
    /// This turn's budget is spent; more could go at once.
    Turn,
    /// The client went away.
    PeerGone(io::Error),
    /// The source failed or changed: the body cannot be finished.
    Failed(String),
}

#[derive(Debug)]
pub(super) struct SendOutcome {
    /// Bytes written in this turn, head included.
    pub written: u64,
    pub end: SendEnd,
}

/// Sends what `body` has to `sock`, up to about `budget` bytes. A full
/// socket is waited for, [`ROOM_WAIT`] at a time, while it keeps making
/// room and no other body waits for a thread (`others_wait`): with many
/// clients, a thread waiting for one socket while others could take bytes
/// at once cost a quarter of the throughput at 256 connections.
pub(super) fn send(
    body: &mut SegmentsBody,
    sock: &Sock,
    budget: u64,
    others_wait: &dyn Fn() -> bool,
) -> SendOutcome {
    let mut written = 0u64;
    let end = loop {
        let end = send_until_full(body, sock, budget, &mut written);
        if !matches!(end, SendEnd::Blocked)
            || written >= budget
            || others_wait()
            || !room_soon(sock)
        {
            break end;
        }
    };
    SendOutcome { written, end }
}

/// Whether `sock` has room for more within [`ROOM_WAIT`].
fn room_soon(sock: &Sock) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::from_borrowed_fd(sock.fd(), PollFlags::OUT)];
    let wait = Timespec {
        tv_sec: 0,
        tv_nsec: ROOM_WAIT.as_nanos() as _,
    };
    matches!(poll(&mut fds, Some(&wait)), Ok(1)) && fds[0].revents().contains(PollFlags::OUT)
}

fn send_until_full(
    body: &mut SegmentsBody,
    sock: &Sock,
    budget: u64,
    written: &mut u64,
) -> SendEnd {
    loop {
        if *written >= budget {
            break SendEnd::Turn;
        }
        if let Err(e) = body.gather() {
            break SendEnd::Failed(e.to_string());
        }
        if body.out_pos < body.out.len() {
            match sock.write(&body.out[body.out_pos..]) {
                Ok(n) => {
                    body.out_pos += n;
                    *written += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break SendEnd::Blocked,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break SendEnd::PeerGone(e),
            }
            continue;
        }
        body.out.clear();
        body.out_pos = 0;
        if body.left == 0 {
            break SendEnd::Complete;
        }
        match body.send_file(sock, budget - *written) {
            Ok(Some(k)) => *written += k,
            Ok(None) => break SendEnd::Blocked,
            Err(end) => break end,
        }
    }
}

impl SegmentsBody {
    /// Takes bytes in memory from the source into `out`, up to [`GATHER`]
    /// or until a file's region comes up.
    fn gather(&mut self) -> io::Result<()> {
        while self.left > 0 && self.out.len() - self.out_pos < GATHER {
            let k = match self.source.segment()? {
                None => return Err(ended_early(self.left)),
                Some(Segment::File { .. }) => return Ok(()),
                Some(Segment::Bytes(b)) => {
                    let k = b
                        .len()
                        .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                    self.out.extend_from_slice(&b[..k]);
                    k
                }
            };
            self.left -= k as u64;
            self.source.consume(k as u64)?;
        }
        Ok(())
    }

    /// Sends part of the file region at the cursor: `Some(bytes)`, or
    /// `None` when the socket is full.
    fn send_file(&mut self, sock: &Sock, budget: u64) -> Result<Option<u64>, SendEnd> {
        let failed = |e: io::Error| SendEnd::Failed(e.to_string());
        let (file, offset, len) = match self.source.segment().map_err(failed)? {
            Some(Segment::File { file, offset, len }) => (file, offset, len),
            // `gather` leaves a file region at the cursor, or the end.
            Some(Segment::Bytes(_)) => return Ok(Some(0)),
            None => return Err(SendEnd::Failed(ended_early(self.left).to_string())),
        };
        let want = len.min(self.left).min(budget.max(1)).min(1 << 30) as usize;
        let mut off = offset;
        match rustix::fs::sendfile(sock.fd(), file, Some(&mut off), want) {
            Ok(k) => {
                // Zero bytes of a file that should have more: it shrank.
                self.source.consume(k as u64).map_err(failed)?;
                self.left -= k as u64;
                Ok(Some(k as u64))
            }
            Err(rustix::io::Errno::AGAIN) => Ok(None),
            Err(rustix::io::Errno::INTR) => Ok(Some(0)),
            Err(e) if is_peer_error(e) => Err(SendEnd::PeerGone(io::Error::from(e))),
            Err(e) => Err(SendEnd::Failed(format!("sendfile: {e}"))),
        }
    }
}

fn ended_early(left: u64) -> io::Error {
    io::Error::other(format!("the body ended {left} bytes early"))
}

/// Whether a failed send means the client is gone (not our source failing).
fn is_peer_error(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    matches!(
        e,
        Errno::PIPE | Errno::CONNRESET | Errno::NOTCONN | Errno::TIMEDOUT | Errno::HOSTUNREACH
    )
}

/// A computed body, read by body threads a chunk at a time, one chunk
/// ahead. The loop side: what to ask for and how to frame what comes.
pub(super) struct StreamBody {
    /// `None` while a body thread has it, or after its end.
    pub reader: Option<Box<dyn Read + Send>>,
    /// Bytes still to ask of the reader, when the length is known.
    left: Option<u64>,
    chunked: bool,
    /// The chunk read ahead, framed, for when the one being written is out.
    pub ready: Option<Vec<u8>>,
    /// The reader gave its last byte (and, chunked, the last chunk is framed).
    pub ended: bool,
    /// A buffer to hand the next fill.
    pub spare: Vec<u8>,
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

    /// How much the next fill should read.
    pub fn want(&self) -> usize {
        self.left.map_or(FILL, |l| l.min(FILL as u64) as usize)
    }

    /// A body thread read `n` bytes into `buf` (0: the reader ended): the
    /// chunk to write, framed, or why the body failed. The reader comes
    /// back here unless the body is at its end.
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
