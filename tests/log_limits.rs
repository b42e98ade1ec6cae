//! Lines a client can cause at will are rate limited (issue 20): a flood of
//! malformed requests writes at most 10 lines a second of its kind, and one
//! line per 10 s (and one at exit) says how many more there were.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::binary::{tmpdir, wait_exit};
use common::http::send_raw;
use common::logs::{counted, read, start_on_free_port, wait_for};

/// A head with two `Host` lines: 400, and one `bad request from …` line.
fn bad_request(addr: SocketAddr) {
    let reply = send_raw(
        addr,
        b"GET /nix-cache-info HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    );
    assert!(
        reply.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_flood_of_bad_requests_writes_ten_lines_a_second_and_counts_the_rest() {
    let dir = tmpdir("log-limits");
    let error = dir.join("error.log");
    let started = Instant::now();
    let (mut server, addr) =
        start_on_free_port(&["--error-log", error.to_str().unwrap()], Stdio::inherit());

    // A flood, then the report the log thread writes 10 s after the first
    // line it held back, while the server runs.
    for _ in 0..300 {
        bad_request(addr);
    }
    let said = wait_for(&error, "similar lines suppressed");
    let report = said.lines().find(|l| l.contains("suppressed")).unwrap();
    assert!(report.contains("info: bad requests: "), "{report}");
    // Over 10 s (a moment more on a busy machine), never less.
    let secs: u64 = report
        .split_once("in the last ")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no interval in {report:?}"));
    assert!(secs >= 10, "{report}");

    // Another flood, cut short by SIGTERM: what it held back is counted in
    // the log before the process exits.
    for _ in 0..100 {
        bad_request(addr);
    }
    server.signal_term();
    let status = wait_exit(&mut server.child, Duration::from_secs(60)).expect("exits");
    assert!(status.success(), "{status}");
    let took = started.elapsed();

    let log = read(&error);
    let written = log.matches("bad request from 127.0.0.1:").count() as u64;
    let suppressed = counted(&log, "similar line");
    let reports = log.matches("similar line").count() as u64;
    assert_eq!(written + suppressed, 400, "every bad request: {log}");
    // At most 10 in each second the test took (its windows can straddle
    // one more), and one report per 10 s, plus the one at exit.
    let seconds = took.as_secs() + 1;
    assert!(
        written <= 10 * (seconds + 1),
        "{written} lines in {took:?}: {log}"
    );
    assert!(
        reports <= seconds / 10 + 2,
        "{reports} reports in {took:?}: {log}"
    );
    assert!(reports >= 2, "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(last.contains("Exiting after "), "{last}");
}
