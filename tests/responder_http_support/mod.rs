//! An in-memory store and a server started in process on it, with a raw
//! HTTP client, for tests/responder_http.rs.
#![allow(dead_code)]

use std::io::{Cursor, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix_serve_sd::http::conn::{Limits, Shared};
use nix_serve_sd::http::server::{Listener, Server};
use nix_serve_sd::http::{OpenStore, Service, StoreSlot};
use nix_serve_sd::nix::hash::Sha256;
use nix_serve_sd::nix::path_info::PathInfo;
use nix_serve_sd::nix::signing::SecretKey;
use nix_serve_sd::nix::store_path::{HashPart, StoreDir, StorePath};
use nix_serve_sd::store::{Store, StoreError};

pub const HELLO: &str = "i9pmrzmpshapij2kin22pff6fc2adavx";
pub const BIG: &str = "n3mwipp8ivi7pmw8czjkzkzlnh2qsni5";
pub const SHORT: &str = "cs893g027bbckhhhxb7pyd6gsr3v152h";
pub const DOWN: &str = "r4av4lz1if6mhz07i5mk5zl7c58rby4x";
/// The store panics on this one: a bug must not take a worker down.
pub const PANIC: &str = "2h400ahvwbbr7km4x95411kcfqzxlfah";
pub const ABSENT: &str = "00000000000000000000000000000000";
/// The throw-away test key of `nix-protocols.md` §5.3.
pub const SECRET: &str = "test-cache-1:FJHot+xBwwdaU6W5DUXXFJOfUdnPmAfasjihN7wK2/xDXLbXhV7FiiSbrkFeHUnzgLkRm6xKsCJAwi7MxtJUQg==";

pub struct Entry {
    info: PathInfo,
    nar: Vec<u8>,
}

pub fn entry(hash: &str, name: &str, nar: Vec<u8>, sigs: Vec<String>) -> Entry {
    Entry {
        info: PathInfo {
            path: StorePath::from_base_name(&format!("{hash}-{name}")).unwrap(),
            deriver: None,
            nar_hash: Sha256::digest(&nar),
            nar_size: nar.len() as u64,
            references: vec![],
            registration_time: 0,
            ultimate: false,
            sigs,
            ca: None,
        },
        nar,
    }
}

pub fn big_nar() -> Vec<u8> {
    (0..3_000_001u32).map(|i| (i % 251) as u8).collect()
}

/// An in-memory store: `SHORT`'s NAR stream ends early, `DOWN` looks like a
/// daemon that went away.
pub struct FakeStore {
    dir: StoreDir,
    entries: Arc<Vec<Entry>>,
}

impl Store for FakeStore {
    fn store_dir(&self) -> &StoreDir {
        &self.dir
    }

    fn path_info_by_hash(&mut self, hash: &HashPart) -> Result<Option<PathInfo>, StoreError> {
        assert_ne!(
            hash.as_str(),
            PANIC,
            "fake store bug (expected by the test)"
        );
        if hash.as_str() == DOWN {
            return Err(StoreError::Unavailable("daemon socket gone".into()));
        }
        Ok(self
            .entries
            .iter()
            .find(|e| e.info.path.hash_part() == *hash)
            .map(|e| e.info.clone()))
    }

    fn path_info(&mut self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        self.path_info_by_hash(&path.hash_part())
    }

    fn is_valid_path(&mut self, path: &StorePath) -> Result<bool, StoreError> {
        Ok(self.path_info(path)?.is_some())
    }

    fn nar(&mut self, info: &PathInfo, offset: u64) -> Result<Box<dyn Read + '_>, StoreError> {
        let e = self
            .entries
            .iter()
            .find(|e| e.info.path == info.path)
            .expect("known path");
        let mut bytes = e.nar[offset as usize..].to_vec();
        if info.path.hash_part().as_str() == SHORT {
            bytes.truncate(bytes.len() / 2);
        }
        Ok(Box::new(Cursor::new(bytes)))
    }
}

pub struct Harness {
    pub addr: SocketAddr,
    pub server: Option<Server>,
    pub opens: Arc<AtomicUsize>,
    pub hello: PathInfo,
    pub big: Vec<u8>,
}

pub fn start(workers: usize, keys: Vec<SecretKey>, limits: Limits) -> Harness {
    let big = big_nar();
    let hello = entry(
        HELLO,
        "hello.txt",
        b"nar-of-hello".to_vec(),
        vec!["old-key:c2ln".into()],
    );
    let hello_info = hello.info.clone();
    let entries = Arc::new(vec![
        hello,
        entry(BIG, "big.bin", big.clone(), vec![]),
        entry(SHORT, "short", vec![7u8; 100_000], vec![]),
    ]);
    let opens = Arc::new(AtomicUsize::new(0));
    let (e, o) = (entries.clone(), opens.clone());
    let open: OpenStore = Box::new(move || {
        o.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(FakeStore {
            dir: StoreDir::default(),
            entries: e.clone(),
        }) as Box<dyn Store>)
    });
    let slots = (0..workers).map(|_| StoreSlot::new(None)).collect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Shared {
        svc: Service { keys, priority: 30 },
        open,
        limits,
        draining: AtomicBool::new(false),
        waiting: AtomicUsize::new(0),
        access_log: false,
    };
    let server = Server::start(vec![Listener::Tcp(listener)], slots, shared).unwrap();
    Harness {
        addr,
        server: Some(server),
        opens,
        hello: hello_info,
        big,
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

pub fn send(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
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
