//! A client socket, TCP or Unix, and the few operations the connection
//! state machine and the body threads need of it (non-blocking read and
//! write, a half close, a close that resets). Shared (`Arc`) between the
//! loop that owns the connection and the body thread sending its body;
//! never used by both at once.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

pub(super) enum Sock {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Sock {
    /// The descriptor, for registering with a loop's `mio::Poll`.
    pub fn raw(&self) -> RawFd {
        self.fd().as_raw_fd()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Tcp(s) => s.as_fd(),
            Sock::Unix(s) => s.as_fd(),
        }
    }

    pub fn shutdown_write(&self) {
        let _ = match self {
            Sock::Tcp(s) => s.shutdown(Shutdown::Write),
            Sock::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }

    /// Makes the close that follows a reset: what is still queued to send
    /// is dropped at once, instead of a FIN waiting behind megabytes that a
    /// client too slow to read them would never reach.
    pub fn reset_on_close(&self) {
        let _ = socket2::SockRef::from(&self.fd()).set_linger(Some(Duration::ZERO));
    }

    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).read(buf),
            Sock::Unix(s) => (&*s).read(buf),
        }
    }

    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).write(buf),
            Sock::Unix(s) => (&*s).write(buf),
        }
    }
}
