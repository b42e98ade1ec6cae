//! What the event loop may answer by itself, in the turn it parsed a head:
//! a narinfo whose reply a worker filed and that is known valid now
//! (`narinfo/replies.rs`). Anything else, or any doubt, is `None`, and the
//! request goes to a worker as always; the loop learns nothing of routes.
//!
//! With `--htpasswd`, only for a request the loop knows may see the reply
//! without bcrypt: credentials verified before, or, with
//! `--serve-closure-of`, none (the replies filed are then the closure's,
//! which users do not see: their requests go to a worker).

use std::sync::Arc;
use std::time::Instant;

use crate::auth::{Auth, Known};
use crate::store::cache::{Look, Watch};
use crate::store::closure::Allowed;
use crate::store::daemon::ChangeSignal;

use super::narinfo::{self, Replies};
use super::request::Head;
use super::response::Response;
use super::routes::{self, Route};

/// The loop's side of the shared narinfo replies: its own reading of the
/// store's change signal, and the closure the workers filter by.
pub struct FastPath {
    replies: Arc<Replies>,
    watch: Watch,
    closure: Option<Arc<Allowed>>,
    auth: Option<Arc<Auth>>,
}

impl FastPath {
    /// The loop's fast path for a store that tells of its changes by
    /// `signal`, and the replies the workers file for it
    /// ([`super::Worker::with_replies`]). `closure`: `--serve-closure-of`.
    pub fn new(signal: ChangeSignal, closure: Option<Arc<Allowed>>) -> (FastPath, Arc<Replies>) {
        let watch = match signal {
            ChangeSignal::Database(db) => Watch::database(db),
            ChangeSignal::Every(period) => Watch::Every(period),
        };
        let replies = Arc::new(Replies::new(watch.max_age()));
        let fast = FastPath {
            replies: replies.clone(),
            watch,
            closure,
            auth: None,
        };
        (fast, replies)
    }

    /// Answers only requests that `--htpasswd`'s `auth` lets through
    /// without bcrypt.
    pub fn with_auth(mut self, auth: Arc<Auth>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The reply to `head`, exactly as a worker would make it, if the loop
    /// may send it now without asking the store.
    pub fn answer(&mut self, head: &Head) -> Option<Response> {
        if self.replies.max_age().is_some_and(|d| d.is_zero()) {
            return None;
        }
        let Ok(Route::NarInfo(hash)) = routes::parse(&head.method, &head.target) else {
            return None;
        };
        let user = match &self.auth {
            None => None,
            Some(auth) => {
                let value = head.authorization.as_ref().map(|a| a.as_bytes());
                match (auth.known(value), &self.closure) {
                    (Known::User(user), None) => Some(user),
                    (Known::Anonymous, Some(_)) => None,
                    _ => return None,
                }
            }
        };
        let changed = match self.watch.look() {
            Look::Same => false,
            Look::Changed => true,
            Look::Unknown => return None,
        };
        let closure = self.closure.as_ref().map(|a| a.current());
        let body = self.replies.get(&hash, changed, closure, Instant::now())?;
        Some(narinfo::reply_of(body).with_user(user))
    }
}
