//! `--htpasswd` before a route's handler, on a store worker (bcrypt never
//! runs on the event loop): who is asking, or the reply that ends the
//! request here.
//!
//! - `/nix-cache-info` is public: a client learns that this is a cache, and
//!   nothing of the store, without credentials; no bcrypt runs for it.
//! - Credentials that verify: the whole store, whatever
//!   `--serve-closure-of` says.
//! - No `Authorization` header: with `--serve-closure-of`, the closure, as
//!   without `--htpasswd`; without it, 401.
//! - Credentials that do not verify, for whatever reason (malformed, unknown
//!   user, wrong password): 401, the same bytes each time, so that the
//!   reply does not tell which (the time does not either: `crate::auth`).
//! - Too many verifications at once: 503, try again in a second.

use std::sync::Arc;

use crate::auth::{Auth, Denied, Known, Verdict};
use crate::log;
use crate::server::app::Request;

use super::response::HandlerError;
use super::routes::{self, Route};

/// Who may see what, once the gate let a request through.
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    /// A user whose credentials verified: the whole store.
    User(Arc<str>),
    /// No credentials where none are needed (`/nix-cache-info`, or the
    /// closure of `--serve-closure-of`).
    Anonymous,
}

/// The gate for `request`. `closure`: whether `--serve-closure-of` serves
/// anonymous clients.
pub fn check(auth: &Auth, request: &Request, closure: bool) -> Result<Pass, HandlerError> {
    let value = request.authorization.as_ref().map(|a| a.as_bytes());
    if routes::parse(&request.method, &request.target) == Ok(Route::CacheInfo) {
        // No bcrypt for a public route; a user already known is named.
        return Ok(match auth.known(value) {
            Known::User(user) => Pass::User(user),
            Known::Anonymous | Known::Unknown => Pass::Anonymous,
        });
    }
    match auth.check(value) {
        Verdict::User(user) => Ok(Pass::User(user)),
        Verdict::Anonymous if closure => Ok(Pass::Anonymous),
        Verdict::Anonymous => Err(HandlerError::Unauthorized),
        Verdict::Denied(why) => {
            let (method, target) = (request.method.as_str(), log::escape(&request.target));
            log::info(&format!(
                "{method} {target}: Basic credentials refused: {}",
                describe(&why)
            ));
            Err(HandlerError::Unauthorized)
        }
        Verdict::Busy => {
            log::warn("too many Basic credentials being verified at once: 503");
            Err(HandlerError::Busy)
        }
    }
}

fn describe(why: &Denied) -> String {
    match why {
        Denied::Malformed => "not Basic credentials".to_owned(),
        Denied::NoSuchUser(user) => format!("no user \"{}\"", log::escape(user)),
        Denied::WrongPassword(user) => {
            format!("wrong password for user \"{}\"", log::escape(user))
        }
    }
}
