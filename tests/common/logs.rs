//! The server's log files and pipes, as the tests read them
//! (tests/log_*.rs): waits bounded by [`super::wait_until`], FIFOs that no
//! one reads until the test says so, counts in the lines the log writes.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::binary::{free_port, wait_listening, Running};

/// The text of `path`, empty if it is not there yet.
pub fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Waits (up to 30 s) until `path` holds `needle` `n` times; returns its text.
pub fn wait_for_n(path: &Path, needle: &str, n: usize) -> String {
    let what = format!("{n} × {needle:?} in {}", path.display());
    super::wait_until(&what, Duration::from_secs(30), || {
        read(path).matches(needle).count() >= n
    });
    read(path)
}

/// Waits (up to 30 s) until `path` holds `needle`; returns its text.
pub fn wait_for(path: &Path, needle: &str) -> String {
    wait_for_n(path, needle, 1)
}

/// A FIFO made at `path`, opened here for reading and writing: the server
/// can open it (a FIFO with no reader would block its open), nothing reads
/// it until the test hands the returned end to [`drain`], and a write to
/// it blocks once the pipe's buffer is full, as a log nobody reads does.
pub fn unread_fifo(path: &Path) -> File {
    let made = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {}", path.display());
    // O_RDWR: Linux opens a FIFO so without waiting for a writer.
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

/// Reads `pipe` from now on, on a thread of its own, into the buffer
/// returned. (The thread ends with the test process: the pipe never ends,
/// since `pipe` is also a writer.)
pub fn drain(mut pipe: File) -> Arc<Mutex<Vec<u8>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                return;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    got
}

/// The sum of the counts the log gives in its lines that contain `what`,
/// the number just before it (`1,234 access log lines dropped`: `1234`).
pub fn counted(text: &str, what: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            let before = &l[..l.find(what)?];
            let digits = before.trim_end().rsplit(' ').next()?.replace(',', "");
            Some(
                digits
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("no count in {l:?}")),
            )
        })
        .sum()
}

/// Starts the binary on a port that was free a moment ago, with `args`
/// after `--listen`, and waits until it listens (its start-up line may go
/// to a log file: it cannot be waited for on stderr).
pub fn start_on_free_port(args: &[&str], stderr: Stdio) -> (Running, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = addr.to_string();
    let mut all = vec!["--listen", listen.as_str()];
    all.extend_from_slice(args);
    let server = Running::start(&all, stderr);
    wait_listening(addr, Duration::from_secs(60));
    (server, addr)
}
