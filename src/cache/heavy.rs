//! A memory budget for the replies that hold memory for as long as their
//! body streams: every computed body (the engine keeps a chunk being
//! written and the next one read ahead: [`STREAM_BUFFERS`]), and on top a
//! zstd encoder (`--compression`) or a bzip2 decoder (a `.bz2` build log). A client that asks for one and then stops reading
//! holds it until the slow-reader rule cuts it (a minute by default):
//! measured before this budget, 1,024 such clients held 1,343 MiB with
//! zstd level 1, and 64 held 5,268 MiB at level 19.
//!
//! Each reply takes a [`Permit`] for its estimated size before it starts
//! and gives it back when its body is dropped; when the budget is spent,
//! the request gets `503 Server busy.` with `Retry-After: 1` (Nix retries
//! a 503), or, for a plain `.nar` a client merely allowed to be zstd-
//! encoded, the NAR itself. No queue: a waiting reply would hold a worker.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What all heavy replies may hold at once. With the README's other
/// bounds, the process stays under the units' `MemoryMax=`.
pub const BUDGET: u64 = 256 << 20;
/// What the engine holds of any computed body while it streams: the chunk
/// being written and the next one, 64 KiB each (`server/body.rs`).
pub const STREAM_BUFFERS: u64 = 128 << 10;
/// The estimate for a bzip2 decoder: a block of up to 900 kB, decoded with
/// libbzip2's fast algorithm (4 bytes a block byte), plus buffers.
pub const BZIP2_DECODER: u64 = 4 << 20;

/// The bytes held by heavy replies now, against [`BUDGET`].
pub struct Heavy {
    held: AtomicU64,
    budget: u64,
}

impl Heavy {
    pub fn new(budget: u64) -> Arc<Heavy> {
        Arc::new(Heavy {
            held: AtomicU64::new(0),
            budget,
        })
    }

    /// `bytes` of the budget, if they are left.
    pub fn take(self: &Arc<Self>, bytes: u64) -> Option<Permit> {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let next = held.checked_add(bytes).filter(|n| *n <= self.budget)?;
            match self
                .held
                .compare_exchange_weak(held, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(Permit {
                        heavy: self.clone(),
                        bytes,
                    })
                }
                Err(now) => held = now,
            }
        }
    }

    #[cfg(test)]
    fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

/// A share of the budget, given back when dropped.
pub struct Permit {
    heavy: Arc<Heavy>,
    bytes: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.heavy.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A body reader that holds its permit for as long as it lives.
pub struct Holding<R> {
    pub reader: R,
    pub _permit: Permit,
}

impl<R: Read> Read for Holding<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

/// The zstd parameters at `level` past which memory grows fastest, capped:
/// `(windowLog, chainLog, hashLog)` as zstd 1.5 picks them for a large or
/// unknown input, then at most 22 each (zstd's own choice for level 16).
/// Levels 17 to 19 would take 8 MiB windows and 64 MiB chain tables for a
/// few percent of ratio.
pub fn zstd_params(level: i32) -> (u32, u32, u32) {
    let (w, c, h) = match level {
        i32::MIN..=1 => (19, 12, 13),
        2 => (20, 15, 16),
        3 => (21, 16, 17),
        4 => (21, 18, 18),
        5 | 6 => (21, 18, 19),
        7 | 8 => (21, 19, 20),
        9 => (21, 20, 21),
        10 | 11 => (21, 21, 22),
        12 | 13 => (22, 21, 22),
        14..=16 => (22, 22, 22),
        _ => (23, 24, 22),
    };
    (w.min(22), c.min(22), h.min(22))
}

/// What a zstd encoder at `level` holds (capped as [`zstd_params`] says):
/// its window, twice (input and history), the chain and hash tables of
/// 4-byte entries, and the stream buffers.
pub fn zstd_encoder_bytes(level: i32) -> u64 {
    let (w, c, h) = zstd_params(level);
    2 * (1u64 << w) + 4 * (1u64 << c) + 4 * (1u64 << h) + (256 << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_given_back() {
        let heavy = Heavy::new(10);
        let a = heavy.take(6).unwrap();
        assert!(heavy.take(6).is_none());
        let b = heavy.take(4).unwrap();
        assert_eq!(heavy.held(), 10);
        drop(a);
        assert_eq!(heavy.held(), 4);
        drop(b);
        assert_eq!(heavy.held(), 0);
        assert!(heavy.take(11).is_none());
    }

    #[test]
    fn high_levels_are_capped() {
        assert_eq!(zstd_params(19), (22, 22, 22));
        assert_eq!(zstd_params(1), (19, 12, 13));
        assert!(zstd_encoder_bytes(19) < 64 << 20);
        assert!(zstd_encoder_bytes(1) < 2 << 20);
    }
}
