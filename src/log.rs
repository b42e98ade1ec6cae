//! Diagnostics and the access log.
//!
//! Run by systemd (it sets `INVOCATION_ID` or `JOURNAL_STREAM`, or passed
//! sockets), diagnostics go to syslog, which the journal collects with their
//! severity; run by hand they go to stderr; `--error-log FILE` overrides both.
//! `--access-log FILE` gets one line per request (`-` or `/dev/stderr`:
//! stderr, which works even when stderr is the journal's socket).
//!
//! One process-wide logger, set once in `main` before any thread starts.
//! [`reopen`] opens the two files again by name (SIGHUP, as logrotate sends
//! it and as Starman reopens on it), so a rotated file is let go.

use std::error::Error;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use syslog::{Facility, Formatter3164, Logger as Syslog, LoggerBackend};

enum Sink {
    Stderr,
    File(File),
    Syslog(Syslog<LoggerBackend, Formatter3164>),
}

struct Logger {
    diag: Mutex<Sink>,
    access: Option<Mutex<Sink>>,
    /// The files given as `--error-log` and `--access-log`, for [`reopen`].
    error_path: Option<PathBuf>,
    access_path: Option<PathBuf>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

#[derive(Clone, Copy)]
enum Level {
    Error,
    Warning,
    Info,
}

/// Whether systemd started us: then stderr is likely the journal anyway,
/// and syslog keeps the severity.
pub fn under_systemd(env: &dyn Fn(&str) -> Option<String>, socket_activated: bool) -> bool {
    socket_activated || env("INVOCATION_ID").is_some() || env("JOURNAL_STREAM").is_some()
}

fn open_file(path: &Path) -> io::Result<Sink> {
    if path == Path::new("-") || path == Path::new("/dev/stderr") {
        return Ok(Sink::Stderr);
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Sink::File)
}

/// Sets the process-wide logger. Errors name the file that cannot be opened.
pub fn init(
    systemd: bool,
    error_log: Option<&Path>,
    access_log: Option<&Path>,
) -> Result<(), String> {
    let diag = match error_log {
        Some(p) => {
            open_file(p).map_err(|e| format!("cannot open --error-log {}: {e}", p.display()))?
        }
        None if systemd => {
            let formatter = Formatter3164 {
                facility: Facility::LOG_DAEMON,
                hostname: None,
                process: "nix-serve".into(),
                pid: std::process::id(),
            };
            // No /dev/log (a container, a test): stderr still reaches someone.
            syslog::unix(formatter)
                .map(Sink::Syslog)
                .unwrap_or(Sink::Stderr)
        }
        None => Sink::Stderr,
    };
    let access = match access_log {
        Some(p) => Some(Mutex::new(open_file(p).map_err(|e| {
            format!("cannot open --access-log {}: {e}", p.display())
        })?)),
        None => None,
    };
    let _ = LOGGER.set(Logger {
        diag: Mutex::new(diag),
        access,
        error_path: error_log.map(Path::to_owned),
        access_path: access_log.map(Path::to_owned),
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

/// Opens `--error-log` and `--access-log` again by name, after logrotate
/// renamed them: lines written from now on go to the new files. A file that
/// cannot be opened keeps its old sink (nothing is lost) and the failure is
/// logged. Stderr and syslog sinks are left as they are.
pub fn reopen() {
    let Some(l) = LOGGER.get() else {
        return;
    };
    let mut failures = Vec::new();
    for (path, sink, flag) in [
        (&l.error_path, Some(&l.diag), "--error-log"),
        (&l.access_path, l.access.as_ref(), "--access-log"),
    ] {
        let (Some(path), Some(sink)) = (path, sink) else {
            continue;
        };
        match open_file(path) {
            Ok(new) => *sink.lock().unwrap_or_else(|e| e.into_inner()) = new,
            Err(e) => failures.push(format!(
                "cannot reopen {flag} {}: {e}; still writing to the old file",
                path.display()
            )),
        }
    }
    for f in &failures {
        error(f);
    }
    if failures.is_empty() {
        info("SIGHUP: log files reopened");
    }
}

fn write(sink: &mut Sink, level: Level, msg: &str) {
    let tag = match level {
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Info => "info",
    };
    let _ = match sink {
        Sink::Stderr => writeln!(io::stderr().lock(), "nix-serve: {tag}: {msg}"),
        Sink::File(f) => writeln!(f, "nix-serve: {tag}: {msg}"),
        Sink::Syslog(s) => {
            let r = match level {
                Level::Error => s.err(msg),
                Level::Warning => s.warning(msg),
                Level::Info => s.info(msg),
            };
            r.map_err(io::Error::other)
        }
    };
}

fn log(level: Level, msg: &str) {
    match LOGGER.get() {
        Some(l) => write(
            &mut l.diag.lock().unwrap_or_else(|e| e.into_inner()),
            level,
            msg,
        ),
        None => write(&mut Sink::Stderr, level, msg),
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

/// Whether `--access-log` was given.
pub fn access_enabled() -> bool {
    LOGGER.get().is_some_and(|l| l.access.is_some())
}

pub fn access(line: &str) {
    if let Some(sink) = LOGGER.get().and_then(|l| l.access.as_ref()) {
        let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
        let _ = match &mut *sink {
            Sink::Stderr => writeln!(io::stderr().lock(), "{line}"),
            Sink::File(f) => writeln!(f, "{line}"),
            Sink::Syslog(s) => s.info(line).map_err(io::Error::other),
        };
    }
}

/// Writes out what is logged so far, before the process exits. Lines are
/// written as they come, so nothing waits.
pub fn flush() {}

/// `s` as nginx writes request fields into its access log (`escape=default`):
/// `"` and `\` and every byte outside printable ASCII (controls, DEL,
/// UTF-8) as `\xHH`. A client's User-Agent or target then cannot end the
/// quoted field, forge a line (CR, LF) or send escape sequences to whoever
/// reads the log on a terminal (`\x1b[2J`, BEL).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            // Writing into a String cannot fail.
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// A start-up failure: one line on stderr (what an operator running it by
/// hand, or a test, reads), and in the log too when that is elsewhere. Once
/// only in the journal: when the log is syslog and stderr is the journal's
/// stream too (systemd's default for a service), the line goes to the
/// stream alone, at error priority (`<3>`, `sd-daemon(3)`). Not to syslog:
/// a datagram the journal reads after the process has exited can no longer
/// be tied to the unit, so `journalctl -u` would miss it.
pub fn fatal(msg: &str) {
    if stderr_is_journal() {
        let _ = writeln!(io::stderr().lock(), "<3>error: {msg}");
        return;
    }
    let _ = writeln!(io::stderr().lock(), "nix-serve: error: {msg}");
    if let Some(l) = LOGGER.get() {
        let mut sink = l.diag.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*sink, Sink::Stderr) {
            write(&mut sink, Level::Error, msg);
        }
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

/// `e` and its causes, outermost first, joined with `": "`: what the log
/// says about an error. A cause whose text the message already ends with is
/// not repeated: many errors here print their source themselves.
pub fn chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn chain_joins_causes_once() {
        let e = E("a", Some(Box::new(E("b", Some(Box::new(E("c", None)))))));
        assert_eq!(chain(&e), "a: b: c");
        // An error that prints its source itself: not said twice.
        let e = E("open x: denied", Some(Box::new(E("denied", None))));
        assert_eq!(chain(&e), "open x: denied");
        assert_eq!(chain(&E("alone", None)), "alone");
    }

    #[test]
    fn escape_is_nginx_default_byte_for_byte() {
        let cases = [
            ("curl/8.0 (x86_64)", "curl/8.0 (x86_64)"),
            ("", ""),
            ("\x1b[2J", "\\x1B[2J"),
            ("a\rb\nc", "a\\x0Db\\x0Ac"),
            ("bell\x07", "bell\\x07"),
            ("say \"hi\"", "say \\x22hi\\x22"),
            ("back\\slash", "back\\x5Cslash"),
            ("tab\tdel\x7f", "tab\\x09del\\x7F"),
            ("é", "\\xC3\\xA9"),
            ("~ and space", "~ and space"),
        ];
        for (raw, logged) in cases {
            assert_eq!(escape(raw), logged, "{raw:?}");
        }
    }
}
