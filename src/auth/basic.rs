//! The `Authorization: Basic` header (RFC 7617): `Basic` (any case), one
//! or more spaces, then `user:password` in base64. Anything else, too long,
//! not base64, without a colon, a user name that is not UTF-8 or holds a
//! control character, is `None`: the caller answers it as it answers a
//! wrong password, without running bcrypt.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Longest header value read. RFC 7617 sets no limit; a 255-byte user name
/// and a 256-byte password take 688 bytes in base64. The request head is
/// bounded anyway (16 KiB); this keeps a decoded copy small.
pub const MAX_VALUE: usize = 1024;

/// What a client sent, decoded. The password stays bytes: bcrypt hashes
/// bytes, and htpasswd never said which encoding its user typed.
#[derive(Debug, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Vec<u8>,
}

/// The name under which a header's verdict is remembered: SHA-256 of its
/// value, so the process never keeps a password, nor anything from which
/// one is cheaper to find than by bcrypt.
pub type Key = [u8; 32];

pub fn key(value: &[u8]) -> Key {
    Sha256::digest(value).into()
}

/// Decodes a header value; `None` when it is not well-formed Basic
/// credentials.
pub fn parse(value: &[u8]) -> Option<Credentials> {
    if value.len() > MAX_VALUE {
        return None;
    }
    let (scheme, rest) = split_at_space(value)?;
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    // RFC 9110 §11.4: 1*SP between scheme and token68; httparse has already
    // dropped the value's surrounding white space.
    let token = trim_spaces(rest);
    // Padded, with zero trailing bits: one spelling per credential.
    let decoded = STANDARD.decode(token).ok()?;
    // RFC 7617 §2: the user-id cannot contain a colon; the password can.
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?;
    // RFC 7617 §2: neither may hold control characters. The user name goes into the
    // access log (escaped anyway); a password is only ever hashed.
    if user.chars().any(char::is_control) {
        return None;
    }
    Some(Credentials {
        user: user.to_owned(),
        password: decoded[colon + 1..].to_vec(),
    })
}

fn split_at_space(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = value.iter().position(|&b| b == b' ')?;
    Some((&value[..at], &value[at..]))
}

fn trim_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::app::Authorization;

    fn creds(user: &str, password: &str) -> Option<Credentials> {
        Some(Credentials {
            user: user.into(),
            password: password.into(),
        })
    }

    #[test]
    fn decodes_what_curl_sends() {
        // `curl -u alice:secret` sends exactly this value.
        assert_eq!(parse(b"Basic YWxpY2U6c2VjcmV0"), creds("alice", "secret"));
        // Scheme in any case, several spaces (RFC 9110 §11.1, §11.4).
        assert_eq!(parse(b"basic  YWxpY2U6c2VjcmV0"), creds("alice", "secret"));
        assert_eq!(parse(b"BASIC YWxpY2U6c2VjcmV0 "), creds("alice", "secret"));
        // The password may hold colons and be empty; the user may be empty.
        assert_eq!(parse(b"Basic YTpiOmM="), creds("a", "b:c"));
        assert_eq!(parse(b"Basic YTo="), creds("a", ""));
        assert_eq!(parse(b"Basic OnA="), creds("", "p"));
        // UTF-8 user names (RFC 7617 §2.1's charset="UTF-8").
        assert_eq!(parse(b"Basic w6l0w6k6cA=="), creds("\u{e9}t\u{e9}", "p"));
    }

    #[test]
    fn refuses_what_is_not_basic_credentials() {
        let huge = format!("Basic {}", "QUFB".repeat(MAX_VALUE / 4));
        let table: [&[u8]; 14] = [
            b"",
            b"Basic",
            b"Basic ",
            b"Bearer YWxpY2U6c2VjcmV0",
            b"Digest username=\"alice\"",
            b"BasicYWxpY2U6c2VjcmV0",
            // Not base64, unpadded, non-zero trailing bits, a space inside.
            b"Basic !!!!",
            b"Basic YTo",
            b"Basic YTq=",
            b"Basic YWxp Y2U6c2VjcmV0",
            // No colon.
            b"Basic YWxpY2U=",
            // A user name that is not UTF-8 (0xff), or holds a control (\x1b).
            b"Basic /zpw",
            b"Basic G1sySjpw",
            huge.as_bytes(),
        ];
        for value in table {
            assert_eq!(parse(value), None, "{:?}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn a_header_never_prints_its_value() {
        let a = Authorization::new(b"Basic YWxpY2U6c2VjcmV0");
        assert_eq!(format!("{a:?}"), "Authorization(<22 bytes>)");
    }

    #[test]
    fn the_key_is_the_sha256_of_the_value() {
        assert_eq!(
            key(b"Basic YWxpY2U6c2VjcmV0"),
            [
                0x8a, 0xfa, 0x39, 0x2a, 0x6e, 0x85, 0x05, 0x98, 0xc9, 0xd2, 0x62, 0xa0, 0xf9, 0xe9,
                0x3d, 0x7d, 0x41, 0xb0, 0x77, 0xa4, 0x3f, 0x3b, 0x4e, 0xdc, 0xb4, 0x4b, 0xfe, 0xfa,
                0x8b, 0xf6, 0x2e, 0x89
            ]
        );
    }
}
