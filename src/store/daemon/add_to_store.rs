//! AddToStoreNar (worker op 39): the daemon adds a path from its info and its
//! NAR, as `nix copy --to daemon` does.
//!
//! The facts, from Nix 2.8's `daemon.cc` (`case wopAddToStoreNar`) and
//! `remote-store.cc` (`RemoteStore::addToStore`), the same in current Nix:
//! - the request is the path, the deriver (`""` for none), the NAR hash in
//!   base16 without prefix, the references (a string set of full paths),
//!   registration time, NAR size, `ultimate`, the signatures (a string set),
//!   the content address (`""` for none), `repair` and `dontCheckSigs`;
//! - from protocol 1.23 on (Nix 2.8 speaks 1.34) the NAR follows as frames
//!   (`FramedSink`/`FramedSource` in `serialise.hh`): a u64 length, then that
//!   many bytes with no padding, and a zero length at the end;
//! - the daemon reads every frame before it answers, even after it decided
//!   to refuse the path (its `FramedSource` drains to the zero length), so
//!   the stderr loop ends the op: STDERR_LAST (added) or STDERR_ERROR (not
//!   added; the connection stays usable), with no payload after it.
//!
//! `dontCheckSigs` is always false and `ultimate` too: the daemon then adds
//! the path only with a signature by a key in its own `trusted-public-keys`
//! (or a content address that proves it), whoever we are to it. We make no
//! trust decision of our own. The daemon checks the NAR against NarHash and
//! NarSize itself and registers the path in one database transaction after
//! the last byte: a stream cut short leaves nothing valid.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use super::connection::{self, Connection, Op};
use super::stderr;
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::StoreDir;
use crate::store::wire;
use crate::store::{Failure, StoreError};

/// NAR bytes per frame: one read of the source, one write to the socket.
const FRAME: usize = 64 * 1024;

/// The request of op 39 for `info`, everything before the NAR's frames.
pub fn request(dir: &StoreDir, info: &PathInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    wire::write_u64(&mut out, Op::AddToStoreNar as u64);
    wire::put_str(&mut out, dir.display_path(&info.path).as_bytes());
    let deriver = info
        .deriver
        .as_ref()
        .map_or_else(String::new, |d| dir.display_path(d));
    wire::put_str(&mut out, deriver.as_bytes());
    wire::put_str(&mut out, info.nar_hash.to_base16().as_bytes());
    let references: Vec<String> = info
        .references
        .iter()
        .map(|r| dir.display_path(r))
        .collect();
    wire::write_string_list(&mut out, &references);
    wire::write_u64(&mut out, info.registration_time);
    wire::write_u64(&mut out, info.nar_size);
    // ultimate: a path from elsewhere was not built here.
    wire::write_u64(&mut out, 0);
    wire::write_string_list(&mut out, &info.sigs);
    wire::put_str(&mut out, info.ca.as_deref().unwrap_or("").as_bytes());
    // repair, dontCheckSigs.
    wire::write_u64(&mut out, 0);
    wire::write_u64(&mut out, 0);
    out
}

/// Sends `info` and the NAR `nar` yields, then waits at most `reply_timeout`
/// after the last byte for the daemon's verdict (it checks the hash and
/// registers the path meanwhile). The NAR bytes sent, or why the path was
/// not added: [`StoreError::Daemon`] when the daemon refused it (the
/// connection is still in step), any other error when the transfer broke
/// (the connection must be dropped; the daemon saw a cut stream).
pub fn run(
    conn: &mut Connection,
    dir: &StoreDir,
    info: &PathInfo,
    nar: &mut dyn Read,
    reply_timeout: Duration,
) -> Result<u64, StoreError> {
    let version = conn.version();
    let socket = conn.socket();
    let mut writer = socket.try_clone()?;
    let cutter = socket.try_clone()?;
    let read_timeout = socket.read_timeout()?;
    // The verdict comes only after the last byte, however long the NAR
    // takes to arrive: the wait is bounded below, by `reply_timeout` from
    // the end of the transfer, not per read.
    socket.set_read_timeout(None)?;
    let request = request(dir, info);
    let reader = conn.reader();
    let (sent, verdict) = std::thread::scope(|scope| {
        let (done, finished) = mpsc::channel();
        // Nix's own client reads the log on a thread of its own while it
        // writes (`ConnectionHandle::withFramedSink`), so a daemon that logs
        // during the transfer never blocks on a full socket.
        let drain = scope.spawn(move || {
            let verdict = stderr::drain(reader, version);
            let _ = done.send(());
            verdict
        });
        let sent = send(&mut writer, &request, nar);
        let wait = if sent.is_ok() {
            reply_timeout
        } else {
            Duration::ZERO
        };
        if finished.recv_timeout(wait).is_err() {
            // A transfer that broke, or a daemon that does not answer: cut
            // the connection, which also ends the drain. The daemon sees a
            // stream that stops short and registers nothing.
            let _ = cutter.shutdown(Shutdown::Both);
        }
        let verdict = drain.join().unwrap_or_else(|_| {
            Err(stderr::StderrError::Wire(
                io::Error::other("the daemon's reply reader panicked").into(),
            ))
        });
        (sent, verdict)
    });
    let restored = conn.socket().set_read_timeout(read_timeout);
    let bytes = sent?;
    verdict.map_err(|e| connection::stderr_failure(&Op::AddToStoreNar.to_string(), e))?;
    restored?;
    if bytes != info.nar_size {
        // The daemon checks the size itself and refuses a wrong one; a
        // success after a different count means we are out of step.
        return Err(StoreError::Protocol(
            format!(
                "AddToStoreNar {}: the daemon accepted {bytes} bytes for a {}-byte NAR",
                info.path, info.nar_size
            )
            .into(),
        ));
    }
    Ok(bytes)
}

/// The request, then `nar` as frames, then the zero length.
fn send(socket: &mut UnixStream, request: &[u8], nar: &mut dyn Read) -> Result<u64, StoreError> {
    let op = Op::AddToStoreNar.to_string();
    socket
        .write_all(request)
        .map_err(|e| connection::io_failure(&op, e))?;
    let mut frame = vec![0u8; 8 + FRAME];
    let mut total = 0u64;
    loop {
        let n = match nar.read(&mut frame[8..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(StoreError::Io(io::Error::new(
                    e.kind(),
                    Failure::because(format!("{op}: the NAR to add, after {total} bytes"), e),
                )))
            }
        };
        frame[..8].copy_from_slice(&(n as u64).to_le_bytes());
        socket
            .write_all(&frame[..8 + n])
            .map_err(|e| connection::io_failure(&op, e))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::path_info::tests::ref_txt;
    use crate::store::wire::test_bytes::{s, u};

    /// The request for `ref.txt` (`docs/protocols.md` §5.3's path b), field
    /// by field in the order Nix 2.8's daemon reads them.
    #[test]
    fn request_byte_exact() {
        let mut info = ref_txt();
        info.sigs = vec!["test-cache-1:c2ln".into()];
        let expected = [
            u(39),
            s("/nix/store/wmm9hngfwxsjqpiy50lligndn8n83f6w-ref.txt"),
            s(""),
            s(&info.nar_hash.to_base16()),
            u(1),
            s("/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt"),
            u(1795552971),
            u(176),
            u(0),
            u(1),
            s("test-cache-1:c2ln"),
            s("text:sha256:1sn3ap5rcl7ai63rmink9spijl8kykz8v44axykd8cnkgb387pd2"),
            u(0),
            u(0),
        ]
        .concat();
        assert_eq!(request(&StoreDir::default(), &info), expected);
        assert!(info.nar_hash.to_base16().len() == 64);
    }

    #[test]
    fn frames_have_no_padding_and_end_with_zero() {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        let nar = b"abc".to_vec();
        let sent = send(&mut ours, b"REQ", &mut &nar[..]).unwrap();
        assert_eq!(sent, 3);
        drop(ours);
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).unwrap();
        assert_eq!(got, [&b"REQ"[..], &u(3), b"abc", &u(0)].concat());
    }

    #[test]
    fn a_failing_source_is_an_error_without_the_end_frame() {
        struct Fails(bool);
        impl Read for Fails {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    return Err(io::Error::other("download failed"));
                }
                buf[..2].copy_from_slice(b"ab");
                Ok(2)
            }
        }
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        let e = send(&mut ours, b"", &mut Fails(false)).unwrap_err();
        assert!(
            crate::log::chain(&e).contains("download failed"),
            "{}",
            crate::log::chain(&e)
        );
        drop(ours);
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).unwrap();
        assert_eq!(got, [&u(2)[..], b"ab"].concat(), "no zero length after");
    }
}
