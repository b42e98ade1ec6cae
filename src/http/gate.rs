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

use crate::auth::{Auth, Denied, Known, Verdict, REALM};
use crate::log;

use super::request::Head;
use super::response::Response;
use super::routes;

/// Who may see what, once the gate let a request through.
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    /// A user whose credentials verified: the whole store.
    User(Arc<str>),
    /// No credentials where none are needed (`/nix-cache-info`, or the
    /// closure of `--serve-closure-of`).
    Anonymous,
}

/// Why a request ends at the gate.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No credentials where they are needed, or credentials that did not
    /// verify: 401.
    Unauthorized,
    /// Too many verifications at once: 503.
    Busy,
}

impl Refused {
    /// The reply sent instead of the route's.
    pub fn response(&self) -> Response {
        match self {
            // RFC 7235 §3.1: a 401 carries the challenge. `no-store` (as
            // every error here) keeps a proxy in front from serving it to
            // the next client.
            Refused::Unauthorized => Response::text(401, "Unauthorized.\n")
                .with_header("WWW-Authenticate", format!("Basic realm=\"{REALM}\"")),
            Refused::Busy => {
                Response::text(503, "Server busy.\n").with_header("Retry-After", "1".to_owned())
            }
        }
    }
}

/// The gate for `head`. `closure`: whether `--serve-closure-of` serves
/// anonymous clients.
pub fn check(auth: &Auth, head: &Head, closure: bool) -> Result<Pass, Refused> {
    let value = head.authorization.as_ref().map(|a| a.as_bytes());
    if routes::label(&head.target) == "nix-cache-info" {
        // No bcrypt for a public route; a user already known is named.
        return Ok(match auth.known(value) {
            Known::User(user) => Pass::User(user),
            Known::Anonymous | Known::Unknown => Pass::Anonymous,
        });
    }
    match auth.check(value) {
        Verdict::User(user) => Ok(Pass::User(user)),
        Verdict::Anonymous if closure => Ok(Pass::Anonymous),
        Verdict::Anonymous => Err(Refused::Unauthorized),
        Verdict::Denied(why) => {
            let (method, target) = (head.method.as_str(), log::escape(&head.target));
            log::info(&format!(
                "{method} {target}: Basic credentials refused: {}",
                describe(&why)
            ));
            Err(Refused::Unauthorized)
        }
        Verdict::Busy => {
            log::warn("too many Basic credentials being verified at once: 503");
            Err(Refused::Busy)
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
