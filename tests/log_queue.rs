//! Logging never delays a request (issue 20): a log that takes nothing (a
//! FIFO nobody reads) stalls the log thread alone, while the server answers
//! as before; lines that do not fit in the queue are dropped and counted,
//! and the count is in the log once it drains. And what is logged just
//! before the process exits (the exit summary) is always written.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use common::binary::{tmpdir, wait_exit};
use common::http::get;
use common::logs::{counted, drain, read, start_on_free_port, unread_fifo, wait_for};
use common::{hash_part, wait_until, ChrootStore, Fixtures};

/// What a long query adds to each request: every line the server logs
/// about it is about 4 KiB, so the pipe (64 KiB) and the log's queues fill
/// after a few thousand requests at most.
fn padding() -> String {
    "x".repeat(3900)
}

/// The lines of `buf` that contain `needle`.
fn lines_with(buf: &Mutex<Vec<u8>>, needle: &str) -> usize {
    let text = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    text.lines().filter(|l| l.contains(needle)).count()
}

fn text(buf: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_stalled_access_log_delays_no_request_and_counts_what_it_dropped() {
    let dir = tmpdir("log-stalled-access");
    let (fifo, error) = (dir.join("access.fifo"), dir.join("error.log"));
    let pipe = unread_fifo(&fifo);
    let (server, addr) = start_on_free_port(
        &[
            "--access-log",
            fifo.to_str().unwrap(),
            "--error-log",
            error.to_str().unwrap(),
        ],
        Stdio::inherit(),
    );

    // 3,000 lines of 4 KiB: more than the pipe and the 8 MiB queue hold
    // together. Every request is answered (each `get` waits at most 60 s)
    // while the log takes nothing.
    let pad = padding();
    thread::scope(|s| {
        for t in 0..4 {
            let pad = &pad;
            s.spawn(move || {
                for i in 0..750 {
                    let r = get(addr, &format!("/nix-cache-info?{t}-{i}-{pad}"));
                    assert_eq!(r.status, 200);
                }
            });
        }
    });
    assert_eq!(get(addr, "/nix-cache-info?last").status, 200);
    let sent = 3001;

    // Once someone reads the FIFO, the log thread catches up and says how
    // many lines it could not keep; those and the lines written are all.
    let got = drain(pipe);
    let said = wait_for(&error, "access log line");
    let dropped = counted(&said, "access log line");
    assert!(
        dropped > 0,
        "nothing dropped: the log never stalled? {said}"
    );
    wait_until(
        "every access line written or counted",
        Duration::from_secs(30),
        || lines_with(&got, "GET /nix-cache-info") as u64 + dropped >= sent,
    );
    assert_eq!(
        lines_with(&got, "GET /nix-cache-info") as u64 + dropped,
        sent,
        "written + dropped"
    );
    // The last request came after the drops: its line was kept.
    assert!(text(&got).contains("GET /nix-cache-info?last "));
    assert!(server.terminate().success());
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_stalled_error_log_delays_no_request_and_counts_what_it_dropped() {
    let _fx = Fixtures::load();
    // A path whose files are gone: each request for its NAR is a 500 and
    // an error line (a store error: 100 a second pass the rate limit).
    let store = ChrootStore::new("log-stalled-error");
    let gone = store.add("gone.txt", b"soon gone\n");
    std::fs::remove_file(store.writable_file(&gone)).unwrap();
    let hash = hash_part(&gone);
    let dir = tmpdir("log-stalled-error");
    let fifo = dir.join("error.fifo");
    let pipe = unread_fifo(&fifo);
    let (server, addr) = start_on_free_port(
        &[
            "--store",
            &store.uri(),
            "--error-log",
            fifo.to_str().unwrap(),
        ],
        Stdio::inherit(),
    );

    // 200 error lines of 4 KiB, more than the pipe and the 256 KiB queue
    // hold together, at a pace the rate limit lets through whole (fewer
    // than 100 a second), so that each is either written or dropped.
    let pad = padding();
    let failures = 200;
    for i in 0..failures {
        let r = get(addr, &format!("/nar/{hash}.nar?{i}-{pad}"));
        assert_eq!(r.status, 500, "{}", r.text());
        thread::sleep(Duration::from_millis(12));
    }
    // The log is stalled for good; other requests are answered as ever.
    assert_eq!(get(addr, "/nix-cache-info").status, 200);
    assert_eq!(get(addr, &format!("/{hash}.narinfo")).status, 200);

    // Told to stop with the log still stalled, the server waits (at most
    // 2 s) for its log thread to write what it holds, the exit line last.
    // The FIFO is read only a moment after the signal: the main thread
    // (which looks at signals every 100 ms) has then logged its last line,
    // and a process that did not wait would be gone with it unwritten.
    // A sleep, not a wait: that last line sits in the process's own queue,
    // and nothing outside shows it there until the FIFO is read; 300 ms is
    // three of the main thread's looks, and well within the 2 s it waits.
    let mut server = server;
    server.signal_term();
    thread::sleep(Duration::from_millis(300));
    let got = drain(pipe);
    let status = wait_exit(&mut server.child, Duration::from_secs(30)).expect("exits");
    assert!(status.success(), "{status}");
    wait_until(
        "the exit line through the FIFO",
        Duration::from_secs(30),
        || text(&got).contains("Exiting after "),
    );
    let log = text(&got);
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("nix-serve: info: Exiting after "),
        "not the exit line last: {last}"
    );
    // Each error line was written, or counted as dropped once the queue
    // had room again.
    let dropped = counted(&log, "diagnostic line");
    assert!(dropped > 0, "nothing dropped: the log never stalled?");
    let written = lines_with(&got, &format!("GET /nar/{hash}.nar?")) as u64;
    assert_eq!(written + dropped, failures, "written + dropped");
}

/// The exit summary is the last thing the process logs, just before it
/// returns: the log thread must have written it by then.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn the_exit_line_is_logged_after_sigterm() {
    let (mut server, addr) = start_on_free_port(&[], Stdio::piped());
    let mut stderr = server.child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });
    assert_eq!(get(addr, "/nix-cache-info").status, 200);
    assert!(server.terminate().success());
    let log = reader.join().unwrap();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("nix-serve: info: Exiting after ")
            && last.contains(": 1 requests answered"),
        "not the exit line last: {log}"
    );
    assert!(
        log.contains("Stopping: finishing requests in flight"),
        "{log}"
    );
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn the_exit_line_is_logged_after_an_idle_exit() {
    let dir = tmpdir("log-idle-exit");
    let error = dir.join("error.log");
    let (mut server, addr) = start_on_free_port(
        &[
            "--idle-timeout",
            "1s",
            "--error-log",
            error.to_str().unwrap(),
        ],
        Stdio::inherit(),
    );
    assert_eq!(get(addr, "/nix-cache-info").status, 200);
    let status = wait_exit(&mut server.child, Duration::from_secs(30)).expect("an idle exit");
    assert!(status.success(), "{status}");
    let log = read(&error);
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("nix-serve: info: Exiting after ")
            && last.contains(": 1 requests answered"),
        "not the exit line last: {log}"
    );
    assert!(log.contains("No connection for 1s, exiting"), "{log}");
}
