//! systemd: inherited sockets (`LISTEN_FDS`) and sd-notify.
//!
//! Defensive by rule (`docs/style.md` §5): sockets are taken before any thread
//! exists (listenfd edits the environment) and made CLOEXEC; notification
//! failures are logged, never fatal; without `NOTIFY_SOCKET` nothing is sent.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::log;
use crate::server::Listener;

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
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        Notifier {
            watchdog: watchdog_interval(env, std::process::id()),
        }
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

impl crate::server::life::Manager for Notifier {
    fn status(&self, status: &str) {
        Notifier::status(self, status);
    }

    fn ping(&self) {
        Notifier::ping(self);
    }

    fn watchdog_period(&self) -> Option<Duration> {
        Notifier::watchdog_period(self)
    }
}

/// The watchdog interval, as sd_watchdog_enabled(3) reads it: a positive
/// `WATCHDOG_USEC`, and `WATCHDOG_PID`, when set, naming us (else it is meant
/// for another process). sd-notify's own helper also refuses an unset `WATCHDOG_PID`.
pub fn watchdog_interval(env: &dyn Fn(&str) -> Option<String>, pid: u32) -> Option<Duration> {
    let usec: u64 = env("WATCHDOG_USEC")?
        .trim()
        .parse()
        .ok()
        .filter(|&u| u > 0)?;
    match env("WATCHDOG_PID") {
        Some(p) if p.trim().parse::<u32>().ok() != Some(pid) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_settings() {
        let table: [(Option<&str>, Option<&str>, Option<u64>); 6] = [
            (None, None, None),
            (Some("30000000"), None, Some(30_000_000)),
            (Some("30000000"), Some("42"), Some(30_000_000)),
            (Some("30000000"), Some("43"), None),
            (Some("0"), None, None),
            (Some("soon"), None, None),
        ];
        for (usec, pid, want) in table {
            let env = |k: &str| match k {
                "WATCHDOG_USEC" => usec.map(str::to_owned),
                "WATCHDOG_PID" => pid.map(str::to_owned),
                _ => None,
            };
            assert_eq!(
                watchdog_interval(&env, 42),
                want.map(Duration::from_micros),
                "{usec:?} {pid:?}"
            );
        }
    }
}
