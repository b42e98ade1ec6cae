//! Diagnostics and the access log.
//!
//! Run by systemd (it sets `INVOCATION_ID` or `JOURNAL_STREAM`, or passed
//! sockets), diagnostics go to syslog, which the journal collects with their
//! severity; run by hand they go to stderr; `--error-log FILE` overrides both.
//! `--access-log FILE` gets one line per request (`-` or `/dev/stderr`:
//! stderr, which works even when stderr is the journal's socket).
//!
//! Logging never makes a caller wait for a sink. [`init`] starts one log
//! thread that owns the sinks; every line goes to it through a bounded queue
//! (`queue.rs`: its sizes and why), and a line that does not fit is dropped
//! and counted, so a stalled journal, a slow disk or an `--error-log` FIFO
//! nobody reads delays no request. Lines a peer can cause at will are rate
//! limited by [`Kind`] (`limit.rs`). What must not be lost waits, bounded:
//! [`flush`] before the process exits, [`fatal`] for a start-up failure.
//! [`reopen`] opens the two files again by name (SIGHUP, as logrotate sends
//! it and as Starman reopens on it), so a rotated file is let go.

mod limit;
mod queue;
mod sink;
mod text;

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

pub use limit::Kind;
pub use text::{chain, escape, escape_bytes};

use queue::Queue;
use sink::{Dest, Sinks};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Error,
    Warning,
    Info,
}

/// Why the log could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A log file that cannot be opened: the configuration's fault.
    #[error("cannot open {flag} {}: {source}", path.display())]
    Open {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// No thread for the log (out of threads or memory): worth another start.
    #[error("cannot start the log thread: {0}")]
    Thread(#[source] io::Error),
}

struct Logger {
    queue: Arc<Queue>,
    access: bool,
    diag_to: Dest,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// How long [`flush`] waits for the log thread, at most: a sink that takes
/// nothing (a FIFO nobody reads) must not keep the process from exiting,
/// and systemd's stop timeout is far longer.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// Whether systemd started us: then stderr is likely the journal anyway,
/// and syslog keeps the severity.
pub fn under_systemd(env: &dyn Fn(&str) -> Option<String>, socket_activated: bool) -> bool {
    socket_activated || env("INVOCATION_ID").is_some() || env("JOURNAL_STREAM").is_some()
}

/// Opens the sinks and starts the log thread; once per process (a second
/// call does nothing). Until then, lines go straight to stderr: only the
/// main thread runs, and nothing it says is lost.
///
/// The thread costs a spawn at start-up, on the way to the first reply of
/// a socket-activated start: about 50 µs (the median of 200 fresh
/// processes on the two-core test VM, 24 µs at best), against a cold start
/// of about 3.5 ms (bench/README.md, "Cold start"). In exchange no line is
/// written by the main thread or the event loop any more.
pub fn init(
    systemd: bool,
    error_log: Option<&Path>,
    access_log: Option<&Path>,
) -> Result<(), InitError> {
    if LOGGER.get().is_some() {
        return Ok(());
    }
    let sinks = Sinks::open(systemd, error_log, access_log)?;
    let (access, diag_to) = (sinks.has_access(), sinks.diag_to());
    let queue = Arc::new(Queue::new());
    let writer = queue.clone();
    thread::Builder::new()
        .name("log".into())
        .spawn(move || writer.run(sinks))
        .map_err(InitError::Thread)?;
    let _ = LOGGER.set(Logger {
        queue,
        access,
        diag_to,
    });
    Ok(())
}

/// Set by SIGHUP once [`reopen_on_sighup`] has registered it.
static HUP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// From now on SIGHUP asks for [`reopen`] (it no longer kills the process);
/// the main loop does it in [`reopen_if_hup`], outside the signal handler.
pub fn reopen_on_sighup() -> io::Result<()> {
    let flag = HUP.get_or_init(|| Arc::new(AtomicBool::new(false)));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, flag.clone()).map(|_| ())
}

/// [`reopen`] if a SIGHUP came since the last call.
pub fn reopen_if_hup() {
    if HUP.get().is_some_and(|f| f.swap(false, Ordering::SeqCst)) {
        reopen();
    }
}

/// Asks the log thread to open `--error-log` and `--access-log` again by
/// name, after logrotate renamed them: lines it writes from then on go to
/// the new files. A file that cannot be opened keeps its old sink (nothing
/// is lost) and the failure is logged; else `SIGHUP: log files reopened`.
/// Stderr and syslog sinks are left as they are.
pub fn reopen() {
    if let Some(l) = LOGGER.get() {
        l.queue.reopen();
    }
}

fn log(level: Level, msg: &str) {
    match LOGGER.get() {
        Some(l) => l.queue.diag(level, msg.to_owned()),
        None => sink::write_now(level, msg),
    }
}

pub fn error(msg: &str) {
    log(Level::Error, msg);
}

pub fn warn(msg: &str) {
    log(Level::Warning, msg);
}

pub fn info(msg: &str) {
    log(Level::Info, msg);
}

/// [`info`], within the rate limit of `kind`: for what a peer can make
/// happen as often as it likes (a malformed head, a stalled read). `msg`
/// is formatted only if the line is written: `format_args!(…)` costs
/// nothing for a line held back.
pub fn info_limited(kind: Kind, msg: impl fmt::Display) {
    limited(Level::Info, kind, msg);
}

/// [`error`], within the rate limit of `kind`.
pub fn error_limited(kind: Kind, msg: impl fmt::Display) {
    limited(Level::Error, kind, msg);
}

fn limited(level: Level, kind: Kind, msg: impl fmt::Display) {
    match LOGGER.get() {
        Some(l) => {
            if l.queue.admit(kind, level) {
                l.queue.diag(level, msg.to_string());
            }
        }
        None => sink::write_now(level, &msg.to_string()),
    }
}

/// Whether `--access-log` was given.
pub fn access_enabled() -> bool {
    LOGGER.get().is_some_and(|l| l.access)
}

/// One access-log line (without its newline), if `--access-log` was given.
pub fn access(line: String) {
    if let Some(l) = LOGGER.get().filter(|l| l.access) {
        l.queue.access(line);
    }
}

/// The process is on its way out (idle, or told to stop): from now on no
/// diagnostic is dropped, however full the queue, so that why it stops and
/// the exit summary reach the log ([`flush`] before exiting bounds the wait).
pub fn exiting() {
    if let Some(l) = LOGGER.get() {
        l.queue.exiting();
    }
}

/// Waits until every line logged before the call is written, and the lines
/// held back by the rate limits are counted in the log, for at most
/// [`FLUSH_LIMIT`]. Before the process exits; false when the time ran out.
pub fn flush() -> bool {
    LOGGER.get().is_none_or(|l| l.queue.flush(FLUSH_LIMIT))
}

/// A start-up failure, before the process exits: one line on stderr (what
/// an operator running it by hand, or a test, reads), and in the log too
/// when that is elsewhere, after what was logged before it. Once only in
/// the journal: when stderr is the journal's stream (systemd's default for
/// a service), the line goes there at error priority (`<3>`,
/// `sd-daemon(3)`), and not to syslog as well: a datagram the journal reads
/// after the process has exited can no longer be tied to the unit, so
/// `journalctl -u` would miss it.
pub fn fatal(msg: &str) {
    let journal = stderr_is_journal();
    if let Some(l) = LOGGER.get() {
        let also = match l.diag_to {
            Dest::Stderr => false,
            Dest::File => true,
            Dest::Syslog => !journal,
        };
        if also {
            l.queue.kept(Level::Error, msg.to_owned());
        }
    }
    // Earlier lines on stderr come before this one.
    flush();
    if journal {
        let _ = writeln!(io::stderr().lock(), "<3>error: {msg}");
    } else {
        sink::write_now(Level::Error, msg);
    }
}

/// Whether stderr is the journal stream systemd connected it to: its
/// device and inode are the ones `JOURNAL_STREAM` names (`systemd.exec(5)`).
fn stderr_is_journal() -> bool {
    let Some(named) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(io::stderr()) else {
        return false;
    };
    named == format!("{}:{}", st.st_dev, st.st_ino)
}
