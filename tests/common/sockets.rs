//! A server's TCP sockets as the kernel sees them (`/proc/net/tcp`, see
//! proc(5)): whether the connections a test made were accepted, and
//! whether the server has read what they sent. The events a test waits for
//! instead of sleeping "long enough" for the server to get there.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// `st` in `/proc/net/tcp` (the kernel's `TCP_ESTABLISHED`, `TCP_LISTEN`).
const ESTABLISHED: &str = "01";
const LISTEN: &str = "0A";

/// The sockets on the server's side of a listening address, now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServerSide {
    /// Connections in the listening socket's accept queue: made by the
    /// kernel, not yet accepted by the server.
    pub waiting: usize,
    /// Connections established on the server's side, accepted or waiting.
    pub established: usize,
    /// Bytes clients sent that the server has not read yet, on all of them.
    pub unread: usize,
    /// Connections in any other state: closing, or closed by the client and
    /// not yet by the server (`CLOSE_WAIT`).
    pub closing: usize,
}

impl ServerSide {
    /// Of the server listening on `addr` (IPv4: `/proc/net/tcp`).
    pub fn of(addr: SocketAddr) -> ServerSide {
        assert!(matches!(addr.ip(), IpAddr::V4(_)), "{addr}: IPv4 only");
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let port = format!(":{:04X}", addr.port());
        let mut side = ServerSide::default();
        for line in table.lines().skip(1) {
            // sl local_address rem_address st tx_queue:rx_queue ...
            let f: Vec<&str> = line.split_whitespace().collect();
            let [_, local, _, state, queues, ..] = f[..] else {
                panic!("/proc/net/tcp: {line:?}");
            };
            if !local.ends_with(&port) {
                continue;
            }
            let rx = (queues.split_once(':'))
                .and_then(|(_, rx)| usize::from_str_radix(rx, 16).ok())
                .unwrap_or_else(|| panic!("/proc/net/tcp: {line:?}"));
            // rx_queue is the accept queue's length on a listening socket,
            // the bytes not yet read on a connection.
            match state {
                LISTEN => side.waiting += rx,
                ESTABLISHED => {
                    side.established += 1;
                    side.unread += rx;
                }
                // TIME_WAIT (06) is an earlier connection's, long closed.
                "06" => {}
                _ => side.closing += 1,
            }
        }
        side
    }
}

/// Waits until the server on `addr` has accepted at least `n` connections:
/// none waits in its accept queue.
pub fn wait_accepted(addr: SocketAddr, n: usize) {
    let what = format!("{n} connections accepted by {addr}");
    super::wait_until(&what, Duration::from_secs(60), || {
        let s = ServerSide::of(addr);
        s.waiting == 0 && s.established >= n
    });
}

/// Waits until the server on `addr` has accepted at least `n` connections
/// and read every byte they sent: none waits in its accept queue, none has
/// bytes unread.
pub fn wait_accepted_and_read(addr: SocketAddr, n: usize) {
    let what = format!("{n} connections accepted by {addr} and read");
    super::wait_until(&what, Duration::from_secs(60), || {
        let s = ServerSide::of(addr);
        s.waiting == 0 && s.established >= n && s.unread == 0
    });
}

/// Waits until `n` connections wait in the accept queue of `addr`: made by
/// the kernel, and not accepted by the server.
pub fn wait_waiting(addr: SocketAddr, n: usize) {
    let what = format!("{n} connections waiting in the accept queue of {addr}");
    super::wait_until(&what, Duration::from_secs(60), || {
        ServerSide::of(addr).waiting >= n
    });
}

/// Waits until the server on `addr` holds no connection (none established,
/// none closing): every client's close has been answered with its own.
pub fn wait_no_connection(addr: SocketAddr) {
    let what = format!("every connection to {addr} closed by the server");
    super::wait_until(&what, Duration::from_secs(60), || {
        let s = ServerSide::of(addr);
        s.established == 0 && s.closing == 0
    });
}
