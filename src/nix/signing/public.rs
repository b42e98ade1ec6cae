//! The public half of a key, and verifying a signature as a Nix client does
//! (`docs/protocols.md` §5.3). The server only signs: this is built for the
//! tests alone (`cfg(test)`, and the `testing` feature for tests/*.rs), which
//! check our signatures with it beside real Nix.

use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};

use super::{format_named, split_key, KeyError, KeyKind, NamedSignature, SecretKey};

const PUBLIC_KEY_LEN: usize = 32;

/// An Ed25519 public key with its Nix key name.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    key: VerifyingKey,
}

impl SecretKey {
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }
}

impl PublicKey {
    /// Parses `name:base64(32 bytes)`, surrounding whitespace trimmed.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split_key(text, KeyKind::Public, PUBLIC_KEY_LEN)?;
        let mut raw = [0u8; PUBLIC_KEY_LEN];
        raw.copy_from_slice(&bytes);
        match VerifyingKey::from_bytes(&raw) {
            Ok(key) => Ok(PublicKey { name, key }),
            Err(_) => Err(KeyError::InvalidPublicKey { name }),
        }
    }

    /// Whether `sig` (`name:base64`) is this key's valid signature of
    /// `fingerprint`. A signature under another key name, or one that is not
    /// 64 bytes of base64, is simply not valid.
    ///
    /// Strict verification (no small-order keys or points, canonical
    /// scalars) matches libsodium's `crypto_sign_verify_detached`, which Nix
    /// uses.
    pub fn verify(&self, fingerprint: &str, sig: &str) -> bool {
        let Ok(sig) = NamedSignature::parse(sig) else {
            return false;
        };
        sig.name == self.name
            && self
                .key
                .verify_strict(fingerprint.as_bytes(), &Signature::from_bytes(&sig.bytes))
                .is_ok()
    }
}

impl fmt::Display for PublicKey {
    /// `name:base64(32 bytes)`, the form of a `trusted-public-keys` entry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_named(&self.name, self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}
