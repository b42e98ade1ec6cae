//! The built binary, for the tests that run it (tests/server_activation.rs,
//! server_cli.rs, server_nix.rs, …): free ports, a child server that is
//! killed when dropped, its log, its exit. Its HTTP client is `http.rs`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_nix-serve");

/// A port that was free a moment ago (bind port 0, read it, let it go).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nix-serve-sd-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `systemd-socket-activate` (Debian's systemd package) listening on each
/// of `listen` (`127.0.0.1:PORT` or a socket path) with `--fdname=http`,
/// ready to start the binary with `--idle-timeout 1s` and `args` on the
/// first connection; its stderr and the server's go to the test's. `None`
/// when it could not listen on every address (a port taken meanwhile).
pub fn socket_activate(listen: &[String], args: &[&str]) -> Option<Running> {
    let mut child = Command::new("systemd-socket-activate")
        .args(listen.iter().flat_map(|a| ["-l", a.as_str()]))
        .args(["--fdname=http", BIN, "--idle-timeout", "1s"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd)");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut listening = 0;
    for l in lines.by_ref().map_while(Result::ok) {
        eprintln!("{l}");
        listening += usize::from(l.starts_with("Listening on"));
        if listening == listen.len() {
            break;
        }
    }
    if listening < listen.len() {
        let _ = child.wait();
        return None;
    }
    thread::spawn(move || lines.map_while(Result::ok).for_each(|l| eprintln!("{l}")));
    Some(Running { child })
}

/// The built binary, running; killed when dropped.
pub struct Running {
    pub child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    pub fn start(args: &[&str], stderr: Stdio) -> Running {
        Self::start_wrapped(&[], args, stderr)
    }

    /// Runs the binary through `wrapper` (e.g. `prlimit --nofile=64`).
    pub fn start_wrapped(wrapper: &[&str], args: &[&str], stderr: Stdio) -> Running {
        Self::start_with(wrapper, &[], args, stderr)
    }

    /// [`Running::start`] with `env` set for the server.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Running {
        Self::start_with(&[], env, args, stderr)
    }

    fn start_with(wrapper: &[&str], env: &[(&str, &str)], args: &[&str], stderr: Stdio) -> Running {
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .args(args)
            .envs(env.iter().copied())
            .env_remove("LISTEN_FDS")
            .env_remove("NOTIFY_SOCKET")
            // DynamicUser= services have no home: nothing may depend on one.
            .env_remove("HOME")
            .env_remove("USER")
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Running { child }
    }

    /// Sends SIGTERM (via kill(1): no unsafe), without waiting.
    pub fn signal_term(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal_term();
        wait_exit(&mut self.child, Duration::from_secs(60)).expect("exits after SIGTERM")
    }
}

/// Starts the binary with `--listen 127.0.0.1:0` (no port to steal between
/// choosing and binding: other test suites share this machine) and reads the
/// address it bound from its start-up line. Its stderr is collected in the
/// returned buffer from then on.
pub fn start_on_any_port(args: &[&str]) -> (Running, SocketAddr, Arc<Mutex<String>>) {
    start_on_any_port_wrapped(&[], args)
}

/// [`start_on_any_port`] through `wrapper` (see [`Running::start_wrapped`]).
pub fn start_on_any_port_wrapped(
    wrapper: &[&str],
    args: &[&str],
) -> (Running, SocketAddr, Arc<Mutex<String>>) {
    start_on_any_port_with(wrapper, &[], args)
}

/// [`start_on_any_port`] with `env` set for the server.
pub fn start_on_any_port_with_env(
    args: &[&str],
    env: &[(&str, &str)],
) -> (Running, SocketAddr, Arc<Mutex<String>>) {
    start_on_any_port_with(&[], env, args)
}

/// [`start_on_any_port`] through `wrapper` with `env` set for the server.
pub fn start_on_any_port_with(
    wrapper: &[&str],
    env: &[(&str, &str)],
    args: &[&str],
) -> (Running, SocketAddr, Arc<Mutex<String>>) {
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut running = Running::start_with(wrapper, env, &all, Stdio::piped());
    let mut lines = BufReader::new(running.child.stderr.take().unwrap()).lines();
    let mut early = String::new();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| {
                panic!(
                    "nix-serve exited before serving: {:?}",
                    running.child.wait()
                )
            })
            .unwrap();
        eprintln!("{line}");
        early.push_str(&line);
        early.push('\n');
        if let Some(rest) = line.split_once("Serving store ").map(|(_, r)| r) {
            let on = rest
                .split_once(" on ")
                .expect("' on ' in the start-up line")
                .1;
            break on
                .split_once(" with ")
                .expect("' with ' in the start-up line")
                .0
                .parse()
                .unwrap();
        }
    };
    let log = Arc::new(Mutex::new(early));
    let sink = log.clone();
    thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("{line}");
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    (running, addr, log)
}

/// Waits (up to 30 s) until the log [`start_on_any_port`] collects satisfies
/// `found`, and returns it: its lines reach the test through a reader
/// thread, so a reply can arrive before the line its server wrote first.
/// (The reader thread also prints each line, so a time-out shows the log.)
pub fn wait_log(log: &Mutex<String>, what: &str, found: impl Fn(&str) -> bool) -> String {
    super::wait_until(what, Duration::from_secs(30), || {
        found(&log.lock().unwrap())
    });
    log.lock().unwrap().clone()
}

/// Waits until `addr` accepts connections, panicking after `limit`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) {
    let what = format!("something to listen on {addr}");
    super::wait_until(&what, limit, || TcpStream::connect(addr).is_ok());
}

/// The exit status of `child`, once it has exited; `None` if it still runs
/// after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    super::poll_until(limit, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status
}
