//! What an event loop may answer by itself, in the turn it parsed a head:
//! a narinfo whose reply a worker filed and that is known valid now
//! (`narinfo/shared.rs`). Anything else, or any doubt, is `None`, and the
//! request goes to a worker as always.
//!
//! Each loop has its own: its own reading of the store's change signal
//! (a read-only SQLite connection that never waits), over the replies all
//! loops and workers share.
//!
//! With `--htpasswd`, only for a request the loop knows may see the reply
//! without bcrypt: credentials verified before, or, with
//! `--serve-closure-of`, none (the replies filed are then the closure's,
//! which users do not see: their requests go to a worker).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::{Auth, Known};
use crate::server::app::{FastPath, Request, Response};
use crate::store::closure::Allowed;
use crate::store::daemon::ChangeSignal;
use crate::store::sqlite::{ChangeWatch, Look};

use super::narinfo::{self, SharedNarinfos};
use super::response;
use super::routes::{self, Route};

pub struct NarinfoFastPath {
    replies: Arc<SharedNarinfos>,
    /// `None`: no database to read, so nothing to look at; the replies
    /// then age out instead (`SharedNarinfos::max_age`).
    watch: Option<ChangeWatch>,
    closure: Option<Arc<Allowed>>,
    auth: Option<Arc<Auth>>,
}

impl NarinfoFastPath {
    /// A loop's fast path over `replies` (which the workers file into), for
    /// a store that tells of its changes by `signal`. `closure`:
    /// `--serve-closure-of`.
    pub fn new(
        replies: Arc<SharedNarinfos>,
        signal: ChangeSignal,
        closure: Option<Arc<Allowed>>,
    ) -> NarinfoFastPath {
        let watch = match signal {
            // The loop must never wait: a lock held by someone else is
            // `Unknown` at once, and the request goes to a worker.
            ChangeSignal::Database(db) => Some(ChangeWatch::new(db, Duration::ZERO)),
            ChangeSignal::Every(_) => None,
        };
        NarinfoFastPath {
            replies,
            watch,
            closure,
            auth: None,
        }
    }

    /// Answers only requests that `--htpasswd`'s `auth` lets through
    /// without bcrypt.
    pub fn with_auth(mut self, auth: Option<Arc<Auth>>) -> Self {
        self.auth = auth;
        self
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
        let user = match &self.auth {
            None => None,
            Some(auth) => {
                let value = request.authorization.as_ref().map(|a| a.as_bytes());
                match (auth.known(value), &self.closure) {
                    (Known::User(user), None) => Some(user),
                    (Known::Anonymous, Some(_)) => None,
                    _ => return None,
                }
            }
        };
        let changed = match self.look() {
            Look::Same => false,
            Look::Changed => true,
            Look::Unknown => return None,
        };
        let closure = self.closure.as_ref().map(|a| a.current());
        let body = self.replies.get(&hash, changed, closure, Instant::now())?;
        Some(response::for_user(narinfo::reply_of(body), user))
    }

    fn look(&mut self) -> Look {
        self.watch.as_mut().map_or(Look::Same, ChangeWatch::look)
    }
}

impl FastPath for NarinfoFastPath {
    fn answer(&mut self, request: &Request) -> Option<Response> {
        NarinfoFastPath::answer(self, request)
    }

    /// The loop's first look at the change signal, which cannot rule out a
    /// change before it and so starts a new epoch: here, before the loop
    /// takes a request, rather than at its first narinfo, when it would
    /// forget the replies the other loops' workers had filed by then.
    fn start(&mut self) {
        if self.look() == Look::Changed {
            self.replies
                .first_look(self.closure.as_ref().map(|a| a.current()));
        }
    }
}
