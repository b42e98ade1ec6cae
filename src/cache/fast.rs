//! What an event loop may answer by itself, in the turn it parsed a head:
//! a narinfo whose reply a worker filed and that is known valid now
//! (`narinfo/replies.rs`). Anything else, or any doubt, is `None`, and the
//! request goes to a worker as always.
//!
//! Each loop has its own: its own reading of the store's change signal
//! (a read-only SQLite connection that never waits), over the replies all
//! loops and workers share.

use std::sync::Arc;
use std::time::Instant;

use crate::server::app::{FastPath, Request, Response};
use crate::store::cache::{Look, Watch};
use crate::store::closure::Allowed;
use crate::store::daemon::ChangeSignal;

use super::narinfo::{self, Replies};
use super::routes::{self, Route};

pub struct NarinfoFastPath {
    replies: Arc<Replies>,
    watch: Watch,
    closure: Option<Arc<Allowed>>,
}

impl NarinfoFastPath {
    /// A loop's fast path over `replies` (which the workers file into), for
    /// a store that tells of its changes by `signal`. `closure`:
    /// `--serve-closure-of`.
    pub fn new(
        replies: Arc<Replies>,
        signal: ChangeSignal,
        closure: Option<Arc<Allowed>>,
    ) -> NarinfoFastPath {
        let watch = match signal {
            ChangeSignal::Database(db) => Watch::database(db),
            ChangeSignal::Every(period) => Watch::Every(period),
        };
        NarinfoFastPath {
            replies,
            watch,
            closure,
        }
    }

    /// The reply to `request`, exactly as a worker would make it, if the
    /// loop may send it now without asking the store.
    pub fn answer(&mut self, request: &Request) -> Option<Response> {
        if self.replies.max_age().is_some_and(|d| d.is_zero()) {
            return None;
        }
        let Ok(Route::NarInfo(hash)) = routes::parse(&request.method, &request.target) else {
            return None;
        };
        let changed = match self.watch.look() {
            Look::Same => false,
            Look::Changed => true,
            Look::Unknown => return None,
        };
        let closure = self.closure.as_ref().map(|a| a.current());
        let body = self.replies.get(&hash, changed, closure, Instant::now())?;
        Some(narinfo::reply_of(body))
    }
}

impl FastPath for NarinfoFastPath {
    fn answer(&mut self, request: &Request) -> Option<Response> {
        NarinfoFastPath::answer(self, request)
    }
}
