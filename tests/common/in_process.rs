//! The server started in process the way `main` starts it, on a real store
//! (a chroot store real Nix made, or a test nix-daemon), with a raw HTTP
//! client, for tests/server_http.rs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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

/// A hash part no store here has.
pub const ABSENT: &str = "00000000000000000000000000000000";

/// The first 32 characters of a store path's base name.
pub fn hash_of(full: &str) -> &str {
    let base = full.rsplit('/').next().unwrap();
    &base[..32]
}

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

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response; `head_only` for replies to HEAD (no body follows).
pub fn read_reply(s: &mut impl Read, head_only: bool) -> Reply {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).unwrap();
        assert_eq!(
            n,
            1,
            "connection closed inside the head: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.push(byte[0]);
    }
    let text = String::from_utf8(raw).unwrap();
    let mut lines = text.split("\r\n");
    let status: u16 = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(": ").unwrap();
            (n.to_owned(), v.to_owned())
        })
        .collect();
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = reply
        .header("Content-Length")
        .expect("Content-Length on every reply")
        .parse()
        .unwrap();
    if !head_only {
        reply.body = vec![0u8; len];
        s.read_exact(&mut reply.body).unwrap();
    }
    reply
}

/// How long a test waits for the server (a read, a state change) before it
/// fails: a bug must fail the test, not hang the run.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A client connection whose reads give up after [`LIMIT`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

pub fn send(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut s = connect(addr);
    s.write_all(raw).unwrap();
    let head_only = raw.starts_with(b"HEAD ");
    let r = read_reply(&mut s, head_only);
    if r.header("Connection") == Some("close") {
        // Nothing after the promised bytes, and the connection closes.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "bytes after the body: {}", rest.len());
    }
    r
}

pub fn get(addr: SocketAddr, target: &str) -> Reply {
    send(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

pub fn head(addr: SocketAddr, target: &str) -> Reply {
    send(
        addr,
        format!("HEAD {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

pub fn assert_alive(addr: SocketAddr) {
    assert_eq!(
        get(addr, "/nix-cache-info").status,
        200,
        "server stopped serving"
    );
}
