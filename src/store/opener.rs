//! Opening the store a URI names (`uri.rs`): probed once at start-up, the
//! backend settled on (in `auto`, the local database when it can be read,
//! else the daemon), then one connection per worker.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::daemon::{ChangeSignal, DaemonStore, STALE_BOUND};
use super::local::{LocalLocation, LocalStore, SharedLocal};
use super::uri::{log_dir, machine_socket, parse, Target, DEFAULT_STATE_DIR};
use super::{Store, StoreError};
use crate::nix::store_path::StoreDir;

/// Read and write timeout of daemon connections unless the caller sets one.
pub const DEFAULT_DAEMON_TIMEOUT: Duration = Duration::from_secs(30);

/// The backend settled on by [`Opener::resolve`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Backend {
    Local(LocalLocation),
    Daemon {
        socket: PathBuf,
        store_dir: StoreDir,
    },
}

/// Makes one store connection per worker, all to the same store.
#[derive(Clone)]
pub struct Opener {
    backend: Backend,
    daemon_timeout: Duration,
    log_dir: PathBuf,
    /// How daemon connections learn that the store changed; probed once.
    daemon_changes: ChangeSignal,
    /// The connection [`Opener::resolve`] checked, for the first `open`:
    /// neither a daemon handshake (a nix-daemon fork) nor a database open is
    /// paid again on the first request (bench/README.md, "Cold start").
    spare: Arc<Mutex<Option<Box<dyn Store>>>>,
    /// The local backend's probe connection, kept open for as long as any
    /// clone of the opener lives. SQLite deletes a WAL database's -wal and
    /// -shm files when its last connection closes, and a reader that may not
    /// write the db directory (a `DynamicUser=` service) cannot make them
    /// again: every later query would fail until some writer opened the
    /// database. An open WAL connection keeps a shared lock on the database
    /// file, which stops the last writer from removing them (docs/protocols.md §8).
    /// With it, in `auto`, the nix-daemon connection that made Nix open the
    /// database when nothing else had it open ([`decide`]).
    _keep_open: Option<KeepOpen>,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("backend", &self.backend)
            .field("daemon_timeout", &self.daemon_timeout)
            .field("daemon_changes", &self.daemon_changes)
            .finish_non_exhaustive()
    }
}

/// The probe's connection, shared by the opener's clones, and the daemon
/// connection that holds the database open, if one had to.
#[derive(Clone)]
struct KeepOpen {
    _conn: Arc<Mutex<LocalStore>>,
    /// Never used after start-up: it sits idle, costing no thread, while
    /// the daemon's worker for it keeps the database open. Kept rather than
    /// closed once our own connection is open: a process that may write the
    /// db directory then has the database open for as long as we do, and
    /// when we exit it closes after us and removes -wal and -shm; our
    /// read-only connection, closing last, would leave them behind
    /// (tests/local_wal_reader.rs). Like any Nix client's, its worker holds
    /// Nix's big lock shared, so a Nix that must migrate the database schema
    /// waits until we exit (README "Command line and environment").
    _holder: Option<Arc<Mutex<DaemonStore>>>,
}

impl fmt::Debug for KeepOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeepOpen")
    }
}

impl Opener {
    /// Resolves `uri` (`auto`, `daemon`, `unix://…`, `local`, `local?root=…`, an
    /// absolute path) with `NIX_STORE_DIR`/`NIX_STATE_DIR`/`NIX_DAEMON_SOCKET_PATH`
    /// from `env`, and checks once that the store can be reached.
    pub fn resolve(uri: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, StoreError> {
        Self::resolve_with_timeout(uri, env, DEFAULT_DAEMON_TIMEOUT)
    }

    /// [`Opener::resolve`] with the read/write timeout of daemon connections.
    pub fn resolve_with_timeout(
        uri: &str,
        env: &dyn Fn(&str) -> Option<String>,
        daemon_timeout: Duration,
    ) -> Result<Self, StoreError> {
        // UriError says it all, its one nested cause included.
        let target = parse(uri, env).map_err(|e| StoreError::Unavailable(e.to_string().into()))?;
        let shown = if uri.is_empty() { "auto" } else { uri };
        let mut local = None;
        let mut daemon = None;
        let backend = decide(
            shown,
            target,
            &mut |loc| {
                let mut store = LocalStore::open(loc.clone())?;
                store.check()?;
                local = Some(store);
                Ok(())
            },
            &mut |socket, dir| {
                let mut store = DaemonStore::new(socket.to_owned(), dir.clone(), daemon_timeout);
                store.check()?;
                daemon = Some(store);
                Ok(())
            },
            &mut note,
        )?;
        let log_dir = log_dir(uri, env);
        // The local backend keeps a daemon connection only as the database's holder.
        let (daemon, holder) = match &backend {
            Backend::Daemon { .. } => (daemon, None),
            Backend::Local(_) => (None, daemon),
        };
        let (spare, daemon_changes): (Option<Box<dyn Store>>, _) = match (&backend, daemon) {
            (Backend::Daemon { .. }, Some(mut daemon)) => {
                let state_dir = env("NIX_STATE_DIR")
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| DEFAULT_STATE_DIR.into());
                let changes = daemon
                    .find_database(Path::new(&state_dir))
                    .unwrap_or_else(|why| {
                        crate::log::info(&format!(
                            "narinfo cache: no database to watch ({why}); daemon answers are \
                             remembered for at most {} ms",
                            STALE_BOUND.as_millis()
                        ));
                        ChangeSignal::Every(STALE_BOUND)
                    });
                if let ChangeSignal::Every(_) = changes {
                    daemon = daemon.with_change_signal(changes.clone());
                }
                (
                    Some(Box::new(daemon.with_log_dir(log_dir.clone()))),
                    changes,
                )
            }
            _ => (None, ChangeSignal::Every(STALE_BOUND)),
        };
        // The local probe serves the first worker and stays open after it.
        let (spare, keep_open) = match (&backend, local) {
            (Backend::Local(_), Some(local)) => {
                let (first, keeper) = SharedLocal::new(local.with_log_dir(log_dir.clone()));
                let first: Box<dyn Store> = Box::new(first);
                let keep = KeepOpen {
                    _conn: keeper,
                    _holder: holder.map(|d| Arc::new(Mutex::new(d))),
                };
                (Some(first), Some(keep))
            }
            _ => (spare, None),
        };
        Ok(Opener {
            backend,
            daemon_timeout,
            log_dir,
            daemon_changes,
            spare: Arc::new(Mutex::new(spare)),
            _keep_open: keep_open,
        })
    }

    /// A connection for one worker: the first call gets the one checked at
    /// start-up, already connected; later ones a fresh one, which is cheap:
    /// the daemon backend connects on first use, the local one reads the
    /// database on first query.
    pub fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(store) = spare {
            return Ok(store);
        }
        match &self.backend {
            Backend::Local(loc) => Ok(Box::new(
                LocalStore::open(loc.clone())?.with_log_dir(self.log_dir.clone()),
            )),
            Backend::Daemon { socket, store_dir } => Ok(Box::new(
                DaemonStore::new(socket.clone(), store_dir.clone(), self.daemon_timeout)
                    .with_change_signal(self.daemon_changes.clone())
                    .with_log_dir(self.log_dir.clone()),
            )),
        }
    }

    /// `local /nix/var/nix/db/db.sqlite` or `daemon /path/to/socket`, for logs.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(loc) => format!("local {}", loc.db.display()),
            Backend::Daemon { socket, .. } => format!("daemon {}", socket.display()),
        }
    }

    /// How the store tells of its changes: its database, or the clock.
    pub fn change_signal(&self) -> ChangeSignal {
        match &self.backend {
            Backend::Local(loc) => ChangeSignal::Database(loc.db.clone()),
            Backend::Daemon { .. } => self.daemon_changes.clone(),
        }
    }

    /// The local backend's database and files, `None` for the daemon.
    pub fn local_location(&self) -> Option<&LocalLocation> {
        match &self.backend {
            Backend::Local(loc) => Some(loc),
            Backend::Daemon { .. } => None,
        }
    }

    pub fn store_dir(&self) -> &StoreDir {
        match &self.backend {
            Backend::Local(loc) => &loc.store_dir,
            Backend::Daemon { store_dir, .. } => store_dir,
        }
    }

    /// The nix-daemon socket through which paths are added to this store
    /// (`--upstream`'s imports), or why there is none. The daemon backend's
    /// own; for the local backend, the machine's daemon (`env` as for
    /// [`parse`]) only if it serves this very database, as
    /// [`DaemonStore::find_database`] tells (its newest path the same): a
    /// chroot store read here is not the one the machine's daemon adds to.
    /// Asks that daemon once, now.
    pub fn import_socket(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, String> {
        let loc = match &self.backend {
            Backend::Daemon { socket, .. } => return Ok(socket.clone()),
            Backend::Local(loc) => loc,
        };
        let socket = machine_socket(env);
        let state_dir = (loc.db.parent().and_then(Path::parent))
            .ok_or_else(|| format!("{}: no state directory above it", loc.db.display()))?;
        let mut daemon =
            DaemonStore::new(socket.clone(), loc.store_dir.clone(), self.daemon_timeout);
        let found = daemon
            .find_database(state_dir)
            .map_err(|why| format!("the nix-daemon at {}: {why}", socket.display()))?;
        match found {
            ChangeSignal::Database(db) if db == loc.db => Ok(socket),
            _ => Err(format!(
                "the nix-daemon at {} serves another store than {}",
                socket.display(),
                loc.db.display()
            )),
        }
    }
}

/// What [`decide`] has to say about `auto`'s choice.
#[derive(Debug, PartialEq, Eq)]
enum Note {
    /// The database is read directly, held open through the daemon.
    Held(String),
    /// The daemon serves: slower, and the database could not be read.
    Fallback(String),
}

/// Start-up notes go to the server's log: the journal when run by systemd,
/// else stderr. A function, so that [`decide`]'s tests can collect them.
fn note(note: Note) {
    match note {
        Note::Held(msg) => crate::log::info(&msg),
        Note::Fallback(msg) => crate::log::warn(&msg),
    }
}

/// Probes `target` and picks the backend. In `auto`: the local database if
/// it can be read; if not, a daemon connection, and the database again while
/// that connection holds it open; the daemon if it still cannot be read. Said
/// once through `note`. Failure is one line naming everything tried.
fn decide(
    uri: &str,
    target: Target,
    probe_local: &mut dyn FnMut(&LocalLocation) -> Result<(), StoreError>,
    probe_daemon: &mut dyn FnMut(&Path, &StoreDir) -> Result<(), StoreError>,
    note: &mut dyn FnMut(Note),
) -> Result<Backend, StoreError> {
    let fail =
        |why: String| StoreError::Unavailable(format!("cannot open store '{uri}': {why}").into());
    let daemon_why =
        |socket: &Path, e: StoreError| format!("daemon socket {}: {}", socket.display(), reason(e));
    match target {
        Target::Local(loc) => match probe_local(&loc) {
            Ok(()) => Ok(Backend::Local(loc)),
            Err(e) => Err(fail(reason(e))),
        },
        Target::Daemon { socket, store_dir } => match probe_daemon(&socket, &store_dir) {
            Ok(()) => Ok(Backend::Daemon { socket, store_dir }),
            Err(e) => Err(fail(daemon_why(&socket, e))),
        },
        Target::Auto { local, socket } => {
            let alone = match probe_local(&local) {
                Ok(()) => return Ok(Backend::Local(local)),
                Err(e) => reason(e),
            };
            // Typically docs/protocols.md §8's read-only case: a reader that
            // may not write the db directory cannot open a WAL database no
            // connection holds, as on an idle machine. A daemon connection
            // makes Nix hold it: the daemon's worker for a connection opens
            // the store's database before it answers the handshake and keeps
            // it open until the connection closes (Nix 2.8, seen with strace:
            // db.sqlite, -wal and -shm are open before the client's first
            // byte is read; `processConnection(openUncachedStore(), …)` in
            // https://github.com/NixOS/nix/blob/2.8.0/src/nix/daemon.cc).
            // The fallback needs that connection anyway.
            if let Err(e) = probe_daemon(&socket, &local.store_dir) {
                return Err(fail(format!("{alone}; {}", daemon_why(&socket, e))));
            }
            match probe_local(&local) {
                Ok(()) => {
                    note(Note::Held(format!(
                        "store 'auto': reading {} directly, held open by a connection to the \
                         nix-daemon at {} (without one: {alone})",
                        local.db.display(),
                        socket.display()
                    )));
                    Ok(Backend::Local(local))
                }
                Err(e) => {
                    note(Note::Fallback(format!(
                        "store 'auto': using the daemon at {} ({}, even with a nix-daemon \
                         connection open)",
                        socket.display(),
                        reason(e)
                    )));
                    Ok(Backend::Daemon {
                        socket,
                        store_dir: local.store_dir,
                    })
                }
            }
        }
    }
}

/// What `e` says, causes included, without the "store unavailable: " its
/// `Display` starts with: one attempt's part of the start-up error.
fn reason(e: StoreError) -> String {
    match e {
        StoreError::Unavailable(why) => crate::log::chain(&why),
        other => crate::log::chain(&other),
    }
}

impl super::OpenStore for Opener {
    fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        Opener::open(self)
    }
}

#[cfg(test)]
mod tests;
