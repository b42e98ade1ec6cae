//! systemd: inherited sockets (`LISTEN_FDS`) and sd-notify.
//!
//! Defensive by rule (`style.md` 5): sockets are taken before any thread
//! exists (listenfd edits the environment) and made CLOEXEC; notification
//! failures are logged, never fatal; without `NOTIFY_SOCKET` nothing is sent.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::http::server::Listener;
use crate::log;

/// The sockets systemd passed, TCP (v4 or v6) and Unix stream, in order.
/// `Ok(empty)` when not socket-activated.
pub fn take_inherited() -> Result<Vec<Listener>, String> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = Vec::new();
    for i in 0..fds.len() {
        let fd = 3 + i;
        // listenfd validates the socket's family and type and sets CLOEXEC.
        let listener = match fds.take_tcp_listener(i) {
            Ok(Some(l)) => Listener::Tcp(l),
            Ok(None) => continue,
            Err(_) => match fds.take_unix_listener(i) {
                Ok(Some(l)) => Listener::Unix(l),
                Ok(None) => continue,
                Err(e) => {
                    return Err(format!(
                        "inherited fd {fd} is not a TCP or Unix stream listening socket: {e}"
                    ))
                }
            },
        };
        out.push(listener);
    }
    Ok(out)
}

/// Sends notifications to the service manager, if there is one.
pub struct Notifier {
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `WATCHDOG_USEC`/`WATCHDOG_PID`; keeps `NOTIFY_SOCKET` in the
    /// environment (nothing we start needs it, and sd-notify reads it per call).
    pub fn from_env() -> Self {
        let mut usec = 0u64;
        let watchdog =
            sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec));
        Notifier { watchdog }
    }

    fn send(&self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(false, states) {
            log::warn(&format!("sd_notify: {e}"));
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// Half the watchdog interval, as sd_watchdog_enabled(3) advises.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    pub fn ping(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}
