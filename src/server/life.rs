//! The server's life after start-up, as the main thread supervises it: stop
//! on SIGTERM/SIGINT, exit when idle, ping the watchdog while every event
//! loop turns, and tell the service manager how things go.
//!
//! The idle exit never cuts a request: after `idle_timeout` with no
//! connection open, the loops stop accepting, and only if nothing was
//! accepted meanwhile does the process go; anything that arrives from then
//! on waits in systemd's socket for the next process. Nor does it cut work
//! the application does past its replies (pull-through's downloads and
//! imports, which go on when their client has gone): it waits until
//! [`Supervision::busy`] says none is left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::log;

use super::Server;

/// How often the main thread looks at signals, idleness and the loops.
pub const TICK: Duration = Duration::from_millis(100);
/// How often a changed count of connections and requests is reported.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Why the server stops.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// No connection for this long.
    Idle(Duration),
    /// SIGTERM or SIGINT.
    Signal,
}

/// The service manager, as the engine talks to it (systemd's sd-notify in
/// the product: `crate::systemd::Notifier`).
pub trait Manager {
    fn status(&self, status: &str);
    fn ping(&self);
    /// How often to ping, if the manager watches: half `WatchdogSec=`.
    fn watchdog_period(&self) -> Option<Duration>;
}

/// What supervising needs besides the server.
pub struct Supervision<'a> {
    pub idle_timeout: Option<Duration>,
    /// Set by the signal handlers.
    pub stop: &'a AtomicBool,
    pub manager: &'a dyn Manager,
    /// Named in every status line (which store `auto` settled on).
    pub describe: &'a str,
    /// Any other periodic work of the main thread, called every tick.
    pub chores: &'a mut dyn FnMut(Instant),
    /// Whether the application has work under way that no connection
    /// holds (an upstream download, an import): the idle exit waits.
    pub busy: &'a dyn Fn() -> bool,
}

/// Whether no connection has been open for `idle`.
fn server_idle(server: &Server, idle: Duration) -> bool {
    server.activity().idle_for().is_some_and(|d| d >= idle)
}

/// Supervises `server` until it should stop, and says why.
pub fn supervise(server: &mut Server, w: Supervision<'_>) -> Exit {
    let ping_every = w.manager.watchdog_period();
    let mut next_ping = Instant::now();
    let mut next_status = Instant::now() + STATUS_EVERY;
    let mut last_counts = server.activity().counts();
    let mut stalled = false;
    loop {
        if w.stop.load(Ordering::SeqCst) {
            return Exit::Signal;
        }
        let now = Instant::now();
        if let Some(every) = ping_every {
            if now >= next_ping {
                match server.health().stalled(every) {
                    None => {
                        w.manager.ping();
                        stalled = false;
                    }
                    Some((i, d)) if !stalled => {
                        // No ping: systemd restarts the service when the
                        // watchdog interval runs out.
                        log::error(&format!(
                            "event loop {i} has not turned for {} ms: no watchdog ping",
                            d.as_millis()
                        ));
                        stalled = true;
                    }
                    Some(_) => {}
                }
                next_ping = now + every;
            }
        }
        if let Some(idle) = w.idle_timeout {
            if server_idle(server, idle) && !(w.busy)() {
                // Stop taking connections, then look again: one accepted in
                // between is served, and we go on. Work of the application
                // starts only from a request, so none can begin unseen.
                server.stop_accepting();
                if server_idle(server, idle) && !(w.busy)() {
                    return Exit::Idle(idle);
                }
                server.resume_accepting();
            }
        }
        (w.chores)(now);
        if now >= next_status {
            let counts = server.activity().counts();
            if counts != last_counts {
                w.manager.status(&format!(
                    "Serving {}: {} open connection(s), {} requests answered so far",
                    w.describe, counts.0, counts.1
                ));
                last_counts = counts;
            }
            next_status = now + STATUS_EVERY;
        }
        thread::sleep(TICK);
    }
}
