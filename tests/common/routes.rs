//! For the tests of the log, listing and compression routes: a raw HTTP
//! client that sends extra headers and reads chunked and close-delimited
//! bodies (written here, not trusting the server's own code).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub use crate::common::binary::Reply;

/// One request on a new connection (`Connection: close`), HTTP/1.1 unless
/// `http10`. The body is read by the rules of RFC 9112 §6.3: none for HEAD,
/// `Transfer-Encoding: chunked` decoded, `Content-Length`, else to EOF.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    http10: bool,
) -> Reply {
    let (mut reply, mut r) = send(addr, method, target, headers, http10);
    if method == "HEAD" {
        return reply;
    }
    if reply
        .header("Transfer-Encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim_end(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size:?}"));
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            assert_eq!(&chunk[n..], b"\r\n", "chunk not followed by CRLF");
            if n == 0 {
                break;
            }
            reply.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(len) = reply.header("Content-Length") {
        let len: usize = len.parse().unwrap();
        reply.body = vec![0; len];
        r.read_exact(&mut reply.body).unwrap();
    } else {
        r.read_to_end(&mut reply.body).unwrap();
    }
    reply
}

/// Sends one request (as [`request`]) and reads the reply's head: the reply
/// with no body yet, and the connection where its body starts.
pub fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    http10: bool,
) -> (Reply, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.{}\r\nHost: test\r\nConnection: close\r\n",
        if http10 { 0 } else { 1 }
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "EOF inside the head");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let head = head.trim_end().to_owned();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let reply = Reply {
        status,
        head,
        body: Vec::new(),
    };
    (reply, r)
}

pub fn get(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "GET", target, &[], false)
}

/// The 32-character hash part of a full store path.
pub fn hash_part(path: &str) -> &str {
    &path.rsplit('/').next().unwrap()[..32]
}

/// Every route a path is served on, for the hash part `hash` whose NAR
/// hash is `nar` (nix32, no prefix).
pub fn every_route(hash: &str, nar: &str) -> Vec<String> {
    vec![
        format!("/{hash}.narinfo"),
        format!("/nar/{hash}-{nar}.nar"),
        format!("/nar/{hash}.nar"),
        format!("/nar/{nar}.nar?hash={hash}"),
        format!("/nar/{hash}-{nar}.nar.zst"),
        format!("/{hash}.ls"),
        format!("/log/{hash}"),
    ]
}

/// `nix-store -q --hash`: `path`'s NAR hash, nix32 without `sha256:`.
pub fn nar_hash(path: &str) -> String {
    let out = super::run(std::process::Command::new("nix-store").args(["-q", "--hash", path]));
    out.trim().trim_start_matches("sha256:").to_owned()
}
