//! Listening sockets: those systemd passed, or our own bound as Starman
//! binds them: `HOST:PORT`, `:PORT` (every IPv6 and IPv4 address), a Unix
//! socket path.

use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use socket2::{Domain, SockAddr, Socket, Type};
use thiserror::Error;

use crate::config::ListenSpec;

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Another descriptor for the same socket: each event loop accepts
    /// from its own copy.
    pub fn try_clone(&self) -> std::io::Result<Listener> {
        Ok(match self {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Unix(l) => Listener::Unix(l.try_clone()?),
        })
    }

    /// The address, for the log.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => a.to_string(),
                Err(_) => "tcp".into(),
            },
            Listener::Unix(l) => match l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            {
                Some(p) => p,
                None => "unix".into(),
            },
        }
    }
}

#[derive(Debug, Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: String,
    #[source]
    pub source: io::Error,
}

/// Binds every address of `spec`. socket2 sets CLOEXEC on what it creates.
pub fn bind(spec: &ListenSpec, backlog: i32) -> Result<Vec<Listener>, BindError> {
    match spec {
        ListenSpec::Tcp(addrs) => addrs.iter().map(|a| bind_tcp(*a, backlog, None)).collect(),
        ListenSpec::AllAddresses(port) => {
            // Two sockets, the IPv6 one IPv6-only, so the result does not
            // depend on net.ipv6.bindv6only. No IPv6 on the host: IPv4 alone.
            let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port));
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port));
            let mut out = Vec::new();
            match bind_tcp(v6, backlog, Some(true)) {
                Ok(l) => out.push(l),
                Err(e)
                    if matches!(
                        e.source.raw_os_error(),
                        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
                    ) => {}
                Err(e) => return Err(e),
            }
            out.push(bind_tcp(v4, backlog, None)?);
            Ok(out)
        }
        ListenSpec::Unix(path) => bind_unix(path, backlog).map(|l| vec![l]),
    }
}

fn bind_tcp(addr: SocketAddr, backlog: i32, v6_only: Option<bool>) -> Result<Listener, BindError> {
    let err = |source| BindError {
        addr: addr.to_string(),
        source,
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if let Some(only) = v6_only {
        socket.set_only_v6(only).map_err(err)?;
    }
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(backlog).map_err(err)?;
    Ok(Listener::Tcp(socket.into()))
}

fn bind_unix(path: &Path, backlog: i32) -> Result<Listener, BindError> {
    let err = |source| BindError {
        addr: path.display().to_string(),
        source,
    };
    // A socket file left by a dead process is replaced; a live one is not.
    if path.exists() {
        match UnixStream::connect(path) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(err)?
            }
            _ => return Err(err(io::Error::from(ErrorKind::AddrInUse))),
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(err)?;
    socket
        .bind(&SockAddr::unix(path).map_err(err)?)
        .map_err(err)?;
    socket.listen(backlog).map_err(err)?;
    Ok(Listener::Unix(socket.into()))
}
