//! Naming the store: `--store URI` / `NIX_REMOTE`, Nix's conventions
//! (`docs/protocols.md` §7.1, §8).
//!
//! [`parse`] is pure (URI plus an injected environment → [`Target`]);
//! [`Opener::resolve`](super::Opener::resolve) then probes the target once
//! and settles on a backend (`opener.rs`).

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::local::LocalLocation;
use crate::nix::store_path::{StoreDir, StorePathError};

const DEFAULT_STORE_DIR: &str = "/nix/store";
pub(super) const DEFAULT_STATE_DIR: &str = "/nix/var/nix";

const SUPPORTED: &str =
    "use 'auto', 'daemon', 'unix:///path/to/socket', 'local', 'local?root=/path' or '/path'";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UriError {
    #[error(
        "unsupported store URI '{0}': nix-serve reads a store on this machine only; {SUPPORTED}"
    )]
    Unsupported(String),
    #[error("store URI '{uri}': unknown parameter '{name}' (this store type takes {allowed})")]
    Parameter {
        uri: String,
        name: String,
        allowed: &'static str,
    },
    #[error("store URI '{uri}': parameter '{name}' given twice")]
    Repeated { uri: String, name: String },
    #[error("store URI '{uri}': {what} must be an absolute path, not '{value}'")]
    NotAbsolute {
        uri: String,
        what: &'static str,
        value: String,
    },
    #[error("store URI '{0}': bad percent-encoding")]
    Encoding(String),
    #[error("store directory: {0}")]
    StoreDir(#[source] StorePathError),
}

/// What a URI names, before anything is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The local database if it can be read, else the daemon.
    Auto {
        local: LocalLocation,
        socket: PathBuf,
    },
    Local(LocalLocation),
    Daemon {
        socket: PathBuf,
        store_dir: StoreDir,
    },
}

/// Resolves `uri` with `NIX_STORE_DIR` (legacy `NIX_STORE`), `NIX_STATE_DIR`
/// and `NIX_DAEMON_SOCKET_PATH` read through `env`. An empty URI is `auto`.
pub fn parse(uri: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Target, UriError> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
    let params = Params::parse(uri, query)?;
    let store_dir = params
        .get("store")
        .or_else(|| var("NIX_STORE_DIR"))
        .or_else(|| var("NIX_STORE"))
        .unwrap_or_else(|| DEFAULT_STORE_DIR.to_owned());
    let store_dir = StoreDir::new(&store_dir).map_err(UriError::StoreDir)?;
    let state_dir = PathBuf::from(var("NIX_STATE_DIR").unwrap_or_else(|| DEFAULT_STATE_DIR.into()));
    let default_socket = machine_socket(env);
    let daemon = |socket: PathBuf, params: &Params| -> Result<Target, UriError> {
        params.only(&["store"], "only 'store'")?;
        Ok(Target::Daemon {
            socket,
            store_dir: store_dir.clone(),
        })
    };
    const LOCAL_PARAMS: &[&str] = &["root", "state", "store", "real"];
    const LOCAL_ALLOWED: &str = "'root', 'state', 'store' and 'real'";
    match base {
        "" | "auto" => {
            params.only(&["store"], "only 'store'")?;
            Ok(Target::Auto {
                local: local_location(uri, None, &params, &store_dir, &state_dir)?,
                socket: default_socket,
            })
        }
        "daemon" => daemon(default_socket, &params),
        "local" => {
            params.only(LOCAL_PARAMS, LOCAL_ALLOWED)?;
            let root = params.get("root");
            let loc = local_location(uri, root.as_deref(), &params, &store_dir, &state_dir)?;
            Ok(Target::Local(loc))
        }
        _ => {
            if let Some(socket) = base.strip_prefix("unix://") {
                if socket.is_empty() {
                    return daemon(default_socket, &params);
                }
                absolute(uri, "the socket", socket)?;
                daemon(PathBuf::from(socket), &params)
            } else if base.starts_with('/') {
                // Nix: a bare absolute path is a chroot store, `local?root=`.
                params.only(&["state", "store", "real"], "'state', 'store' and 'real'")?;
                let loc = local_location(uri, Some(base), &params, &store_dir, &state_dir)?;
                Ok(Target::Local(loc))
            } else {
                Err(UriError::Unsupported(uri.to_owned()))
            }
        }
    }
}

/// The machine's nix-daemon socket: `NIX_DAEMON_SOCKET_PATH`, else
/// `<NIX_STATE_DIR>/daemon-socket/socket`. docs/protocols.md §7.1: it
/// follows the machine's state dir, whatever a chroot store's own is.
pub(super) fn machine_socket(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    var("NIX_DAEMON_SOCKET_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(var("NIX_STATE_DIR").unwrap_or_else(|| DEFAULT_STATE_DIR.into()))
                .join("daemon-socket/socket")
        })
}

/// Nix's local-store settings: with a `root`, state is `<root>/nix/var/nix`
/// and the files are in `<root>/nix/store` (Nix hard-codes `/nix/store` there,
/// whatever the logical store dir); without, the machine's dirs.
fn local_location(
    uri: &str,
    root: Option<&str>,
    params: &Params,
    store_dir: &StoreDir,
    state_dir: &Path,
) -> Result<LocalLocation, UriError> {
    let root = root
        .map(|r| absolute(uri, "the root", r).map(|r| r.trim_end_matches('/')))
        .transpose()?;
    let state = match (params.get("state"), root) {
        (Some(s), _) => PathBuf::from(absolute(uri, "'state'", &s)?),
        (None, Some(r)) => PathBuf::from(format!("{r}/nix/var/nix")),
        (None, None) => state_dir.to_owned(),
    };
    let real_store = match (params.get("real"), root) {
        (Some(s), _) => PathBuf::from(absolute(uri, "'real'", &s)?),
        (None, Some(r)) => PathBuf::from(format!("{r}/nix/store")),
        (None, None) => PathBuf::from(store_dir.as_str()),
    };
    Ok(LocalLocation {
        store_dir: store_dir.clone(),
        real_store,
        db: state.join("db/db.sqlite"),
    })
}

/// The build-log directory of the store `uri` names (an already parsed
/// one), as Nix 2.8's `LocalFSStoreConfig::logDir`: `<root>/nix/var/log/nix`
/// for a chroot store, else `NIX_LOG_DIR`, else `/nix/var/log/nix` (docs/protocols.md §9). A
/// daemon store's logs are the machine's, which its clients read directly.
pub fn log_dir(uri: &str, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
    let root = if base.starts_with('/') {
        Some(base.to_owned())
    } else if base == "local" {
        Params::parse(uri, query).ok().and_then(|p| p.get("root"))
    } else {
        None
    };
    match root {
        Some(r) => PathBuf::from(format!("{}/nix/var/log/nix", r.trim_end_matches('/'))),
        None => PathBuf::from(
            env("NIX_LOG_DIR")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| super::build_log::DEFAULT_LOG_DIR.to_owned()),
        ),
    }
}

fn absolute<'a>(uri: &str, what: &'static str, value: &'a str) -> Result<&'a str, UriError> {
    if value.starts_with('/') {
        Ok(value)
    } else {
        Err(UriError::NotAbsolute {
            uri: uri.to_owned(),
            what,
            value: value.to_owned(),
        })
    }
}

/// The `?a=b&c=d` part of a store URI, percent-decoded.
struct Params<'u> {
    uri: &'u str,
    pairs: Vec<(String, String)>,
}

impl<'u> Params<'u> {
    fn parse(uri: &'u str, query: &str) -> Result<Self, UriError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for item in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            let (k, v) = (decode(uri, k)?, decode(uri, v)?);
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(UriError::Repeated {
                    uri: uri.to_owned(),
                    name: k,
                });
            }
            pairs.push((k, v));
        }
        Ok(Params { uri, pairs })
    }

    fn get(&self, name: &str) -> Option<String> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn only(&self, names: &[&str], allowed: &'static str) -> Result<(), UriError> {
        match self
            .pairs
            .iter()
            .find(|(k, _)| !names.contains(&k.as_str()))
        {
            Some((name, _)) => Err(UriError::Parameter {
                uri: self.uri.to_owned(),
                name: name.clone(),
                allowed,
            }),
            None => Ok(()),
        }
    }
}

fn decode(uri: &str, s: &str) -> Result<String, UriError> {
    let bad = || UriError::Encoding(uri.to_owned());
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests;
