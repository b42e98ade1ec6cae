//! Metrics against the built binary and a real store (issue 12 part 1):
//! the counts after a known sequence of requests, counts carried across
//! activations through `--metrics-file`, a file a reader never sees half
//! written, and a corrupt or foreign file replaced with one warning.
//! Bounds are time-outs that keep a broken server from hanging the run.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::binary::{socket_activate, start_on_any_port, wait_exit, wait_log};
use common::http::{get, Request};
use common::{hash_part, ChrootStore, Fixtures, Scratch, ABSENT};
use nix_serve_sd::metrics::Metrics;

const LIMIT: Duration = Duration::from_secs(60);

/// The value of the sample line `series` (name and labels, as rendered).
fn value(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

fn read_file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn counts_after_a_known_sequence_of_requests() {
    let _fx = Fixtures::load();
    let store = ChrootStore::new("metrics-counts");
    let good = store.add("good.txt", b"served\n");
    let gone = store.add("gone.txt", b"soon gone\n");
    std::fs::remove_file(store.writable_file(&gone)).unwrap();
    let dir = Scratch::new("metrics-counts-file");
    let file = dir.join("metrics.prom");
    let file_arg = file.to_str().unwrap();
    let uri = store.uri();
    let (server, addr, log) = start_on_any_port(&[
        "--store",
        &uri,
        "--workers",
        "1",
        "--metrics-route",
        "--metrics-file",
        file_arg,
    ]);

    let sequence = [
        ("GET", "/nix-cache-info".to_owned(), 200),
        ("GET", format!("/{}.narinfo", hash_part(&good)), 200),
        ("HEAD", format!("/{}.narinfo", hash_part(&good)), 200),
        ("GET", format!("/{ABSENT}.narinfo"), 404),
        ("GET", "/foo.narinfo".to_owned(), 400),
        ("GET", format!("/nar/{}.nar", hash_part(&good)), 200),
        ("GET", format!("/nar/{}.nar", hash_part(&gone)), 500),
        ("DELETE", "/nix-cache-info".to_owned(), 405),
        ("GET", "/index.html".to_owned(), 404),
    ];
    for (method, target, status) in &sequence {
        assert_eq!(
            Request::new(method, target).send(addr).status,
            *status,
            "{method} {target}"
        );
    }
    let first = get(addr, "/metrics");
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    // Each reply is counted before its connection closes: the second
    // scrape sees the first.
    let text = get(addr, "/metrics").text();
    let r = |route: &str, status: u16| {
        value(
            &text,
            &format!("nix_serve_requests_total{{route=\"{route}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(r("nix-cache-info", 200), Some(1), "{text}");
    assert_eq!(r("narinfo", 200), Some(2), "{text}");
    assert_eq!(r("narinfo", 404), Some(1), "{text}");
    assert_eq!(r("narinfo", 400), Some(1), "{text}");
    assert_eq!(r("nar", 200), Some(1), "{text}");
    assert_eq!(r("nar", 500), Some(1), "{text}");
    assert_eq!(r("nix-cache-info", 405), Some(1), "{text}");
    assert_eq!(r("other", 404), Some(1), "{text}");
    assert_eq!(r("metrics", 200), Some(1), "{text}");
    let sent = |route: &str| {
        value(
            &text,
            &format!("nix_serve_sent_bytes_total{{route=\"{route}\"}}"),
        )
    };
    assert!(sent("nar").unwrap() > 0, "{text}");
    assert!(sent("narinfo").unwrap() > 0, "{text}");
    // Eleven connections, this scrape's included.
    assert_eq!(
        value(&text, "nix_serve_connections_accepted_total"),
        Some(11)
    );
    assert_eq!(value(&text, "nix_serve_connections_refused_total"), Some(0));
    assert_eq!(value(&text, "nix_serve_activations_total"), Some(1));
    assert_eq!(value(&text, "nix_serve_idle_exits_total"), Some(0));
    // Only the whole NAR that was sent (GET, 200) is a NAR stream.
    assert_eq!(value(&text, "nix_serve_nar_stream_seconds_count"), Some(1));
    // Every request that reached the store: cache info, two narinfos, two
    // NARs (not the 400 and the 405s, refused by the route table, nor the
    // HEAD after the GET of the same narinfo, which the event loop answered
    // from the reply the worker had filed).
    assert_eq!(
        value(&text, "nix_serve_store_lookup_seconds_count"),
        Some(5)
    );
    assert!(value(&text, "nix_serve_store_connections_opened_total").unwrap() >= 1);

    // SIGTERM: the file gets the final counts, the log one line.
    assert!(server.terminate().success());
    let saved = read_file(&file);
    assert_eq!(value(&saved, "nix_serve_activations_total"), Some(1));
    let metrics_200 = "nix_serve_requests_total{route=\"metrics\",status=\"200\"}";
    assert_eq!(value(&saved, metrics_200), Some(2), "{saved}");
    let log = wait_log(&log, "exit line", |t| t.contains("Exiting after"));
    assert!(log.contains(" 11 requests answered, "), "{log}");
    assert!(!log.contains("warning"), "{log}");
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn without_metrics_route_there_is_no_metrics_route() {
    let _fx = Fixtures::load();
    let (server, addr, _) = start_on_any_port(&[]);
    assert_eq!(get(addr, "/metrics").status, 404);
    assert!(server.terminate().success());
}

/// `systemd-socket-activate` on a Unix socket, running the binary with
/// `--idle-timeout 1s` and `--metrics-file file` until its idle exit,
/// after `requests` GETs of /nix-cache-info.
fn one_activation(sock: &Path, file: &Path, requests: usize) {
    let _ = std::fs::remove_file(sock);
    let listen = [sock.to_str().unwrap().to_owned()];
    let file = file.to_str().unwrap();
    let mut child = socket_activate(&listen, &["--metrics-file", file])
        .expect("systemd-socket-activate listens on a fresh socket path");
    for _ in 0..requests {
        let r = Request::get("/nix-cache-info").send_unix(sock);
        assert_eq!(r.status, 200);
    }
    let status = wait_exit(&mut child.child, LIMIT).expect("exits once idle");
    assert!(status.success(), "idle exit is status 0: {status}");
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn counts_carry_across_two_socket_activations() {
    let _fx = Fixtures::load();
    let dir = Scratch::new("metrics-activations");
    let sock = dir.join("http.sock");
    let file = dir.join("metrics.prom");
    one_activation(&sock, &file, 2);
    let after_one = read_file(&file);
    assert_eq!(value(&after_one, "nix_serve_activations_total"), Some(1));
    assert_eq!(value(&after_one, "nix_serve_idle_exits_total"), Some(1));
    one_activation(&sock, &file, 3);
    let text = read_file(&file);
    assert_eq!(
        value(&text, "nix_serve_activations_total"),
        Some(2),
        "{text}"
    );
    assert_eq!(
        value(&text, "nix_serve_idle_exits_total"),
        Some(2),
        "{text}"
    );
    let cache_info = "nix_serve_requests_total{route=\"nix-cache-info\",status=\"200\"}";
    assert_eq!(value(&text, cache_info), Some(5), "{text}");
    assert_eq!(
        value(&text, "nix_serve_connections_accepted_total"),
        Some(5)
    );
}

/// The file is rewritten every 100 ms while clients keep the counts
/// moving; a reader in a loop sees old versions and new ones, never a part
/// of one: every read is a whole file that reads back.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_concurrent_reader_never_sees_a_partial_file() {
    let _fx = Fixtures::load();
    let dir = Scratch::new("metrics-reader");
    let file = dir.join("metrics.prom");
    let file_arg = file.to_str().unwrap();
    let (server, addr, _) =
        start_on_any_port(&["--metrics-file", file_arg, "--metrics-interval", "100ms"]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                assert_eq!(get(addr, "/nix-cache-info").status, 200);
            }
        })
    };
    let start = Instant::now();
    let mut versions = std::collections::BTreeSet::new();
    let mut reads = 0;
    while versions.len() < 20 {
        assert!(
            start.elapsed() < LIMIT,
            "only {} versions in {reads} reads",
            versions.len()
        );
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            // Before the first write.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && versions.is_empty() => continue,
            Err(e) => panic!("{}: {e}", file.display()),
        };
        let (_, error) = Metrics::resume(&file);
        assert!(error.is_none(), "read {reads}: {error:?}");
        assert!(text.ends_with("# end of nix-serve-sd metrics\n"), "{text}");
        versions.insert(text);
        reads += 1;
    }
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    assert!(server.terminate().success());
}

/// What `--metrics-file` held before the server started: each is replaced
/// with one warning, the server starts and counts from zero.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn a_corrupt_or_foreign_file_is_replaced_with_a_warning() {
    let _fx = Fixtures::load();
    let dir = Scratch::new("metrics-replaced");
    let cases: [(&str, &[u8]); 4] = [
        ("foreign", b"node_load1 0.5\n"),
        ("binary", b"\x7fELF\x02\x01\x01\0\0\0\0"),
        (
            "corrupt",
            b"# nix-serve-sd metrics 1\nnix_serve_activations_total lots\n",
        ),
        (
            "cut short",
            b"# nix-serve-sd metrics 1\nnix_serve_activations_total 41\n",
        ),
    ];
    for (what, contents) in cases {
        let file = dir.join("metrics.prom");
        std::fs::write(&file, contents).unwrap();
        let file_arg = file.to_str().unwrap();
        let (server, addr, log) = start_on_any_port(&["--metrics-file", file_arg]);
        assert_eq!(get(addr, "/nix-cache-info").status, 200, "{what}");
        assert!(server.terminate().success(), "{what}");
        let log = wait_log(&log, "exit line", |t| t.contains("Exiting after"));
        let warnings = log.matches("--metrics-file").count();
        assert_eq!(warnings, 1, "{what}: {log}");
        assert!(log.contains("replaced"), "{what}: {log}");
        let (_, error) = Metrics::resume(&file);
        assert!(error.is_none(), "{what}: {error:?}");
        let text = read_file(&file);
        assert_eq!(
            value(&text, "nix_serve_activations_total"),
            Some(1),
            "{what}"
        );
    }
}
