//! The cold-start floor (bench/README.md, "Cold start"): a program that
//! takes the listening socket the way the servers do (fd 3, from the
//! harness playing systemd) and answers every connection with a fixed 200,
//! nothing else. Started as the servers are, its cold start is the part of
//! every server's figure that is the harness's, the kernel's and a Rust
//! program's own start-up: what no server can go below.
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::FromRawFd;

fn main() {
    // SAFETY: the harness passes a listening TCP socket as fd 3 (LISTEN_FDS=1)
    // and nothing else owns that descriptor in this process.
    #[allow(unsafe_code)]
    let listener = unsafe { TcpListener::from_raw_fd(3) };
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut head = [0u8; 4096];
        let _ = conn.read(&mut head);
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
        );
    }
}
