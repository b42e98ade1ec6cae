//! Whether the engine is alive, not just the process: each event loop
//! marks every turn here, and the watchdog ping (`life.rs`) goes out only
//! while every loop has turned recently. A loop that hangs (a bug, a call
//! that should never block and did) then stops the pings, and systemd
//! restarts the service after `WatchdogSec=`; its socket keeps the clients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Health {
    epoch: Instant,
    /// Per loop: its last turn, in ms since `epoch`.
    beats: Vec<AtomicU64>,
}

impl Health {
    pub fn new(loops: usize) -> Health {
        Health {
            epoch: Instant::now(),
            beats: (0..loops).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Loop `i` turned now.
    pub fn beat(&self, i: usize) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        if let Some(b) = self.beats.get(i) {
            b.store(ms, Ordering::Relaxed);
        }
    }

    /// The loop that has gone longest without a turn, if that is longer
    /// than `within`: (its index, how long).
    pub fn stalled(&self, within: Duration) -> Option<(usize, Duration)> {
        let now = self.epoch.elapsed();
        self.beats
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let at = Duration::from_millis(b.load(Ordering::Relaxed));
                (i, now.saturating_sub(at))
            })
            .max_by_key(|(_, d)| *d)
            .filter(|(_, d)| *d > within)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_turning_is_seen() {
        let h = Health::new(2);
        h.beat(0);
        h.beat(1);
        assert_eq!(h.stalled(Duration::from_secs(5)), None);
        std::thread::sleep(Duration::from_millis(30));
        h.beat(0);
        let (i, d) = h.stalled(Duration::from_millis(20)).unwrap();
        assert_eq!(i, 1);
        assert!(d >= Duration::from_millis(20));
    }
}
