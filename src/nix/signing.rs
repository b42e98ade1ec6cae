//! Nix binary-cache signing keys and signatures (`nix-protocols.md` §5).
//!
//! STUB: interface fixed, bodies to be written.

use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key {0}")]
    Malformed(String),
}

/// An Ed25519 signing key with its Nix key name.
pub struct SecretKey {
    pub name: String,
}

/// An Ed25519 public key with its Nix key name.
pub struct PublicKey {
    pub name: String,
}

impl SecretKey {
    /// Reads `name:base64(64 bytes)` from a file, whitespace around it tolerated.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let _ = path;
        todo!()
    }

    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let _ = text;
        todo!()
    }

    /// `name:base64(signature)` over `fingerprint`.
    pub fn sign(&self, fingerprint: &str) -> String {
        let _ = fingerprint;
        todo!()
    }

    pub fn public_key(&self) -> PublicKey {
        todo!()
    }
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let _ = text;
        todo!()
    }

    /// Whether `sig` (`name:base64`) is this key's valid signature of `fingerprint`.
    pub fn verify(&self, fingerprint: &str, sig: &str) -> bool {
        let _ = (fingerprint, sig);
        todo!()
    }
}
