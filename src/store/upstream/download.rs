//! One NAR download from an upstream, shared by every reader of that path.
//!
//! A thread of its own fetches the file, decompresses it as it arrives and
//! writes the NAR into an unlinked temporary file, hashing and counting as
//! it goes. Readers ([`NarReader`]) each start at byte 0 and follow the
//! download as far as it got: a slow client holds back nobody (the
//! download goes at the upstream's pace), a late one starts from the file,
//! and memory stays a few buffers whatever the NAR's size.
//!
//! The last byte is given to no reader until the whole NAR has matched its
//! NarSize and NarHash: on a mismatch every reader gets an error instead,
//! so a client's reply (its `Content-Length` is NarSize) is cut short and
//! no client, nor the import, ever sees a complete wrong NAR.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::fs::{Mode, OFlags};
use sha2::Digest;

use super::client::{nar_time_limit, Answer, Client, NAR_STALL_TIMEOUT};
use super::narinfo::Found;
use crate::log;
use crate::metrics::Metrics;
use crate::nix::hash::Sha256;

/// Decompressed bytes handled at a time.
const CHUNK: usize = 256 * 1024;
/// What a download holds besides its decoder's window: its chunk, and the
/// HTTP client's and the decoder's input buffers.
pub const MEMORY: u64 = CHUNK as u64 + (128 << 10);
/// Bytes held back from readers until the NAR is verified.
const WITHHELD: u64 = 1;

/// How a download ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Running,
    /// The NAR matched its NarSize and NarHash.
    Verified,
    /// Why not (for the log; readers get it as their error).
    Failed(Arc<str>),
}

struct State {
    /// NAR bytes in the file.
    written: u64,
    outcome: Outcome,
    /// Whether something (the import) still works from this download.
    importing: bool,
}

/// A download, shared by its fetching thread, its readers and its import.
pub struct Download {
    pub found: Arc<Found>,
    file: File,
    state: Mutex<State>,
    changed: Condvar,
}

impl Download {
    /// A download of `found`'s NAR into an unlinked file in `temp_dir`; not
    /// started yet ([`Download::run`] does it).
    pub fn new(found: Arc<Found>, temp_dir: &Path, importing: bool) -> io::Result<Arc<Self>> {
        Ok(Arc::new(Download {
            found,
            file: unlinked_file(temp_dir)?,
            state: Mutex::new(State {
                written: 0,
                outcome: Outcome::Running,
                importing,
            }),
            changed: Condvar::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reader of the NAR from byte 0.
    pub fn reader(self: &Arc<Self>) -> NarReader {
        NarReader {
            download: Arc::clone(self),
            pos: 0,
        }
    }

    pub fn outcome(&self) -> Outcome {
        self.lock().outcome.clone()
    }

    /// The import (if any) is over.
    pub fn import_done(&self) {
        self.lock().importing = false;
        self.changed.notify_all();
    }

    /// Whether neither the download nor its import is still at work.
    pub fn finished(&self) -> bool {
        let s = self.lock();
        s.outcome != Outcome::Running && !s.importing
    }

    /// Waits until [`Self::finished`], at most until `deadline`; whether it is.
    pub fn wait_finished(&self, deadline: Instant) -> bool {
        let mut s = self.lock();
        loop {
            if s.outcome != Outcome::Running && !s.importing {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Fetches, decompresses, checks and stores the NAR; then tells every
    /// reader how it ended. `metrics` counts the bytes read from upstream
    /// (compressed). Returns the outcome.
    pub fn run(&self, client: &Client, metrics: &Metrics) -> Outcome {
        let outcome = match self.fetch(client, metrics) {
            Ok(()) => Outcome::Verified,
            Err(why) => Outcome::Failed(why.into()),
        };
        self.lock().outcome = outcome.clone();
        self.changed.notify_all();
        outcome
    }

    fn fetch(&self, client: &Client, metrics: &Metrics) -> Result<(), String> {
        let found = &self.found;
        let url = &found.nar_url;
        let size = found.info.nar_size;
        let body = match client
            .get(url, nar_time_limit(size), NAR_STALL_TIMEOUT)
            .map_err(|e| log::chain(&e))?
        {
            Answer::Found(body) => body,
            Answer::Absent => return Err(format!("{url}: the upstream no longer has it")),
        };
        let counted = Counted {
            inner: body.into_reader(),
            metrics,
        };
        let mut nar = found
            .compression
            .decoder(counted)
            .map_err(|e| format!("{url}: {e}"))?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut written = 0u64;
        loop {
            let n = match nar.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(format!(
                        "{url} ({}): after {written} NAR bytes: {e}",
                        found.compression
                    ))
                }
            };
            if written + n as u64 > size {
                return Err(format!("{url}: more than the {size} bytes of NarSize"));
            }
            hasher.update(&buf[..n]);
            self.file
                .write_all_at(&buf[..n], written)
                .map_err(|e| format!("writing the NAR to a temporary file: {e}"))?;
            written += n as u64;
            self.lock().written = written;
            self.changed.notify_all();
        }
        if written != size {
            return Err(format!(
                "{url}: the NAR ended after {written} of its {size} bytes"
            ));
        }
        let got = Sha256(hasher.finalize().into());
        if got != found.info.nar_hash {
            return Err(format!(
                "{url}: NAR hash mismatch: the narinfo says {}, the NAR is {got}",
                found.info.nar_hash
            ));
        }
        Ok(())
    }
}

/// Counts what passes through.
struct Counted<'m, R> {
    inner: R,
    metrics: &'m Metrics,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.metrics.upstream_fetched(n as u64);
        Ok(n)
    }
}

/// A reader of a [`Download`]'s NAR from byte 0: blocks until the bytes are
/// there; an error once the download failed. Exactly NarSize bytes, never
/// a complete wrong NAR.
pub struct NarReader {
    download: Arc<Download>,
    pos: u64,
}

impl NarReader {
    pub fn nar_size(&self) -> u64 {
        self.download.found.info.nar_size
    }

    /// The same reader from byte `offset` on (a `Range`): it waits for the
    /// bytes before it as for any others, reading none of them.
    pub fn starting_at(mut self, offset: u64) -> Self {
        self.pos = offset.min(self.nar_size());
        self
    }

    /// Bytes up to which this reader may read now, waiting for more.
    fn available(&self) -> io::Result<u64> {
        let size = self.nar_size();
        let d = &self.download;
        let mut s = d.lock();
        loop {
            match &s.outcome {
                Outcome::Verified => return Ok(size),
                Outcome::Failed(why) => {
                    return Err(io::Error::other(format!(
                        "the upstream download of {} failed: {why}",
                        d.found.info.path
                    )))
                }
                Outcome::Running => {
                    let limit = s.written.min(size.saturating_sub(WITHHELD));
                    if limit > self.pos {
                        return Ok(limit);
                    }
                }
            }
            // The download's own time limits bound this wait: it ends
            // verified or failed, and says so.
            s = d.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Read for NarReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.nar_size() {
            return Ok(0);
        }
        let limit = self.available()?;
        let want = (limit - self.pos).min(buf.len() as u64) as usize;
        let n = self.download.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the temporary file of a download is shorter than written",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Whether downloads can keep their NAR in `dir` (checked at start-up, so
/// that a missing or read-only directory stops the start, not every
/// download).
pub fn check_temp_dir(dir: &Path) -> io::Result<()> {
    unlinked_file(dir).map(drop)
}

/// A file in `dir` with no name, gone with its last descriptor: nothing to
/// clean up after a crash. `O_TMPFILE` where the file system has it, else a
/// new file removed at once.
fn unlinked_file(dir: &Path) -> io::Result<File> {
    let mode = Mode::RUSR | Mode::WUSR;
    match rustix::fs::open(dir, OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC, mode) {
        Ok(fd) => return Ok(File::from(fd)),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::ISDIR => {}
        Err(e) => {
            return Err(io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot make a temporary file in {}: {e}", dir.display()),
            ))
        }
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    let name = dir.join(format!(
        ".nix-serve-nar-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let fd = rustix::fs::open(
        &name,
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC,
        mode,
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot make a temporary file in {}: {e}", dir.display()),
        )
    })?;
    std::fs::remove_file(&name)?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::path_info::tests::ref_txt;
    use crate::store::upstream::decompress::Method;

    /// A download whose whole NAR `bytes` is in the file, not yet checked.
    fn arrived(bytes: &[u8]) -> Arc<Download> {
        let mut info = ref_txt();
        info.nar_size = bytes.len() as u64;
        let found = Found {
            cache: 0,
            info,
            nar_url: "http://127.0.0.1:1/nar/x.nar".into(),
            compression: Method::None,
        };
        let d = Download::new(Arc::new(found), &std::env::temp_dir(), false).unwrap();
        d.file.write_all_at(bytes, 0).unwrap();
        d.lock().written = bytes.len() as u64;
        d
    }

    fn end(d: &Download, outcome: Outcome) {
        d.lock().outcome = outcome;
        d.changed.notify_all();
    }

    #[test]
    fn the_last_byte_waits_for_the_check() {
        let nar = b"0123456789";
        for (outcome, last) in [
            (Outcome::Verified, Some(&b"9"[..])),
            (Outcome::Failed("hash mismatch".into()), None),
        ] {
            let d = arrived(nar);
            let mut r = d.reader();
            let mut buf = [0u8; 64];
            // Everything has arrived, but it is not checked yet.
            let n = r.read(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"012345678", "{outcome:?}");
            end(&d, outcome.clone());
            match (r.read(&mut buf), last) {
                (Ok(n), Some(last)) => assert_eq!(&buf[..n], last),
                (Err(e), None) => assert!(e.to_string().contains("hash mismatch"), "{e}"),
                (other, _) => panic!("{outcome:?}: {other:?}"),
            }
            // A reader joining late starts from byte 0.
            let mut late = Vec::new();
            let got = d.reader().read_to_end(&mut late);
            assert_eq!(got.is_ok(), last.is_some(), "{outcome:?}");
            if got.is_ok() {
                assert_eq!(late, nar);
            }
        }
    }

    #[test]
    fn a_reader_from_an_offset_reads_the_rest() {
        let d = arrived(b"0123456789");
        end(&d, Outcome::Verified);
        let mut rest = Vec::new();
        d.reader().starting_at(4).read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"456789");
        let mut none = Vec::new();
        d.reader().starting_at(99).read_to_end(&mut none).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn the_temporary_file_has_no_name() {
        let dir = std::env::temp_dir();
        let f = unlinked_file(&dir).unwrap();
        f.write_all_at(b"abc", 0).unwrap();
        let mut b = [0u8; 3];
        f.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(&b, b"abc");
        let link = std::fs::read_link(format!("/proc/self/fd/{}", {
            use std::os::fd::AsRawFd;
            f.as_raw_fd()
        }))
        .unwrap();
        assert!(
            link.to_string_lossy().contains("(deleted)") || !link.exists(),
            "{}",
            link.display()
        );
        assert!(unlinked_file(Path::new("/nonexistent-dir")).is_err());
    }
}
