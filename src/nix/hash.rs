//! The sha256 NAR hash, in the encodings Nix reads and writes (`docs/protocols.md`
//! §1, §3, §4.1, §7.7, §8).

use std::fmt;

use base64::Engine;
use thiserror::Error;

use super::nix32;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HashError {
    #[error("hash {0:?} is not sha256 (expected a \"sha256:\" or \"sha256-\" prefix)")]
    Algorithm(String),
    #[error("sha256 hash has {0} characters: expected 64 (base16), 52 (nix32) or 44 (base64)")]
    Length(usize),
    #[error("invalid base16 in sha256 hash")]
    Base16,
    #[error("invalid nix32 in sha256 hash: {0}")]
    Nix32(#[from] nix32::Nix32Error),
    #[error("invalid base64 in sha256 hash")]
    Base64,
}

/// A sha256 digest, used for NAR hashes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Digest of `data`.
    #[cfg(any(test, feature = "testing"))]
    pub fn digest(data: &[u8]) -> Self {
        use sha2::Digest;
        Sha256(sha2::Sha256::digest(data).into())
    }

    /// `<nix32>`, 52 characters, as in NAR URLs.
    pub fn to_nix32(&self) -> String {
        nix32::encode(&self.0)
    }

    /// `sha256:<nix32>`, as narinfo and fingerprints write it.
    pub fn to_prefixed_nix32(&self) -> String {
        format!("sha256:{}", self.to_nix32())
    }

    /// Lower-case base16, 64 characters, as the daemon protocol writes it.
    pub fn to_base16(&self) -> String {
        use std::fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// Parses a bare hash by its length: 64 base16, 52 nix32 or 44 base64.
    pub fn parse_bare(s: &str) -> Result<Self, HashError> {
        match s.len() {
            64 => {
                let mut out = [0u8; 32];
                for (i, pair) in s.as_bytes().chunks(2).enumerate() {
                    let hi = (pair[0] as char).to_digit(16).ok_or(HashError::Base16)?;
                    let lo = (pair[1] as char).to_digit(16).ok_or(HashError::Base16)?;
                    out[i] = (hi * 16 + lo) as u8;
                }
                Ok(Sha256(out))
            }
            52 => Ok(Sha256(nix32::decode::<32>(s)?)),
            44 => base64::engine::general_purpose::STANDARD
                .decode(s)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .map(Sha256)
                .ok_or(HashError::Base64),
            n => Err(HashError::Length(n)),
        }
    }

    /// Parses any form Nix accepts for a sha256 hash that names its algorithm:
    /// `sha256:<base16|nix32|base64>` or SRI `sha256-<base64>`. This is how Nix
    /// reads narinfo `NarHash` and the database `hash` column.
    pub fn parse_prefixed(s: &str) -> Result<Self, HashError> {
        if let Some(rest) = s.strip_prefix("sha256:") {
            Self::parse_bare(rest)
        } else if let Some(rest) = s.strip_prefix("sha256-") {
            if rest.len() != 44 {
                return Err(HashError::Length(rest.len()));
            }
            Self::parse_bare(rest)
        } else {
            Err(HashError::Algorithm(s.chars().take(16).collect()))
        }
    }

    /// Parses what the daemon sends (`docs/protocols.md` §7.7): bare base16 in
    /// practice, but any bare or prefixed form is accepted, as Nix does.
    pub fn parse_any(s: &str) -> Result<Self, HashError> {
        if s.starts_with("sha256") {
            Self::parse_prefixed(s)
        } else {
            Self::parse_bare(s)
        }
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_prefixed_nix32())
    }
}

impl fmt::Display for Sha256 {
    /// `sha256:<nix32>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_prefixed_nix32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13";
    const N32: &str = "04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw";

    #[test]
    fn renders_and_parses_every_encoding() {
        let h = Sha256::parse_bare(HEX).unwrap();
        assert_eq!(h.to_base16(), HEX);
        assert_eq!(h.to_nix32(), N32);
        assert_eq!(h.to_string(), format!("sha256:{N32}"));
        let b64 = base64::engine::general_purpose::STANDARD.encode(h.0);
        for s in [
            format!("sha256:{HEX}"),
            format!("sha256:{N32}"),
            format!("sha256:{b64}"),
            format!("sha256-{b64}"),
        ] {
            assert_eq!(Sha256::parse_prefixed(&s).unwrap(), h, "{s}");
            assert_eq!(Sha256::parse_any(&s).unwrap(), h, "{s}");
        }
        assert_eq!(Sha256::parse_any(HEX).unwrap(), h);
        assert_eq!(Sha256::parse_any(N32).unwrap(), h);
    }

    #[test]
    fn digest_of_nothing() {
        assert_eq!(
            Sha256::digest(b"").to_nix32(),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            Sha256::parse_prefixed(&format!("md5:{HEX}")),
            Err(HashError::Algorithm("md5:1c37d01af40b".into()))
        );
        assert_eq!(Sha256::parse_bare("abc"), Err(HashError::Length(3)));
        assert_eq!(
            Sha256::parse_bare(&HEX.replace('c', "g")),
            Err(HashError::Base16)
        );
        assert!(matches!(
            Sha256::parse_bare(&N32.replace('0', "e")),
            Err(HashError::Nix32(_))
        ));
        assert_eq!(Sha256::parse_bare(&"!".repeat(44)), Err(HashError::Base64));
    }
}
