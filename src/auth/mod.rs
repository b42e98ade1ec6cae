//! `--htpasswd`: HTTP Basic authentication (RFC 7617) against an htpasswd
//! file of bcrypt entries, read once at start-up.
//!
//! A Nix client sends credentials from its `netrc-file` (nix.conf); curl,
//! under it, sends them with every request without waiting for a 401.
//! What a request gets ([`Verdict`]) comes in two steps:
//!
//! - [`Auth::known`], cheap enough for the event loop: no header, or a
//!   header verified before (a SHA-256 and a map look-up);
//! - [`Auth::check`], on a store worker, never on the loop: the same, then
//!   bcrypt for a header not seen verified ([`verify`] bounds how many run
//!   at once). An unknown user is checked against a dummy hash of the
//!   file's cost, so that the reply comes after the same work as for a
//!   known user with a wrong password; both get the same 401.

mod basic;
pub mod htpasswd;
mod remembered;
mod verify;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

use crate::log;
use htpasswd::{BcryptHash, HtpasswdError};
use remembered::Remembered;
use verify::{Slot, Verifier};

/// Largest user file read: ten thousand users take under a megabyte.
pub const MAX_FILE: u64 = 16 << 20;

/// The realm of the challenge, `WWW-Authenticate: Basic realm="nix-serve"`.
pub const REALM: &str = "nix-serve";

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("--htpasswd {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--htpasswd {path}: larger than {MAX_FILE} bytes")]
    TooLarge { path: PathBuf },
    #[error("--htpasswd {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: HtpasswdError,
    },
}

/// What the event loop may decide alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Known {
    /// No `Authorization` header.
    Anonymous,
    /// A header verified before, for this user.
    User(Arc<str>),
    /// A header never seen verified: a worker must look ([`Auth::check`]).
    Unknown,
}

/// What a worker decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No `Authorization` header.
    Anonymous,
    User(Arc<str>),
    /// Malformed, unknown user or wrong password: all answered alike.
    Denied(Denied),
    /// Too many verifications at once: 503, try again.
    Busy,
}

/// Why credentials were refused: for the log only, never the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    Malformed,
    NoSuchUser(Arc<str>),
    WrongPassword(Arc<str>),
}

/// The users, and what was learnt of their credentials since start-up.
pub struct Auth {
    users: HashMap<String, BcryptHash>,
    /// What an unknown user is checked against: the costliest entry's cost.
    dummy: BcryptHash,
    remembered: Remembered,
    verifier: Verifier<Result<(), Denied>>,
    /// The entries' bcrypt costs, lowest and highest.
    costs: (u32, u32),
}

impl Auth {
    /// Reads the user file at `path`; at most `max_verifications` bcrypt
    /// runs at once.
    pub fn load(path: &Path, max_verifications: usize) -> Result<Auth, LoadError> {
        let read = |source| LoadError::Read {
            path: path.to_owned(),
            source,
        };
        let mut text = Vec::new();
        File::open(path)
            .map_err(read)?
            .take(MAX_FILE + 1)
            .read_to_end(&mut text)
            .map_err(read)?;
        if text.len() as u64 > MAX_FILE {
            return Err(LoadError::TooLarge {
                path: path.to_owned(),
            });
        }
        let entries = htpasswd::parse(&text).map_err(|source| LoadError::Parse {
            path: path.to_owned(),
            source,
        })?;
        Ok(Auth::new(entries, max_verifications))
    }

    pub fn new(entries: Vec<htpasswd::Entry>, max_verifications: usize) -> Auth {
        let low = entries.iter().map(|e| e.hash.cost()).min().unwrap_or(0);
        let high = entries.iter().map(|e| e.hash.cost()).max().unwrap_or(0);
        Auth {
            users: entries.into_iter().map(|e| (e.user, e.hash)).collect(),
            dummy: BcryptHash::dummy(high),
            remembered: Remembered::default(),
            verifier: Verifier::new(max_verifications),
            costs: (low, high),
        }
    }

    /// One line for the start-up log. Entries of different costs take
    /// different times to refuse, and an unknown user takes the longest:
    /// the time of a refusal then tells something of who asked.
    pub fn describe(&self) -> String {
        let n = self.users.len();
        match self.costs {
            (low, high) if low == high => format!("{n} user(s), bcrypt cost {high}"),
            (low, high) => format!(
                "{n} user(s), bcrypt costs {low} to {high} (an unknown user is refused \
                 after the work of cost {high}; give every entry the same cost so that \
                 refusals all take as long)"
            ),
        }
    }

    /// The event loop's look: never bcrypt.
    pub fn known(&self, authorization: Option<&[u8]>) -> Known {
        match authorization {
            None => Known::Anonymous,
            Some(value) => match self.remembered.get(&basic::key(value)) {
                Some(user) => Known::User(user),
                None => Known::Unknown,
            },
        }
    }

    /// A worker's look: verifies what is not known (milliseconds).
    pub fn check(&self, authorization: Option<&[u8]>) -> Verdict {
        let Some(value) = authorization else {
            return Verdict::Anonymous;
        };
        let key = basic::key(value);
        if let Some(user) = self.remembered.get(&key) {
            return Verdict::User(user);
        }
        let Some(creds) = basic::parse(value) else {
            return Verdict::Denied(Denied::Malformed);
        };
        let user: Arc<str> = creds.user.as_str().into();
        let outcome = self.verifier.run(key, || {
            let (hash, known) = match self.users.get(&creds.user) {
                Some(h) => (h, true),
                None => (&self.dummy, false),
            };
            // bcrypt truncates passwords at 72 bytes, as htpasswd and
            // nginx's crypt(3) do with the same file.
            let matched = match bcrypt::verify(&creds.password, hash.as_str()) {
                Ok(m) => m,
                Err(e) => {
                    // The parser admits only hashes bcrypt reads.
                    log::error(&format!("bcrypt cannot read a checked hash: {e}"));
                    false
                }
            };
            match (known, matched) {
                (true, true) => {
                    self.remembered.insert(key, user.clone());
                    Ok(())
                }
                (true, false) => Err(Denied::WrongPassword(user.clone())),
                (false, _) => Err(Denied::NoSuchUser(user.clone())),
            }
        });
        match outcome {
            Slot::Done(Ok(())) => Verdict::User(user),
            Slot::Done(Err(why)) => Verdict::Denied(why),
            Slot::Busy => Verdict::Busy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "$2y$05$Fc06vfg4ritNGQONh1LBrOOF76FbcCN13crOGFN43qNR2p4vVkMk6";

    fn auth() -> Auth {
        let text = format!("alice:{ALICE}\n");
        Auth::new(htpasswd::parse(text.as_bytes()).unwrap(), 2)
    }

    /// `curl -u USER:PASSWORD`'s header value.
    fn header(user_password: &str) -> Vec<u8> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(user_password);
        format!("Basic {b64}").into_bytes()
    }

    #[test]
    fn verifies_remembers_and_refuses() {
        let a = auth();
        let good = header("alice:secret");
        assert_eq!(a.known(None), Known::Anonymous);
        assert_eq!(a.check(None), Verdict::Anonymous);
        assert_eq!(a.known(Some(&good)), Known::Unknown);
        assert_eq!(a.check(Some(&good)), Verdict::User("alice".into()));
        // Now the loop knows it, and the worker needs no bcrypt.
        assert_eq!(a.known(Some(&good)), Known::User("alice".into()));
        assert_eq!(a.check(Some(&good)), Verdict::User("alice".into()));

        let alice = || Denied::WrongPassword("alice".into());
        let table: [(&[u8], Denied); 5] = [
            (&header("alice:wrong"), alice()),
            (&header("alice:"), alice()),
            (
                &header("mallory:secret"),
                Denied::NoSuchUser("mallory".into()),
            ),
            (b"Basic !!", Denied::Malformed),
            (b"Bearer abc", Denied::Malformed),
        ];
        for (value, why) in table {
            assert_eq!(a.check(Some(value)), Verdict::Denied(why));
            // A failure is not remembered.
            assert_eq!(a.known(Some(value)), Known::Unknown);
        }
    }

    #[test]
    fn the_dummy_hash_is_a_hash_bcrypt_checks() {
        for cost in [4, 5, 10] {
            let checked = bcrypt::verify(b"secret", BcryptHash::dummy(cost).as_str());
            assert!(matches!(checked, Ok(false)), "{checked:?}");
        }
    }

    #[test]
    fn describes_its_users_and_costs() {
        assert_eq!(auth().describe(), "1 user(s), bcrypt cost 5");
        let bob = "$2y$10$opgiqN1P7OLYebe/NTS3puhIOXMIZENq7IXo01kh8C6dlyVs1nTRa";
        let text = format!("alice:{ALICE}\nbob:{bob}\n");
        let a = Auth::new(htpasswd::parse(text.as_bytes()).unwrap(), 1);
        assert!(a.describe().starts_with("2 user(s), bcrypt costs 5 to 10"));
        assert_eq!(a.dummy.cost(), 10);
    }

    #[test]
    fn load_names_the_file_and_the_line() {
        let dir = std::env::temp_dir().join(format!("nssd-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("htpasswd");
        std::fs::write(
            &file,
            format!("alice:{ALICE}\nbob:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\n"),
        )
        .unwrap();
        let e = Auth::load(&file, 1).err().unwrap().to_string();
        assert_eq!(
            e,
            format!(
                "--htpasswd {}: line 2: user \"bob\": SHA-1 ({{SHA}}) hashes are not accepted, \
                 only bcrypt (make the entry again with `htpasswd -B`)",
                file.display()
            )
        );
        let missing = dir.join("missing");
        let e = Auth::load(&missing, 1).err().unwrap().to_string();
        assert!(
            e.starts_with(&format!("--htpasswd {}: No such file", missing.display())),
            "{e}"
        );
        std::fs::write(&file, format!("alice:{ALICE}\n")).unwrap();
        assert!(Auth::load(&file, 1).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
