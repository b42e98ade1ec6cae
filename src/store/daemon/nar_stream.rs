//! The NAR that follows a NarFromPath reply (`docs/protocols.md` §7.6): raw,
//! unframed bytes, so we read exactly the `narSize` the daemon just confirmed.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use sha2::Digest;

use super::connection::Connection;
use crate::nix::hash::Sha256;

/// Where a [`NarStream`] hands its connection back: the store that lent it
/// takes it from here for its next request.
pub(super) type Home = Arc<Mutex<Option<Connection>>>;

/// Yields exactly `remaining` bytes of NAR, or an error: never fewer, never
/// more, and never a whole NAR but the one the daemon registered: its
/// SHA-256 is checked as it passes, and the last bytes are given only once
/// it matches. A Nix 2.8 daemon that fails in the middle of a dump (the
/// path's files gone) writes its error message into the NAR's place and
/// closes; read as raw bytes, a message long enough made a complete,
/// wrong NAR (seen: 128 bytes of `nix-archive-1` and an error frame). It owns its daemon connection, so a slow client holds this stream
/// and no worker's connection; the connection goes back home only once the
/// NAR has been read to its end. A reader dropped early, or one that failed,
/// takes the connection with it, so nobody reads a reply out of the middle
/// of a NAR.
pub struct NarStream {
    home: Home,
    conn: Option<Connection>,
    remaining: u64,
    total: u64,
    hasher: sha2::Sha256,
    expected: Sha256,
}

impl NarStream {
    /// `conn` has just read STDERR_LAST of a NarFromPath reply for a path
    /// whose NAR is `nar_size` bytes.
    pub(super) fn new(home: Home, conn: Connection, nar_size: u64, nar_hash: Sha256) -> Self {
        let mut stream = NarStream {
            home,
            conn: Some(conn),
            remaining: nar_size,
            total: nar_size,
            hasher: sha2::Sha256::default(),
            expected: nar_hash,
        };
        if nar_size == 0 {
            // Not a NAR (the smallest is 96 bytes), but then there is nothing
            // to read and the connection is where it should be.
            stream.finish();
        }
        stream
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Bytes already buffered past the NAR's end mean the daemon sent
            // more than narSize: the stream is out of step, drop it.
            if conn.buffered().is_empty() {
                *self.home.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
            }
        }
    }
}

impl Read for NarStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(io::Error::other(
                "NAR stream from nix-daemon failed earlier",
            ));
        };
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        match conn.reader().read(&mut buf[..want]) {
            Ok(0) => {
                self.conn = None;
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "nix-daemon closed the connection after {} of {} NAR bytes",
                        self.total - self.remaining,
                        self.total
                    ),
                ))
            }
            Ok(n) => {
                self.remaining -= n as u64;
                self.hasher.update(&buf[..n]);
                if self.remaining == 0 {
                    let got = Sha256(std::mem::take(&mut self.hasher).finalize().into());
                    if got != self.expected {
                        // These last bytes are withheld: the client never
                        // has the whole of a wrong NAR.
                        self.conn = None;
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "the nix-daemon's NAR does not have the registered hash ({}, got {})",
                                self.expected.to_prefixed_nix32(),
                                got.to_prefixed_nix32()
                            ),
                        ));
                    }
                    self.finish();
                }
                Ok(n)
            }
            // Nothing was consumed: the caller may simply call again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.conn = None;
                // SO_RCVTIMEO expiry is EAGAIN; callers such as `io::copy`
                // would take WouldBlock for a non-blocking socket.
                let kind = match e.kind() {
                    io::ErrorKind::WouldBlock => io::ErrorKind::TimedOut,
                    k => k,
                };
                Err(io::Error::new(
                    kind,
                    format!("reading the NAR from nix-daemon: {e}"),
                ))
            }
        }
    }
}
