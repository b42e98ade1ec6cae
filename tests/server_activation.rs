//! Socket activation and the idle exit, under the real
//! `systemd-socket-activate` and under a test that plays systemd (it holds
//! the socket and starts the binary again whenever a client waits and no
//! process runs, as systemd does with `Accept=no`). Run through scripts/test.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::binary::{tmpdir, wait_exit, Running, BIN};
use common::http::{get, Reply, Request, LIMIT};
use common::{hash_part, wait_until, Fixtures};

/// `GET target` on the first connection `connect` makes, retrying while
/// nobody listens yet: that connection is the request itself (with socket
/// activation, any connection starts the server).
fn get_when_listening<S: Read + Write>(
    at: &str,
    target: &str,
    mut connect: impl FnMut() -> std::io::Result<S>,
) -> Reply {
    let mut stream = None;
    wait_until(format!("something to listen on {at}"), LIMIT, || {
        stream = connect().ok();
        stream.is_some()
    });
    Request::get(target).send_on(stream.unwrap())
}

/// Starts `systemd-socket-activate -l LISTEN` (killed when dropped) once it
/// says it listens. `listen` is called again when the address was taken
/// meanwhile: other test suites share this machine's ports.
fn socket_activate(listen: impl Fn() -> Vec<String>) -> (Running, Vec<String>) {
    for _ in 0..5 {
        let at = listen();
        if let Some(running) = common::binary::socket_activate(&at, &[]) {
            return (running, at);
        }
    }
    panic!("systemd-socket-activate could not listen");
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn systemd_socket_activate_tcp_first_connection_then_idle_exit() {
    let _fx = Fixtures::load();
    let (mut sa, at) =
        socket_activate(|| vec![format!("127.0.0.1:{}", common::binary::free_port())]);
    let addr: SocketAddr = at[0].parse().unwrap();
    let r = get_when_listening(&at[0], "/nix-cache-info", || TcpStream::connect(addr));
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("StoreDir: /nix/store\n"));
    let status = wait_exit(&mut sa.child, LIMIT).expect("exits once idle");
    assert!(status.success(), "idle exit is status 0: {status}");
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn systemd_socket_activate_unix_first_connection_then_idle_exit() {
    let _fx = Fixtures::load();
    let dir = tmpdir("activate-unix");
    let sock = dir.join("http.sock");
    let (mut sa, at) = socket_activate(|| vec![sock.to_str().unwrap().to_owned()]);
    let r = get_when_listening(&at[0], "/nix-cache-info", || UnixStream::connect(&sock));
    assert_eq!(r.status, 200);
    let status = wait_exit(&mut sa.child, LIMIT).expect("exits once idle");
    assert!(status.success(), "idle exit is status 0: {status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Several sockets at once, TCP and Unix: both are served by the one process.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn systemd_socket_activate_tcp_and_unix_together() {
    let _fx = Fixtures::load();
    let dir = tmpdir("activate-both");
    let sock = dir.join("http.sock");
    let (mut sa, at) = socket_activate(|| {
        vec![
            format!("127.0.0.1:{}", common::binary::free_port()),
            sock.to_str().unwrap().to_owned(),
        ]
    });
    // Both connect before the process runs: it must accept from both.
    let unix = UnixStream::connect(&sock).unwrap();
    let tcp = TcpStream::connect(at[0].parse::<SocketAddr>().unwrap()).unwrap();
    unix.set_read_timeout(Some(LIMIT)).unwrap();
    tcp.set_read_timeout(Some(LIMIT)).unwrap();
    let cache_info = Request::get("/nix-cache-info");
    assert_eq!(cache_info.send_on(unix).status, 200);
    assert_eq!(cache_info.send_on(tcp).status, 200);
    let status = wait_exit(&mut sa.child, LIMIT).expect("exits once idle");
    assert!(status.success(), "idle exit is status 0: {status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether a client waits in `fd`'s accept queue, as systemd learns it.
#[allow(unsafe_code)]
fn pending(fd: RawFd, wait: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd that outlives the call, and `fd` is
    // kept open by the caller's listener for the whole call.
    let n = unsafe { libc::poll(&mut p, 1, wait.as_millis() as libc::c_int) };
    n > 0 && p.revents & libc::POLLIN != 0
}

#[derive(Debug)]
enum Event {
    Started(u32),
    Exited(u32, ExitStatus),
}

/// Plays systemd for one TCP socket: starts the binary with the socket as
/// fd 3 and LISTEN_FDS=1/LISTEN_PID whenever a client waits and no process
/// runs. Our fds are CLOEXEC, so the socket goes in as stdin and a shell
/// moves it to fd 3 and execs the binary in its own place (its pid is then
/// `$$`), which needs no unsafe pre_exec.
struct Activator {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// The NOTIFY_SOCKET reader outlives the supervisor, to hear the last STOPPING=1.
    reader_stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<Event>>>,
    notes: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
    dir: PathBuf,
}

impl Activator {
    fn start(name: &str, args: &[&str]) -> Activator {
        let dir = tmpdir(name);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let notify_path = dir.join("notify");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader_stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let notes = Arc::new(Mutex::new(Vec::new()));
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();

        let (s, ev) = (stop.clone(), events.clone());
        let supervisor = thread::spawn(move || {
            let mut child: Option<(u32, Child)> = None;
            let mut generation = 0;
            loop {
                if let Some((g, c)) = &mut child {
                    if let Some(st) = c.try_wait().unwrap() {
                        ev.lock().unwrap().push(Event::Exited(*g, st));
                        child = None;
                    }
                }
                if s.load(Ordering::SeqCst) {
                    if let Some((g, mut c)) = child.take() {
                        let pid = c.id().to_string();
                        let _ = Command::new("kill").args(["-TERM", &pid]).status();
                        let st = wait_exit(&mut c, LIMIT).unwrap_or_else(|| {
                            let _ = c.kill();
                            c.wait().unwrap()
                        });
                        ev.lock().unwrap().push(Event::Exited(g, st));
                    }
                    return;
                }
                if child.is_none() && pending(listener.as_raw_fd(), Duration::from_millis(20)) {
                    generation += 1;
                    let fd = OwnedFd::from(listener.try_clone().unwrap());
                    let c = Command::new("sh")
                        .arg("-c")
                        .arg("exec 3<&0 0</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1 WATCHDOG_PID=$$; exec \"$0\" \"$@\"")
                        .arg(BIN)
                        .args(&args)
                        .stdin(Stdio::from(fd))
                        .env("NOTIFY_SOCKET", &notify_path)
                        .env("WATCHDOG_USEC", "2000000")
                        .env_remove("LISTEN_FDNAMES")
                        .spawn()
                        .unwrap();
                    ev.lock().unwrap().push(Event::Started(generation));
                    child = Some((generation, c));
                } else {
                    thread::sleep(Duration::from_millis(5));
                }
            }
        });

        let (s, n) = (reader_stop.clone(), notes.clone());
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::SeqCst) {
                if let Ok(k) = notify.recv(&mut buf) {
                    n.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..k]).into_owned());
                }
            }
        });
        Activator {
            addr,
            stop,
            reader_stop,
            events,
            notes,
            threads: vec![supervisor, reader],
            dir,
        }
    }

    fn started(&self) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::Started(_)))
            .count()
    }

    fn exits(&self) -> Vec<ExitStatus> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Exited(_, st) => Some(*st),
                Event::Started(_) => None,
            })
            .collect()
    }

    /// Generations in the order they started, and in the order they exited:
    /// never two processes at once.
    fn generations(&self) -> (Vec<u32>, Vec<u32>) {
        let ev = self.events.lock().unwrap();
        let started = ev.iter().filter_map(|e| match e {
            Event::Started(g) => Some(*g),
            Event::Exited(..) => None,
        });
        let exited = ev.iter().filter_map(|e| match e {
            Event::Exited(g, _) => Some(*g),
            Event::Started(_) => None,
        });
        (started.collect(), exited.collect())
    }

    fn count_notes(&self, what: &str) -> usize {
        self.notes
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.lines().any(|l| l == what))
            .count()
    }

    /// Waits until `cond` holds; on a time-out, says what happened so far.
    fn wait_for(&self, what: &str, cond: impl Fn(&Activator) -> bool) {
        wait_until(Seen(what, &self.events), LIMIT, || cond(self));
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let mut threads = self.threads.drain(..);
        if let Some(supervisor) = threads.next() {
            let _ = supervisor.join();
        }
        self.reader_stop.store(true, Ordering::SeqCst);
        for t in threads {
            let _ = t.join();
        }
    }
}

/// What a wait is for, and the events so far, formatted when it times out.
struct Seen<'a>(&'a str, &'a Mutex<Vec<Event>>);

impl std::fmt::Display for Seen<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {:?}", self.0, self.1.lock().unwrap())
    }
}

impl Drop for Activator {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn playing_systemd_idle_exit_and_reactivation_lose_nothing() {
    let fx = Fixtures::load();
    let mut sd = Activator::start("play-systemd", &["--idle-timeout", "1s", "--workers", "2"]);
    assert_eq!(sd.started(), 0, "started before any client came");

    // The first client starts the process and is answered; READY=1 arrives.
    assert_eq!(get(sd.addr, "/nix-cache-info").status, 200);
    assert_eq!(sd.started(), 1);
    sd.wait_for("READY=1", |s| s.count_notes("READY=1") == 1);

    // Idle: it exits 0 by itself, saying STOPPING=1.
    sd.wait_for("the idle exit", |s| s.exits().len() == 1);
    assert!(sd.exits()[0].success(), "{:?}", sd.exits());
    sd.wait_for("STOPPING=1", |s| s.count_notes("STOPPING=1") == 1);

    // The next client starts a new process, which answers it.
    assert_eq!(get(sd.addr, "/nix-cache-info").status, 200);
    assert_eq!(sd.started(), 2);

    // A request that outlasts the idle timeout is never cut: a 10 MB NAR
    // read slowly, for longer than the timeout.
    let big = fx.path("big-10M");
    let nar = Request::get(&format!("/nar/{}.nar", hash_part(big)));
    let (reply, mut s) = nar.open(sd.addr);
    assert_eq!(reply.status, 200);
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let slow_start = Instant::now();
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got += n;
        if slow_start.elapsed() < Duration::from_millis(1500) {
            thread::sleep(Duration::from_millis(100));
        }
    }
    let size = std::fs::metadata(big).unwrap().len();
    assert!(
        got as u64 > size && Some(got) == reply.content_length(),
        "NAR cut short: {got} bytes for a {size}-byte file"
    );

    // Clients arriving just as the idle timeout runs out, alone and in
    // pairs: every one is answered, by the old process or a new one. (The
    // sleeps time their arrivals around the 1 s timeout; they wait for
    // nothing.)
    for i in 0..16u64 {
        thread::sleep(Duration::from_millis(900 + (i % 5) * 50));
        if i % 3 == 0 {
            let addr = sd.addr;
            let other = thread::spawn(move || get(addr, "/nix-cache-info").status);
            assert_eq!(
                get(sd.addr, "/nix-cache-info").status,
                200,
                "client {i} lost"
            );
            assert_eq!(other.join().unwrap(), 200, "client {i}b lost");
        } else {
            assert_eq!(
                get(sd.addr, "/nix-cache-info").status,
                200,
                "client {i} lost"
            );
        }
    }

    // SIGTERM (what `systemctl stop` sends) is a clean exit too.
    sd.stop();
    let exits = sd.exits();
    assert_eq!(exits.len(), sd.started(), "{exits:?}");
    assert!(exits.iter().all(|st| st.success()), "{exits:?}");
    let (started, exited) = sd.generations();
    assert_eq!(
        started, exited,
        "each process exited before the next started"
    );
    assert_eq!(sd.count_notes("READY=1"), sd.started());
    assert!(
        sd.count_notes("WATCHDOG=1") >= sd.started(),
        "a watchdog ping per process"
    );
    eprintln!("{} activations", sd.started());
}
