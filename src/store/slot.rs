//! One worker's store connection: made on first use, kept while it is in
//! step, dropped after a failure that leaves its state unknown
//! ([`StoreError::poisons_connection`]) and made again on the next request.
//! The only place that decides when a store connection is dropped.

use std::sync::Arc;

use crate::metrics::Metrics;

use super::{Store, StoreError};

/// What makes store connections: the resolved `--store` ([`super::Opener`]),
/// or a test's wrapper around it that counts or refuses connections.
pub trait OpenStore: Send + Sync {
    fn open(&self) -> Result<Box<dyn Store>, StoreError>;
}

/// Counts in `metrics` every store connection `inner` opens: a number
/// rising faster than one per worker and activation is reconnects.
pub struct CountingOpener {
    pub inner: Arc<dyn OpenStore>,
    pub metrics: Arc<Metrics>,
}

impl OpenStore for CountingOpener {
    fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        let conn = self.inner.open()?;
        self.metrics.store_connection_opened();
        Ok(conn)
    }
}

/// A worker's own connection; no lock on the hot path.
pub struct StoreSlot {
    open: Arc<dyn OpenStore>,
    conn: Option<Box<dyn Store>>,
}

impl StoreSlot {
    /// A slot that opens its connection on first use, or starts with `conn`.
    pub fn new(open: Arc<dyn OpenStore>, conn: Option<Box<dyn Store>>) -> Self {
        StoreSlot { open, conn }
    }

    /// The connection, opened now if there is none.
    pub fn get(&mut self) -> Result<&mut dyn Store, StoreError> {
        if self.conn.is_none() {
            self.conn = Some(self.open.open()?);
        }
        Ok(self.conn.as_deref_mut().expect("just opened"))
    }

    /// After a request failed with `e`: drops the connection if `e` leaves
    /// it out of step.
    pub fn failed(&mut self, e: &StoreError) {
        if e.poisons_connection() {
            self.reset();
        }
    }

    /// Drops the connection; the next request opens a new one.
    pub fn reset(&mut self) {
        self.conn = None;
    }
}
