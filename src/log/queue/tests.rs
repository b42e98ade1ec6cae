use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use super::*;

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nss-log-queue-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A queue and its log thread, writing to `error.log` and `access.log` in
/// a fresh directory. The thread outlives the test (it never returns).
fn running(tag: &str) -> (Arc<Queue>, PathBuf) {
    let dir = scratch(tag);
    let sinks = Sinks::open(
        false,
        Some(&dir.join("error.log")),
        Some(&dir.join("access.log")),
    )
    .unwrap();
    let queue = Arc::new(Queue::new());
    let writer = queue.clone();
    thread::spawn(move || writer.run(sinks));
    (queue, dir)
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Queues 100-byte diagnostics, `extra` more than fit; returns how many fit.
fn overfill(q: &Queue, extra: usize) -> usize {
    let fits = DIAG_BYTES / (100 + LINE_COST);
    for _ in 0..fits + extra {
        q.diag(Level::Info, "d".repeat(100));
    }
    fits
}

#[test]
fn a_full_queue_drops_and_counts_lines_then_takes_them_again() {
    let q = Queue::new();
    let fits = overfill(&q, 402);
    let access = "a".repeat(1000);
    let fits_access = ACCESS_BYTES / (1000 + LINE_COST);
    for _ in 0..fits_access + 7 {
        q.access(access.clone());
    }
    // Never dropped, whatever the queue holds.
    q.kept(Level::Error, "fatal".into());

    let (mut diag, mut acc) = (Vec::new(), Vec::new());
    let batch = q.take(&mut diag, &mut acc);
    assert_eq!(diag.len(), fits);
    assert_eq!(batch.kept, [(Level::Error, "fatal".to_owned())]);
    assert_eq!(acc.len(), fits_access);
    assert_eq!((batch.dropped_diag, batch.dropped_access), (402, 7));
    assert_eq!(
        about(&batch),
        [
            (
                Level::Warning,
                "402 diagnostic lines dropped: the log could not keep up".to_owned()
            ),
            (
                Level::Warning,
                "7 access log lines dropped: the log could not keep up".to_owned()
            ),
        ]
    );

    // Taken: room for as many again, and the counts start from zero.
    assert_eq!(overfill(&q, 0), fits);
    q.access(access.clone());
    let (mut diag, mut acc) = (Vec::new(), Vec::new());
    let batch = q.take(&mut diag, &mut acc);
    assert_eq!((diag.len(), acc.len()), (fits, 1));
    assert_eq!((batch.dropped_diag, batch.dropped_access), (0, 0));
    assert!(about(&batch).is_empty());
}

/// Once the process is exiting, what it says is kept however full the
/// queue, and comes after the count of what was dropped before.
#[test]
fn nothing_is_dropped_once_exiting() {
    let q = Queue::new();
    let fits = overfill(&q, 3);
    // The 11th in a second is held back.
    let admitted = (0..11)
        .filter(|_| q.admit(Kind::SlowReader, Level::Info))
        .count();
    assert_eq!(admitted, 10);
    q.exiting();
    q.diag(Level::Info, "Stopping".into());
    q.diag(Level::Info, "Exiting after 1.0s".into());
    let (mut diag, mut acc) = (Vec::new(), Vec::new());
    let batch = q.take(&mut diag, &mut acc);
    assert_eq!(diag.len(), fits);
    assert_eq!(batch.dropped_diag, 3);
    assert_eq!(
        batch.kept,
        [
            (Level::Info, "Stopping".to_owned()),
            (Level::Info, "Exiting after 1.0s".to_owned())
        ]
    );
    // Held-back lines are counted at once, not 10 s later (when the
    // process is gone), and before the kept lines.
    let said = about(&batch);
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(said[1]
        .1
        .starts_with("clients reading too slowly: 1 similar line"));
}

#[test]
fn flush_writes_every_line_in_order_and_counts_what_was_held_back() {
    let (q, dir) = running("flush");
    q.diag(Level::Info, "one".into());
    q.diag(Level::Warning, "two".into());
    for i in 0..25 {
        if q.admit(Kind::BadRequest, Level::Info) {
            q.diag(Level::Info, format!("bad {i}"));
        }
    }
    q.access("GET /a".into());
    q.access("GET /b".into());
    q.kept(Level::Error, "last words".into());
    assert!(q.flush(Duration::from_secs(30)));

    let bad: String = (0..10)
        .map(|i| format!("nix-serve: info: bad {i}\n"))
        .collect();
    assert_eq!(
        read(dir.join("error.log")),
        format!(
            "nix-serve: info: one\nnix-serve: warning: two\n{bad}\
             nix-serve: info: bad requests: 15 similar lines suppressed in the last 1 s \
             (at most 10 a second are logged)\n\
             nix-serve: error: last words\n"
        )
    );
    assert_eq!(read(dir.join("access.log")), "GET /a\nGET /b\n");
    // Nothing left: a second flush adds nothing.
    assert!(q.flush(Duration::from_secs(30)));
    assert_eq!(read(dir.join("access.log")), "GET /a\nGET /b\n");
}

#[test]
fn reopen_moves_later_lines_to_the_file_now_at_the_path() {
    let (q, dir) = running("reopen");
    q.access("before".into());
    assert!(q.flush(Duration::from_secs(30)));
    std::fs::rename(dir.join("access.log"), dir.join("access.log.1")).unwrap();
    std::fs::rename(dir.join("error.log"), dir.join("error.log.1")).unwrap();
    q.reopen();
    assert!(q.flush(Duration::from_secs(30)));
    q.access("after".into());
    assert!(q.flush(Duration::from_secs(30)));
    assert_eq!(read(dir.join("access.log.1")), "before\n");
    assert_eq!(read(dir.join("access.log")), "after\n");
    assert_eq!(
        read(dir.join("error.log")),
        "nix-serve: info: SIGHUP: log files reopened\n"
    );
}

/// A log thread that never catches up (here: none at all) costs the
/// flusher its limit, not forever, and a second flush nothing.
#[test]
fn flush_gives_up_after_its_limit_once() {
    let q = Queue::new();
    q.diag(Level::Info, "never written".into());
    assert!(!q.flush(Duration::from_millis(50)));
    let again = std::time::Instant::now();
    assert!(!q.flush(Duration::from_secs(60)));
    assert!(again.elapsed() < Duration::from_secs(60), "waited again");
}
