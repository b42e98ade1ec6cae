//! Nix binary-cache signing keys and signatures (`docs/protocols.md` §5).
//!
//! Keys are `name:base64(bytes)`: 64 bytes for a secret key (32-byte seed,
//! then the 32-byte public key, libsodium's layout) and 32 for a public key.
//! Signatures are pure Ed25519 over the ASCII fingerprint (docs/protocols.md §5.1), written
//! `name:base64(64 bytes)`.
//!
//! No error message ever contains key material: errors name the key, the
//! file and lengths, never bytes.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD as BASE64};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use thiserror::Error;

const SECRET_KEY_LEN: usize = 64;
const SEED_LEN: usize = 32;
const SIGNATURE_LEN: usize = 64;
/// A key file is one short line; refuse to slurp anything much bigger.
const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

/// Decodes as leniently as Nix's `base64Decode` does where it matters for
/// real key files and signatures: `=` padding optional, unused trailing bits
/// ignored. Everything outside the alphabet is still an error (docs/protocols.md §5.2).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is larger than {MAX_KEY_FILE_LEN} bytes")]
    FileTooLarge { path: PathBuf },
    /// A well-read file whose content is malformed; `reason` says how.
    #[error("key file {path}: {reason}")]
    InFile {
        path: PathBuf,
        reason: Box<KeyError>,
    },
    #[error("key is not of the form <name>:<base64>: it has no ':'")]
    NoColon,
    #[error("key has an empty name before the ':'")]
    EmptyName,
    /// A space, a control character or a non-ASCII byte in the name: a
    /// signature under it would not parse (see [`SignatureError::NameByte`]),
    /// so the key would sign what its own public half cannot check.
    #[error("{kind} key name has byte {byte:#04x} at position {position}: only printable ASCII")]
    NameByte {
        kind: KeyKind,
        byte: u8,
        position: usize,
    },
    #[error("{kind} key {name:?}: invalid base64 after the ':'")]
    Base64 { kind: KeyKind, name: String },
    #[error("{kind} key {name:?}: decodes to {actual} bytes, expected {expected}")]
    Length {
        kind: KeyKind,
        name: String,
        expected: usize,
        actual: usize,
    },
    #[error("secret key {name:?}: its public half does not match its seed")]
    PublicMismatch { name: String },
    #[error("public key {name:?}: not a valid Ed25519 point")]
    InvalidPublicKey { name: String },
}

/// Which kind of key an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Secret,
    Public,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Secret => "secret",
            KeyKind::Public => "public",
        })
    }
}

/// An Ed25519 signing key with its Nix key name.
pub struct SecretKey {
    pub name: String,
    key: SigningKey,
}

impl SecretKey {
    /// Reads `name:base64(64 bytes)` from a file, whitespace around it tolerated.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = read_key_file(path)?;
        Self::parse(&text).map_err(|e| KeyError::InFile {
            path: path.to_owned(),
            reason: Box::new(e),
        })
    }

    /// Parses `name:base64(seed ‖ public)`. Surrounding whitespace is trimmed,
    /// as nix-serve's `chomp` does, since Nix's own decoder would choke on it
    /// (docs/protocols.md §5.2).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (name, mut bytes) = split_key(text, KeyKind::Secret, SECRET_KEY_LEN)?;
        let mut seed = [0u8; SEED_LEN];
        seed.copy_from_slice(&bytes[..SEED_LEN]);
        let key = SigningKey::from_bytes(&seed);
        // libsodium stores the public key beside the seed; a file whose two
        // halves disagree was damaged or hand-assembled, and would sign
        // with a key no client trusts.
        let matches = key.verifying_key().as_bytes()[..] == bytes[SEED_LEN..];
        // Best effort: do not leave copies of the seed behind (`SigningKey`
        // wipes its own on drop).
        seed.fill(0);
        bytes.fill(0);
        if !matches {
            return Err(KeyError::PublicMismatch { name });
        }
        Ok(SecretKey { name, key })
    }

    /// `name:base64(signature)` over `fingerprint`.
    pub fn sign(&self, fingerprint: &str) -> String {
        let sig = self.key.sign(fingerprint.as_bytes());
        format_named(&self.name, &sig.to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    /// Names the key, never shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why a `Sig:` value is not a signature a Nix client could check. Public
/// data, so the messages may quote it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("signature {0:?} is not of the form <key name>:<base64>: it has no ':'")]
    NoColon(String),
    #[error("signature {0:?} has an empty key name before the ':'")]
    EmptyName(String),
    /// A space, a control character or a non-ASCII byte in the key name:
    /// Nix separates stored signatures with spaces and narinfo lines with
    /// newlines, so no real key name has one.
    #[error("signature by {name:?}: key name has byte {byte:#04x} at position {position}")]
    NameByte {
        name: String,
        byte: u8,
        position: usize,
    },
    #[error("signature by {name:?}: invalid base64 at byte {position} after the ':'")]
    Base64 { name: String, position: usize },
    #[error(
        "signature by {name:?}: decodes to {actual} bytes, an Ed25519 signature is {SIGNATURE_LEN}"
    )]
    Length { name: String, actual: usize },
}

/// A well-formed `name:base64(64 bytes)` signature (docs/protocols.md §5.2), as stored in a
/// Nix database and served in `Sig:` lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedSignature<'a> {
    pub name: &'a str,
    pub bytes: [u8; SIGNATURE_LEN],
}

impl<'a> NamedSignature<'a> {
    /// Parses `text` as Nix would have to in order to check it: split at
    /// the first `:`, a non-empty printable key name, and exactly 64 bytes
    /// of base64 (padding optional, as Nix's decoder allows). Nothing is
    /// trimmed: a stored value with spaces around it is not one Nix wrote.
    pub fn parse(text: &'a str) -> Result<Self, SignatureError> {
        let (name, data) = text
            .split_once(':')
            .ok_or_else(|| SignatureError::NoColon(text.to_owned()))?;
        if name.is_empty() {
            return Err(SignatureError::EmptyName(text.to_owned()));
        }
        if let Some(position) = name.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(SignatureError::NameByte {
                name: name.to_owned(),
                byte: name.as_bytes()[position],
                position,
            });
        }
        let bytes = LENIENT.decode(data).map_err(|e| SignatureError::Base64 {
            name: name.to_owned(),
            position: match e {
                base64::DecodeError::InvalidByte(at, _)
                | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                // Length or padding: the fault shows at the end.
                _ => data.len(),
            },
        })?;
        let bytes = <[u8; SIGNATURE_LEN]>::try_from(bytes).map_err(|b| SignatureError::Length {
            name: name.to_owned(),
            actual: b.len(),
        })?;
        Ok(NamedSignature { name, bytes })
    }
}

/// The `Sig:` values to serve: `ours` (fresh, one per key of ours, in key
/// order), then the `stored` ones whose key name none of ours has and that
/// parse, the first of each name, in stored order. A malformed stored
/// signature is left out and returned with why: a Nix client refuses a whole
/// narinfo over one `Sig:` it cannot decode (docs/protocols.md §5.2), so passing it on would
/// hide every good one.
pub fn merge_signatures<'s>(
    ours: &'s [String],
    stored: &'s [String],
) -> (Vec<&'s str>, Vec<SignatureError>) {
    let mut out: Vec<&str> = ours.iter().map(String::as_str).collect();
    let mut rejected = Vec::new();
    let mut names: Vec<&str> = ours
        .iter()
        .map(|s| s.split_once(':').map_or("", |(n, _)| n))
        .collect();
    for sig in stored {
        match NamedSignature::parse(sig) {
            Ok(parsed) if names.contains(&parsed.name) => {}
            Ok(parsed) => {
                names.push(parsed.name);
                out.push(sig);
            }
            Err(e) => rejected.push(e),
        }
    }
    (out, rejected)
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    use std::io::Read;
    let read_err = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(KeyError::FileTooLarge {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

/// Splits `name:base64` at the first `:` (so names cannot contain one, as in
/// Nix, docs/protocols.md §5.2) and decodes exactly `expected` bytes.
fn split_key(text: &str, kind: KeyKind, expected: usize) -> Result<(String, Vec<u8>), KeyError> {
    let (name, data) = text.trim().split_once(':').ok_or(KeyError::NoColon)?;
    if name.is_empty() {
        return Err(KeyError::EmptyName);
    }
    if let Some(position) = name.bytes().position(|b| !b.is_ascii_graphic()) {
        let byte = name.as_bytes()[position];
        return Err(KeyError::NameByte {
            kind,
            byte,
            position,
        });
    }
    let name = name.to_owned();
    // The decoder's own error would quote the offending byte: key material.
    let bytes = match LENIENT.decode(data) {
        Ok(bytes) => bytes,
        Err(_) => return Err(KeyError::Base64 { kind, name }),
    };
    if bytes.len() != expected {
        return Err(KeyError::Length {
            kind,
            name,
            expected,
            actual: bytes.len(),
        });
    }
    Ok((name, bytes))
}

fn format_named(name: &str, bytes: &[u8]) -> String {
    let mut out = String::with_capacity(name.len() + 1 + bytes.len().div_ceil(3) * 4);
    out.push_str(name);
    out.push(':');
    BASE64.encode_string(bytes, &mut out);
    out
}

// The server only signs; verifying is for the tests (and clients).
#[cfg(any(test, feature = "testing"))]
mod public;
#[cfg(any(test, feature = "testing"))]
pub use public::PublicKey;

#[cfg(test)]
mod tests;
