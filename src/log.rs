//! Diagnostics and the access log.
//!
//! Run by systemd (it sets `INVOCATION_ID` or `JOURNAL_STREAM`, or passed
//! sockets), diagnostics go to syslog, which the journal collects with their
//! severity; run by hand they go to stderr; `--error-log FILE` overrides both.
//! `--access-log FILE` gets one line per request (`-` or `/dev/stderr`:
//! stderr, which works even when stderr is the journal's socket).
//!
//! One process-wide logger, set once in `main` before any thread starts.

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use syslog::{Facility, Formatter3164, Logger as Syslog, LoggerBackend};

enum Sink {
    Stderr,
    File(File),
    Syslog(Syslog<LoggerBackend, Formatter3164>),
}

struct Logger {
    diag: Mutex<Sink>,
    access: Option<Mutex<Sink>>,
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
    });
    Ok(())
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

/// A start-up failure: one line on stderr always (what an operator running
/// it by hand, or a test, reads), and in the log too when that is elsewhere.
pub fn fatal(msg: &str) {
    let _ = writeln!(io::stderr().lock(), "nix-serve: error: {msg}");
    if let Some(l) = LOGGER.get() {
        let mut sink = l.diag.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*sink, Sink::Stderr) {
            write(&mut sink, Level::Error, msg);
        }
    }
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
}
