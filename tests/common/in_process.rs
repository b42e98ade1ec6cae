//! The server started in process the way `main` starts it, on a real store
//! (a chroot store real Nix made, or a test nix-daemon), for
//! tests/server_http.rs and others: the test sees the store connections it
//! makes and the requests that reach a worker.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix_serve_sd::cache::{heavy, Cache, ReplySettings};
use nix_serve_sd::nix::path_info::PathInfo;
use nix_serve_sd::nix::signing::SecretKey;
use nix_serve_sd::nix::store_path::{HashPart, StoreDir, StorePath};
use nix_serve_sd::server::{Limits, Listener, Server, Settings};
use nix_serve_sd::store::{Generation, NarBody, OpenStore, Opener, Store, StoreError};

pub struct Harness {
    pub addr: SocketAddr,
    pub server: Option<Server>,
    /// Store connections made so far (one per worker at start).
    pub opens: Arc<AtomicUsize>,
    /// Requests the workers asked their store about (every narinfo a
    /// worker answers reads the store's generation first): one the event
    /// loop answered by itself does not count.
    pub asks: Arc<AtomicUsize>,
    /// When set, the next store connection to be made panics instead: a bug
    /// in the request path, which must cost one connection, not the worker.
    pub panic_next_open: Arc<AtomicBool>,
}

/// Resolves `uri` as `main` does, through the process environment.
pub fn opener(uri: &str) -> Opener {
    let env = |k: &str| std::env::var(k).ok();
    Opener::resolve(uri, &env).unwrap_or_else(|e| panic!("store {uri}: {e}"))
}

/// The real store, with its connections counted on their way, and a
/// panic on demand.
struct Counting {
    real: Opener,
    opens: Arc<AtomicUsize>,
    asks: Arc<AtomicUsize>,
    panic_next_open: Arc<AtomicBool>,
}

/// A real store connection that counts how often a worker asks it for its
/// generation.
struct Asked {
    real: Box<dyn Store>,
    asks: Arc<AtomicUsize>,
}

impl Store for Asked {
    fn store_dir(&self) -> &StoreDir {
        self.real.store_dir()
    }

    fn generation(&mut self) -> Result<Generation, StoreError> {
        self.asks.fetch_add(1, Ordering::SeqCst);
        self.real.generation()
    }

    fn path_info_by_hash(&mut self, hash: &HashPart) -> Result<Option<PathInfo>, StoreError> {
        self.real.path_info_by_hash(hash)
    }

    fn path_info(&mut self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        self.real.path_info(path)
    }

    fn nar(&mut self, info: &PathInfo, offset: u64) -> Result<NarBody, StoreError> {
        self.real.nar(info, offset)
    }

    fn nar_listing(&mut self, info: &PathInfo) -> Result<Vec<u8>, StoreError> {
        self.real.nar_listing(info)
    }

    fn log_dir(&self) -> Option<&Path> {
        self.real.log_dir()
    }

    fn serves(&self, path: &StorePath) -> bool {
        self.real.serves(path)
    }
}

impl OpenStore for Counting {
    fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        assert!(
            !self.panic_next_open.swap(false, Ordering::SeqCst),
            "store connection refused by the test (a panic it expects)"
        );
        Ok(Box::new(Asked {
            real: self.real.open()?,
            asks: self.asks.clone(),
        }))
    }
}

/// Serves the store `opener` names on 127.0.0.1, port 0, wired as `main`
/// wires it; the store connections are counted on their way. Each worker
/// opens its connection on its first request.
pub fn start(opener: Opener, workers: usize, keys: Vec<SecretKey>, limits: Limits) -> Harness {
    let opens = Arc::new(AtomicUsize::new(0));
    let asks = Arc::new(AtomicUsize::new(0));
    let panic_next_open = Arc::new(AtomicBool::new(false));
    let signal = opener.change_signal();
    let open: Arc<dyn OpenStore> = Arc::new(Counting {
        real: opener,
        opens: opens.clone(),
        asks: asks.clone(),
        panic_next_open: panic_next_open.clone(),
    });
    let svc = Arc::new(ReplySettings {
        keys,
        priority: 30,
        compression: Default::default(),
        heavy: heavy::Heavy::new(heavy::BUDGET),
    });
    let metrics: Arc<nix_serve_sd::metrics::Metrics> = Default::default();
    let app = Arc::new(Cache::new(svc, open, signal, metrics.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = Settings {
        limits,
        loops: 2,
        workers,
        access_log: false,
        max_connections: None,
    };
    let server = Server::start(vec![Listener::Tcp(listener)], app, settings, metrics).unwrap();
    Harness {
        addr,
        server: Some(server),
        opens,
        asks,
        panic_next_open,
    }
}

pub fn limits() -> Limits {
    Limits {
        read_timeout: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(10),
        keepalive: true,
    }
}

pub fn assert_alive(addr: SocketAddr) {
    assert_eq!(
        super::http::get(addr, "/nix-cache-info").status,
        200,
        "server stopped serving"
    );
}
