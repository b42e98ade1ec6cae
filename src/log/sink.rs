//! Where lines go: stderr, a file (`--error-log`, `--access-log`) or syslog.
//! Only the log thread writes to them (`queue.rs`), so a sink that blocks
//! (a full pipe, a slow disk, a syslog socket nobody reads) blocks that
//! thread alone.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use syslog::{Facility, Formatter3164, Logger as Syslog, LoggerBackend};

use super::{InitError, Level};

enum Sink {
    Stderr,
    File(File),
    Syslog(Syslog<LoggerBackend, Formatter3164>),
}

/// What kind of sink diagnostics have, for [`super::fatal`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Dest {
    Stderr,
    File,
    Syslog,
}

/// The sinks, owned by the log thread once it runs.
pub(super) struct Sinks {
    diag: Sink,
    access: Option<Sink>,
    /// The files given as `--error-log` and `--access-log`, for [`Sinks::reopen`].
    error_path: Option<PathBuf>,
    access_path: Option<PathBuf>,
    /// One batch's bytes, written with one `write` where the sink allows.
    buf: Vec<u8>,
}

/// A batch buffer larger than this is let go after use: a burst that filled
/// the access queue should not pin its megabytes for the rest of the run.
const KEEP_BUF: usize = 256 * 1024;

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

impl Sinks {
    /// Diagnostics to `error_log`, else syslog under systemd, else stderr;
    /// access lines to `access_log`, if given.
    pub fn open(
        systemd: bool,
        error_log: Option<&Path>,
        access_log: Option<&Path>,
    ) -> Result<Sinks, InitError> {
        let open = |flag, path: &Path| {
            open_file(path).map_err(|source| InitError::Open {
                flag,
                path: path.to_owned(),
                source,
            })
        };
        let diag = match error_log {
            Some(p) => open("--error-log", p)?,
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
        let access = access_log.map(|p| open("--access-log", p)).transpose()?;
        Ok(Sinks {
            diag,
            access,
            error_path: error_log.map(Path::to_owned),
            access_path: access_log.map(Path::to_owned),
            buf: Vec::new(),
        })
    }

    /// Where diagnostics go.
    pub fn diag_to(&self) -> Dest {
        match self.diag {
            Sink::Stderr => Dest::Stderr,
            Sink::File(_) => Dest::File,
            Sink::Syslog(_) => Dest::Syslog,
        }
    }

    pub fn has_access(&self) -> bool {
        self.access.is_some()
    }

    pub fn write_diag(&mut self, lines: &[(Level, String)]) {
        let lines = lines.iter().map(|(level, l)| (*level, l.as_str()));
        write_batch(&mut self.diag, &mut self.buf, lines, true);
    }

    pub fn write_access(&mut self, lines: &[String]) {
        if let Some(sink) = &mut self.access {
            let lines = lines.iter().map(|l| (Level::Info, l.as_str()));
            write_batch(sink, &mut self.buf, lines, false);
        }
    }

    /// Opens `--error-log` and `--access-log` again by name, after logrotate
    /// renamed them: lines written from now on go to the new files. A file
    /// that cannot be opened keeps its old sink (nothing is lost). Stderr
    /// and syslog sinks are left as they are. Returns what to log about it.
    pub fn reopen(&mut self) -> Vec<(Level, String)> {
        let mut said = Vec::new();
        for (path, sink, flag) in [
            (&self.error_path, Some(&mut self.diag), "--error-log"),
            (&self.access_path, self.access.as_mut(), "--access-log"),
        ] {
            let (Some(path), Some(sink)) = (path, sink) else {
                continue;
            };
            match open_file(path) {
                Ok(new) => *sink = new,
                Err(e) => said.push((
                    Level::Error,
                    format!(
                        "cannot reopen {flag} {}: {e}; still writing to the old file",
                        path.display()
                    ),
                )),
            }
        }
        if said.is_empty() {
            said.push((Level::Info, "SIGHUP: log files reopened".to_owned()));
        }
        said
    }
}

fn tag(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Info => "info",
    }
}

/// Writes `lines` to `sink`: to a file or stderr as one buffer (one
/// `write` for the whole batch, unless the sink takes it in parts), to
/// syslog one datagram a line, as syslog wants. `tagged`: diagnostics,
/// prefixed `nix-serve: LEVEL: ` (syslog has the level and the name in its
/// header instead). Write errors are dropped: there is nowhere left to say
/// them.
fn write_batch<'a>(
    sink: &mut Sink,
    buf: &mut Vec<u8>,
    lines: impl Iterator<Item = (Level, &'a str)>,
    tagged: bool,
) {
    let mut stderr;
    let file: &mut dyn Write = match sink {
        Sink::Syslog(s) => {
            for (level, line) in lines {
                let _ = match level {
                    Level::Error => s.err(line),
                    Level::Warning => s.warning(line),
                    Level::Info => s.info(line),
                };
            }
            return;
        }
        Sink::File(f) => f,
        Sink::Stderr => {
            stderr = io::stderr().lock();
            &mut stderr
        }
    };
    buf.clear();
    for (level, line) in lines {
        if tagged {
            buf.extend_from_slice(b"nix-serve: ");
            buf.extend_from_slice(tag(level).as_bytes());
            buf.extend_from_slice(b": ");
        }
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    }
    if !buf.is_empty() {
        let _ = file.write_all(buf);
    }
    if buf.capacity() > KEEP_BUF {
        *buf = Vec::new();
    }
}

/// One diagnostic line straight to stderr, from the caller's thread: before
/// [`super::init`] (no log thread yet, one thread in the process) and for
/// [`super::fatal`].
pub(super) fn write_now(level: Level, msg: &str) {
    let _ = writeln!(io::stderr().lock(), "nix-serve: {}: {msg}", tag(level));
}
