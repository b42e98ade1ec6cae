//! The roots of `--serve-closure-of`, resolved through their symlinks, and
//! the thread that computes their closure again when a root or the store
//! changes, while the workers go on serving the last one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{Allowed, Closure, Source};
use crate::log;
use crate::nix::store_path::{StoreDir, StorePath};
use crate::store::StoreError;

/// Symlinks followed from a root before giving up (Linux's own limit).
const MAX_LINKS: usize = 40;
/// How often the main thread asks whether a root or the store changed: a
/// switched root is then served within a second (the bound) even
/// with a recompute of a few hundred milliseconds. A check is a few
/// `readlink`s and, for the local backend, one pragma.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Why a root names no store path now. Not fatal: such a root adds nothing
/// until it resolves (a profile not made yet, a GC root removed).
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("{root}: {source}")]
    Io {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{root}: resolves to {target}, which is not in the store {store_dir}")]
    NotInStore {
        root: PathBuf,
        target: PathBuf,
        store_dir: String,
    },
    #[error("{root}: more than {MAX_LINKS} symlinks")]
    TooManyLinks { root: PathBuf },
}

/// The store path `root` names: `root` itself, a path inside one, or a
/// chain of symlinks (`/run/current-system`, a profile and its generation
/// links, a GC root) ending in one. The chain is followed link by link,
/// never past the store directory: a store path that is itself a symlink
/// is the root, not what it points to.
pub fn resolve_root(root: &Path, store_dir: &StoreDir) -> Result<StorePath, RootError> {
    let io_err = |source| RootError::Io {
        root: root.to_owned(),
        source,
    };
    let mut at = root.to_owned();
    for _ in 0..MAX_LINKS {
        if let Some(path) = in_store(&at, store_dir) {
            return Ok(path);
        }
        let meta = fs::symlink_metadata(&at).map_err(io_err)?;
        if !meta.file_type().is_symlink() {
            // A symlink further up (`/home/u/result/bin`): let the kernel
            // resolve the whole path, then look again.
            let real = fs::canonicalize(&at).map_err(io_err)?;
            return in_store(&real, store_dir).ok_or_else(|| RootError::NotInStore {
                root: root.to_owned(),
                target: real,
                store_dir: store_dir.to_string(),
            });
        }
        let target = fs::read_link(&at).map_err(io_err)?;
        at = match at.parent() {
            Some(dir) => dir.join(target),
            None => target,
        };
    }
    Err(RootError::TooManyLinks {
        root: root.to_owned(),
    })
}

/// The store path `path` lies in, if it starts with `<store_dir>/<base>`.
fn in_store(path: &Path, store_dir: &StoreDir) -> Option<StorePath> {
    let rest = path.strip_prefix(store_dir.as_str()).ok()?;
    let base = rest.components().next()?.as_os_str().to_str()?;
    StorePath::from_base_name(base).ok()
}

/// What the closure was last computed from.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    targets: Vec<Option<StorePath>>,
    /// Roots that resolved to a path the store did not have: each check
    /// asks whether it has them now (a profile link can come first).
    missing: Vec<StorePath>,
}

/// The roots, their source, and what the current closure was made from.
pub struct Roots {
    roots: Vec<PathBuf>,
    source: Source,
    seen: Option<Seen>,
}

impl Roots {
    pub fn new(roots: Vec<PathBuf>, source: Source) -> Self {
        Roots {
            roots,
            source,
            seen: None,
        }
    }

    /// Resolves the roots and computes their closure if anything changed
    /// since the last one: `Some(closure)` then, `None` when nothing did.
    /// Roots that resolve to nothing are logged once per change.
    pub fn refresh(&mut self) -> Result<Option<Closure>, StoreError> {
        let dir = self.source.store_dir().clone();
        let resolved: Vec<Result<StorePath, RootError>> =
            self.roots.iter().map(|r| resolve_root(r, &dir)).collect();
        let targets: Vec<Option<StorePath>> =
            resolved.iter().map(|r| r.as_ref().ok().cloned()).collect();
        let store_changed = self.source.changed()?;
        if let Some(seen) = &self.seen {
            if seen.targets == targets && !store_changed {
                let mut arrived = false;
                for p in &seen.missing {
                    arrived |= self.source.is_valid(p)?;
                }
                if !arrived {
                    return Ok(None);
                }
            }
        }
        let changed_targets = self.seen.as_ref().map(|s| &s.targets) != Some(&targets);
        if changed_targets {
            for e in resolved.iter().filter_map(|r| r.as_ref().err()) {
                log::warn(&format!("--serve-closure-of {e}: serving nothing from it"));
            }
        }
        let valid: Vec<StorePath> = targets.iter().flatten().cloned().collect();
        let closure = self
            .source
            .closure(&valid)
            .inspect_err(|_| self.source.forget())?;
        let missing = valid
            .iter()
            .filter(|p| !closure.contains(&p.hash_part()))
            .cloned()
            .collect();
        self.seen = Some(Seen { targets, missing });
        Ok(Some(closure))
    }
}

/// The main thread's side: asks the background thread, once every
/// [`CHECK_EVERY`], to look at the roots and the store. Never waits.
pub struct Refresher {
    wake: SyncSender<()>,
    next: Instant,
}

impl Refresher {
    /// Computes the first closure now (so the server never serves
    /// unfiltered), then starts the thread that keeps it current.
    pub fn start(mut roots: Roots) -> Result<(Arc<Allowed>, Refresher), StoreError> {
        let started = Instant::now();
        let first = roots.refresh()?.unwrap_or_default();
        log::info(&format!(
            "--serve-closure-of: {} paths in the closure of {} root(s), computed in {:.1} ms",
            first.len(),
            roots.roots.len(),
            started.elapsed().as_secs_f64() * 1e3
        ));
        let allowed = Arc::new(Allowed::new(first));
        let (wake, woken) = mpsc::sync_channel(1);
        let shared = allowed.clone();
        thread::Builder::new()
            .name("closure".into())
            .spawn(move || keep_current(roots, &shared, &woken))
            .map_err(StoreError::Io)?;
        let refresher = Refresher {
            wake,
            next: Instant::now() + CHECK_EVERY,
        };
        Ok((allowed, refresher))
    }

    /// Called from the main thread at every tick.
    pub fn tick(&mut self, now: Instant) {
        if now < self.next {
            return;
        }
        self.next = now + CHECK_EVERY;
        // Full: a check is still running or queued, so this one is not
        // needed. Disconnected: the thread is gone (it never returns on its
        // own); nothing to do from here.
        match self.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }
}

/// The background thread: one refresh per wake, until the refresher is gone.
/// A failure keeps the closure it had (never a wider one) and is tried
/// again at the next wake.
fn keep_current(mut roots: Roots, allowed: &Allowed, woken: &Receiver<()>) {
    let mut failing = false;
    while woken.recv().is_ok() {
        let started = Instant::now();
        match roots.refresh() {
            Ok(Some(closure)) => {
                let n = closure.len();
                allowed.replace(closure);
                log::info(&format!(
                    "--serve-closure-of: now {n} paths, recomputed in {:.1} ms",
                    started.elapsed().as_secs_f64() * 1e3
                ));
                failing = false;
            }
            Ok(None) => failing = false,
            Err(e) => {
                if !failing {
                    log::warn(&format!(
                        "--serve-closure-of: cannot recompute the closure, keeping the last one: {e}"
                    ));
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const A: &str = "wmm9hngfwxsjqpiy50lligndn8n83f6w-a";

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("closure-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn roots_resolve_through_symlink_chains_but_not_past_the_store() {
        let dir = StoreDir::default();
        let d = scratch("chain");
        let a = StorePath::from_base_name(A).unwrap();
        // A store path and a path inside one name themselves, whether
        // or not they exist here.
        let direct = Path::new("/nix/store").join(A);
        assert_eq!(resolve_root(&direct, &dir).unwrap(), a);
        assert_eq!(resolve_root(&direct.join("bin/x"), &dir).unwrap(), a);
        // profile -> profile-2-link -> /nix/store/A, the second link relative.
        symlink(&direct, d.join("profile-2-link")).unwrap();
        symlink("profile-2-link", d.join("profile")).unwrap();
        assert_eq!(resolve_root(&d.join("profile"), &dir).unwrap(), a);
        // A symlink in the middle of the path.
        symlink(&d, d.join("up")).unwrap();
        assert_eq!(resolve_root(&d.join("up/profile"), &dir).unwrap(), a);
        symlink(d.join("loop"), d.join("loop")).unwrap();
        assert!(matches!(
            resolve_root(&d.join("loop"), &dir),
            Err(RootError::TooManyLinks { .. })
        ));
        fs::write(d.join("plain"), "x").unwrap();
        assert!(matches!(
            resolve_root(&d.join("plain"), &dir),
            Err(RootError::NotInStore { .. })
        ));
        assert!(matches!(
            resolve_root(&d.join("missing"), &dir),
            Err(RootError::Io { .. })
        ));
        fs::remove_dir_all(&d).unwrap();
    }
}
