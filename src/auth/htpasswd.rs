//! The user file of `--htpasswd`: Apache's htpasswd format, one
//! `user:hash` a line, as `htpasswd -B` writes it and nginx's
//! `auth_basic_user_file` reads it, with bcrypt entries only.
//!
//! The format (<https://httpd.apache.org/docs/2.4/programs/htpasswd.html>,
//! <https://nginx.org/en/docs/http/ngx_http_auth_basic_module.html#auth_basic_user_file>):
//! LF or CRLF line ends; blank lines and lines starting with `#` are
//! ignored; the user name ends at the first `:`, the hash at the next one
//! (nginx allows a `:comment` after it). Any other hash kind (`{SHA}`,
//! `$apr1$`, crypt, plain text) is refused, naming its line: those are
//! fast hashes or none, and a file that mixes kinds is a file someone
//! forgot to convert. The hash itself is never repeated in an error.

use thiserror::Error;

/// bcrypt's costs (log2 of the rounds): 4 is the least any implementation
/// accepts, 31 the most the format can say.
const MIN_COST: u32 = 4;
const MAX_COST: u32 = 31;
/// Salt (22) and digest (31) in bcrypt's base-64 alphabet.
const SALT_AND_DIGEST: usize = 53;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HtpasswdError {
    #[error("line {line}: not UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}: expected USER:HASH")]
    NoColon { line: usize },
    #[error("line {line}: empty user name")]
    EmptyUser { line: usize },
    #[error("line {line}: user {user:?} again (first on line {first})")]
    Duplicate {
        line: usize,
        user: String,
        first: usize,
    },
    #[error(
        "line {line}: user {user:?}: {kind} hashes are not accepted, only bcrypt \
         (make the entry again with `htpasswd -B`)"
    )]
    NotBcrypt {
        line: usize,
        user: String,
        kind: &'static str,
    },
    #[error("line {line}: user {user:?}: malformed bcrypt hash ({reason})")]
    Malformed {
        line: usize,
        user: String,
        reason: &'static str,
    },
    #[error("no user in the file (every line is blank or a comment)")]
    Empty,
}

/// A bcrypt hash as htpasswd writes it: `$2y$` (or `$2b$`, `$2a$`), two
/// digits of cost, 53 characters of salt and digest. Checked, so that
/// verifying it can only say yes or no.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BcryptHash {
    text: String,
    cost: u32,
}

impl BcryptHash {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// A hash of `cost` that no password is known to match: an unknown user
    /// is checked against it, so that the reply takes as long as for a known
    /// user with a wrong password. The work depends on the cost alone, not
    /// on the salt or the digest (all zero bits here).
    pub fn dummy(cost: u32) -> BcryptHash {
        let cost = cost.clamp(MIN_COST, MAX_COST);
        BcryptHash {
            text: format!("$2y${cost:02}${}", ".".repeat(SALT_AND_DIGEST)),
            cost,
        }
    }

    fn parse(field: &str) -> Result<BcryptHash, &'static str> {
        let rest = ["$2y$", "$2b$", "$2a$"]
            .iter()
            .find_map(|p| field.strip_prefix(p))
            .ok_or("not $2y$, $2b$ or $2a$")?;
        let (cost, tail) = rest.split_once('$').ok_or("no $ after the cost")?;
        if cost.len() != 2 || !cost.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the cost is not two digits");
        }
        let cost: u32 = cost.parse().map_err(|_| "the cost is not a number")?;
        if !(MIN_COST..=MAX_COST).contains(&cost) {
            return Err("the cost is not between 4 and 31");
        }
        if tail.len() != SALT_AND_DIGEST {
            return Err("salt and digest are not 53 characters");
        }
        let alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'/';
        if !tail.bytes().all(alphabet) {
            return Err("a character outside bcrypt's alphabet");
        }
        Ok(BcryptHash {
            text: field.to_owned(),
            cost,
        })
    }
}

/// One user of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub user: String,
    pub hash: BcryptHash,
    /// Where it is in the file (1-based), for messages.
    pub line: usize,
}

/// The users of an htpasswd file, in file order.
pub fn parse(text: &[u8]) -> Result<Vec<Entry>, HtpasswdError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = std::str::from_utf8(raw).map_err(|_| HtpasswdError::NotUtf8 { line })?;
        let text = raw.trim_end_matches(['\r', ' ', '\t']);
        if text.trim_start().is_empty() || text.starts_with('#') {
            continue;
        }
        let (user, rest) = text
            .split_once(':')
            .ok_or(HtpasswdError::NoColon { line })?;
        if user.is_empty() {
            return Err(HtpasswdError::EmptyUser { line });
        }
        if let Some(first) = entries.iter().find(|e| e.user == user) {
            return Err(HtpasswdError::Duplicate {
                line,
                user: user.to_owned(),
                first: first.line,
            });
        }
        // nginx's optional third field, a comment.
        let field = rest.split(':').next().unwrap_or(rest);
        if let Some(kind) = other_kind(field) {
            return Err(HtpasswdError::NotBcrypt {
                line,
                user: user.to_owned(),
                kind,
            });
        }
        let hash = BcryptHash::parse(field).map_err(|reason| HtpasswdError::Malformed {
            line,
            user: user.to_owned(),
            reason,
        })?;
        entries.push(Entry {
            user: user.to_owned(),
            hash,
            line,
        });
    }
    if entries.is_empty() {
        return Err(HtpasswdError::Empty);
    }
    Ok(entries)
}

/// What a field that is not bcrypt looks like, by the prefixes htpasswd,
/// nginx and crypt(3) use; `None` for something that starts like bcrypt.
fn other_kind(field: &str) -> Option<&'static str> {
    const PREFIXES: [(&str, &str); 10] = [
        ("$2y$", ""),
        ("$2b$", ""),
        ("$2a$", ""),
        ("$2x$", "bcrypt $2x$ (crypt_blowfish's compatibility mode)"),
        ("{SHA}", "SHA-1 ({SHA})"),
        ("{SSHA}", "salted SHA-1 ({SSHA})"),
        ("$apr1$", "Apache MD5 ($apr1$)"),
        ("$1$", "MD5-crypt ($1$)"),
        ("$5$", "SHA-256-crypt ($5$)"),
        ("$6$", "SHA-512-crypt ($6$)"),
    ];
    if let Some((_, kind)) = PREFIXES.iter().find(|(p, _)| field.starts_with(p)) {
        return (!kind.is_empty()).then_some(*kind);
    }
    if field.starts_with('$') || field.starts_with('{') {
        return Some("other schemes'");
    }
    // crypt(3)'s traditional DES: 13 characters of its alphabet.
    let des = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'/';
    if field.len() == 13 && field.bytes().all(des) {
        return Some("DES crypt");
    }
    Some("plain text (or unknown)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `htpasswd -nbB alice secret` and `htpasswd -nbB -C 10 bob hunter2`
    /// (Debian 12's apache2-utils).
    pub const ALICE: &str = "$2y$05$Fc06vfg4ritNGQONh1LBrOOF76FbcCN13crOGFN43qNR2p4vVkMk6";
    pub const BOB: &str = "$2y$10$opgiqN1P7OLYebe/NTS3puhIOXMIZENq7IXo01kh8C6dlyVs1nTRa";

    fn users(text: &str) -> Vec<(String, u32, usize)> {
        parse(text.as_bytes())
            .unwrap()
            .into_iter()
            .map(|e| (e.user, e.hash.cost(), e.line))
            .collect()
    }

    fn error(text: &str) -> HtpasswdError {
        parse(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn reads_what_htpasswd_and_nginx_write() {
        let file =
            format!("# the team\n\nalice:{ALICE}\r\nbob:{BOB}:nginx comment\n  \n#carol:{ALICE}\n");
        assert_eq!(
            users(&file),
            [("alice".into(), 5, 3), ("bob".into(), 10, 4)]
        );
        let e = &parse(file.as_bytes()).unwrap()[0];
        assert_eq!(e.hash.as_str(), ALICE);
        // $2b$ and $2a$ are the same algorithm to a verifier; no final newline.
        let other = format!(
            "x:{}\ny:{}",
            ALICE.replace("$2y$", "$2b$"),
            ALICE.replace("$2y$", "$2a$")
        );
        assert_eq!(users(&other), [("x".into(), 5, 1), ("y".into(), 5, 2)]);
        // A user name is anything up to the first colon.
        assert_eq!(users(&format!("a b@c.d:{ALICE}"))[0].0, "a b@c.d");
    }

    #[test]
    fn refuses_other_hash_kinds_naming_the_line() {
        let table = [
            ("u:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "SHA-1 ({SHA})"),
            ("u:{SSHA}aGVsbG8gd29ybGQ=", "salted SHA-1 ({SSHA})"),
            (
                "u:$apr1$ar1aCuvY$O2g17bm/1vBygLdhO14wG0",
                "Apache MD5 ($apr1$)",
            ),
            ("u:$1$saltsalt$9xy1btjgzLYfb7hivXtC//", "MD5-crypt ($1$)"),
            ("u:$5$rounds=5000$salt$abc", "SHA-256-crypt ($5$)"),
            ("u:$6$salt$abc", "SHA-512-crypt ($6$)"),
            (
                "u:$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
                "other schemes'",
            ),
            ("u:dvL1LEtfLNzOk", "DES crypt"),
            ("u:secret", "plain text (or unknown)"),
            ("u:", "plain text (or unknown)"),
            (
                "u:$2x$05$Fc06vfg4ritNGQONh1LBrOOF76FbcCN13crOGFN43qNR2p4vVkMk6",
                "bcrypt $2x$ (crypt_blowfish's compatibility mode)",
            ),
        ];
        for (line, kind) in table {
            let file = format!("alice:{ALICE}\n{line}\n");
            assert_eq!(
                error(&file),
                HtpasswdError::NotBcrypt {
                    line: 2,
                    user: "u".into(),
                    kind
                },
                "{line}"
            );
        }
        assert_eq!(
            error("u:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=").to_string(),
            "line 1: user \"u\": SHA-1 ({SHA}) hashes are not accepted, only bcrypt \
             (make the entry again with `htpasswd -B`)"
        );
    }

    #[test]
    fn refuses_malformed_bcrypt() {
        let table = [
            (ALICE.replace("$05$", "$5$"), "the cost is not two digits"),
            (
                ALICE.replace("$05$", "$03$"),
                "the cost is not between 4 and 31",
            ),
            (
                ALICE.replace("$05$", "$32$"),
                "the cost is not between 4 and 31",
            ),
            (ALICE.replace("$05$", "$05"), "no $ after the cost"),
            (
                ALICE[..ALICE.len() - 1].to_owned(),
                "salt and digest are not 53 characters",
            ),
            (format!("{ALICE}x"), "salt and digest are not 53 characters"),
            (
                ALICE.replace('F', "!"),
                "a character outside bcrypt's alphabet",
            ),
        ];
        for (hash, reason) in table {
            assert_eq!(
                error(&format!("\n\nbob:{hash}")),
                HtpasswdError::Malformed {
                    line: 3,
                    user: "bob".into(),
                    reason
                },
                "{hash}"
            );
        }
    }

    #[test]
    fn refuses_malformed_lines() {
        assert_eq!(error("alice\n"), HtpasswdError::NoColon { line: 1 });
        assert_eq!(
            error(&format!("#\n:{ALICE}")),
            HtpasswdError::EmptyUser { line: 2 }
        );
        assert_eq!(
            error(&format!("a:{ALICE}\nb:{BOB}\na:{BOB}\n")),
            HtpasswdError::Duplicate {
                line: 3,
                user: "a".into(),
                first: 1
            }
        );
        let mut bytes = format!("a:{ALICE}\n").into_bytes();
        bytes.extend_from_slice(b"\xff:x\n");
        assert_eq!(parse(&bytes), Err(HtpasswdError::NotUtf8 { line: 2 }));
        assert_eq!(error(""), HtpasswdError::Empty);
        assert_eq!(error("# nobody\n\n"), HtpasswdError::Empty);
    }

    #[test]
    fn a_dummy_hash_has_the_cost_it_is_asked_for() {
        let d = BcryptHash::dummy(10);
        assert_eq!(d.cost(), 10);
        assert_eq!(BcryptHash::parse(d.as_str()), Ok(d.clone()));
        assert_eq!(
            d.as_str(),
            "$2y$10$....................................................."
        );
    }
}
