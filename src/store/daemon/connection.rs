//! One connection to nix-daemon: connect, handshake (`docs/protocols.md` §7.4),
//! and request/reply with the stderr loop drained (docs/protocols.md §7.5).
//!
//! Errors are `StoreError`s already. Whoever gets an error must drop the
//! connection: after a failure we cannot know where in the stream we are.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::stderr::{self, StderrError};
use super::version::{ProtocolVersion, VersionError};
use crate::store::wire::{self, Bound, WireError};
use crate::store::{Failure, StoreError};

const WORKER_MAGIC_1: u64 = 0x6e69_7863;
const WORKER_MAGIC_2: u64 = 0x6478_696f;

/// Nix version strings look like `2.8.0` or `2.24.10pre20240101_abcdef`.
const NIX_VERSION: Bound = Bound::new("daemon Nix version", 1024);
/// Current Nix advertises two features (docs/protocols.md §7.4); a long list is not a daemon.
const MAX_FEATURES: usize = 1_000;
const FEATURE: Bound = Bound::new("daemon feature", 1024);
/// Read buffer: large enough that NAR streaming costs few syscalls.
const READ_BUFFER: usize = 64 * 1024;

/// The operations we use (docs/protocols.md §7.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    QueryPathInfo = 26,
    QueryPathFromHashPart = 29,
    NarFromPath = 38,
    AddToStoreNar = 39,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Whether the daemon trusts us (sent from 1.35 on). Informational only: every
/// op we use is allowed to untrusted clients (docs/protocols.md §7.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    Unknown,
    Trusted,
    NotTrusted,
}

/// What the handshake told us about the daemon, for start-up logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonInfo {
    /// The version both sides speak.
    pub version: ProtocolVersion,
    /// e.g. `2.8.0`; sent from 1.33 on.
    pub nix_version: Option<String>,
    /// Sent from 1.35 on.
    pub trust: Option<Trust>,
}

/// How an op failed.
#[derive(Debug)]
pub enum OpError {
    /// The daemon had closed the connection before we got a single byte of
    /// the reply: an idle connection it dropped (restart). Safe to retry.
    ClosedIdle,
    Failed(StoreError),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Failed(e)
    }
}

pub struct Connection {
    /// Buffered: replies are many small u64s and strings.
    reader: BufReader<UnixStream>,
    /// The request being built; written with one `write_all`, so one syscall
    /// (and no separate flush) per request.
    request: Vec<u8>,
    info: DaemonInfo,
}

impl Connection {
    /// Connects and does the handshake. `timeout` bounds every read and write
    /// (SO_RCVTIMEO/SO_SNDTIMEO) on this connection; `None` waits forever.
    pub fn open(socket: &Path, timeout: Option<Duration>) -> Result<Self, StoreError> {
        let stream = UnixStream::connect(socket).map_err(|e| {
            let what = format!("cannot connect to nix-daemon at {}", socket.display());
            StoreError::Unavailable(Failure::because(what, e))
        })?;
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
        let info = handshake(&mut reader).map_err(|e| match e {
            HandshakeError::Wire(e) => wire_failure("handshake", e),
            HandshakeError::Stderr(e) => stderr_failure("handshake", e),
            HandshakeError::Version(e) => StoreError::Protocol(Failure::because("handshake", e)),
            HandshakeError::Other(m) => StoreError::Protocol(format!("handshake: {m}").into()),
        })?;
        Ok(Connection {
            reader,
            request: Vec::with_capacity(512),
            info,
        })
    }

    #[cfg(feature = "testing")]
    pub fn info(&self) -> &DaemonInfo {
        &self.info
    }

    /// Sends `op` with the arguments `args` writes, then reads the log loop up
    /// to STDERR_LAST. On success the reply payload is next in [`Self::reader`].
    pub fn call(&mut self, op: Op, args: impl FnOnce(&mut Vec<u8>)) -> Result<Reply<'_>, OpError> {
        self.request.clear();
        wire::write_u64(&mut self.request, op as u64);
        args(&mut self.request);
        if let Err(e) = self.reader.get_ref().write_all(&self.request) {
            return Err(match e.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => OpError::ClosedIdle,
                _ => OpError::Failed(io_failure(&op.to_string(), e)),
            });
        }
        // Wait for the first reply byte: if the peer closed instead, nothing
        // of this op was consumed and the caller may retry on a new connection.
        loop {
            match self.reader.fill_buf() {
                Ok([]) => return Err(OpError::ClosedIdle),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(OpError::ClosedIdle)
                }
                Err(e) => return Err(OpError::Failed(io_failure(&op.to_string(), e))),
            }
        }
        stderr::drain(&mut self.reader, self.info.version)
            .map_err(|e| stderr_failure(&op.to_string(), e))?;
        Ok(Reply { conn: self, op })
    }

    /// The stream itself, for the unframed NAR after a NarFromPath reply.
    pub fn reader(&mut self) -> &mut BufReader<UnixStream> {
        &mut self.reader
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        self.reader.buffer()
    }

    /// The version both sides speak.
    pub fn version(&self) -> ProtocolVersion {
        self.info.version
    }

    /// The socket, for an op that writes while the daemon may answer
    /// (AddToStoreNar: `add_to_store.rs`).
    pub fn socket(&self) -> &UnixStream {
        self.reader.get_ref()
    }
}

/// The payload of one reply. Every read maps its error with the op's name.
pub struct Reply<'c> {
    conn: &'c mut Connection,
    op: Op,
}

impl Reply<'_> {
    pub fn version(&self) -> ProtocolVersion {
        self.conn.info.version
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, StoreError> {
        wire::read_bool(&mut self.conn.reader, what).map_err(|e| self.fail(e))
    }

    pub fn string(&mut self, bound: Bound) -> Result<String, StoreError> {
        wire::read_string(&mut self.conn.reader, bound).map_err(|e| self.fail(e))
    }

    /// The raw stream and version, for the pure payload decoders.
    pub fn payload(&mut self) -> (&mut BufReader<UnixStream>, ProtocolVersion) {
        (&mut self.conn.reader, self.conn.info.version)
    }

    fn fail(&self, e: WireError) -> StoreError {
        wire_failure(&self.op.to_string(), e)
    }
}

#[derive(Debug)]
enum HandshakeError {
    Wire(WireError),
    Stderr(StderrError),
    Version(VersionError),
    Other(String),
}

impl From<WireError> for HandshakeError {
    fn from(e: WireError) -> Self {
        HandshakeError::Wire(e)
    }
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Wire(e.into())
    }
}

/// docs/protocols.md §7.4, client side.
fn handshake(r: &mut BufReader<UnixStream>) -> Result<DaemonInfo, HandshakeError> {
    let mut out = Vec::with_capacity(32);
    wire::write_u64(&mut out, WORKER_MAGIC_1);
    wire::write_u64(&mut out, ProtocolVersion::CLIENT.to_wire());
    r.get_ref().write_all(&out)?;

    let magic = wire::read_u64(r)?;
    if magic != WORKER_MAGIC_2 {
        return Err(HandshakeError::Other(format!(
            "bad magic {magic:#x} from the daemon socket (not a nix-daemon?)"
        )));
    }
    let daemon = ProtocolVersion::from_wire(wire::read_u64(r)?).map_err(HandshakeError::Version)?;
    let version = ProtocolVersion::negotiate(daemon).map_err(HandshakeError::Version)?;

    out.clear();
    if version >= ProtocolVersion::FEATURES {
        // We want none of the optional features; the daemon's list is read
        // only to stay in step.
        wire::write_string_list::<&str>(&mut out, &[]);
        r.get_ref().write_all(&out)?;
        out.clear();
        wire::read_string_list(r, MAX_FEATURES, FEATURE)?;
    }
    if version >= ProtocolVersion::CPU_AFFINITY {
        wire::write_u64(&mut out, 0);
    }
    if version >= ProtocolVersion::RESERVE_SPACE {
        wire::write_u64(&mut out, 0);
    }
    r.get_ref().write_all(&out)?;

    let nix_version = if version >= ProtocolVersion::NIX_VERSION {
        Some(wire::read_string(r, NIX_VERSION)?)
    } else {
        None
    };
    let trust = if version >= ProtocolVersion::TRUST {
        Some(match wire::read_u64(r)? {
            0 => Trust::Unknown,
            1 => Trust::Trusted,
            2 => Trust::NotTrusted,
            t => return Err(HandshakeError::Other(format!("trust flag {t}"))),
        })
    } else {
        None
    };
    // Start-up errors (e.g. the store cannot be opened) arrive here.
    stderr::drain(r, version).map_err(HandshakeError::Stderr)?;
    Ok(DaemonInfo {
        version,
        nix_version,
        trust,
    })
}

/// Socket errors: a timeout, the daemon gone, or plain I/O.
pub fn io_failure(context: &str, e: io::Error) -> StoreError {
    use io::ErrorKind::*;
    match e.kind() {
        // SO_RCVTIMEO/SO_SNDTIMEO expiry shows as EAGAIN (WouldBlock).
        WouldBlock | TimedOut => StoreError::Timeout(Failure::because(
            format!("{context}: nix-daemon did not answer in time"),
            e,
        )),
        UnexpectedEof | BrokenPipe | ConnectionReset | ConnectionAborted => {
            StoreError::Unavailable(Failure::because(
                format!("{context}: nix-daemon closed the connection"),
                e,
            ))
        }
        _ => StoreError::Io(io::Error::new(e.kind(), Failure::because(context, e))),
    }
}

pub fn wire_failure(context: &str, e: WireError) -> StoreError {
    match e {
        WireError::Io(e) => io_failure(context, e),
        e => StoreError::Protocol(Failure::because(context, e)),
    }
}

pub fn stderr_failure(context: &str, e: StderrError) -> StoreError {
    match e {
        StderrError::Daemon(message) => StoreError::Daemon(message.into()),
        StderrError::Wire(e) => wire_failure(context, e),
        e => StoreError::Protocol(Failure::because(context, e)),
    }
}
