//! Store paths: `<storeDir>/<32 nix32 chars>-<name>` (`docs/protocols.md` §2).

use std::fmt;

use thiserror::Error;

use super::nix32;

/// Longest store-path name Nix accepts (`StorePath::MaxPathLen`).
pub const MAX_NAME_LEN: usize = 211;
/// Characters of a hash part: the nix32 encoding of a 20-byte digest.
pub const HASH_PART_LEN: usize = 32;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StorePathError {
    #[error("hash part has {0} characters, expected 32")]
    HashLength(usize),
    #[error("hash part has invalid character {byte:#04x} at position {position}")]
    HashCharacter { byte: u8, position: usize },
    #[error("store path name is empty")]
    EmptyName,
    #[error("store path name is {0} bytes long, longer than 211")]
    NameTooLong(usize),
    #[error("store path name has invalid character {byte:#04x} at position {position}")]
    NameCharacter { byte: u8, position: usize },
    #[error("store path name {0:?} is not allowed")]
    ReservedName(String),
    #[error("store path base name lacks the '-' after the hash part")]
    MissingDash,
    #[error("path is not directly inside the store directory {0}")]
    NotInStore(String),
    #[error("store directory {0:?} must be an absolute path without a trailing slash")]
    BadStoreDir(String),
}

/// The store directory, `/nix/store` unless configured otherwise. Never ends
/// in `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreDir(String);

impl StoreDir {
    pub fn new(dir: &str) -> Result<Self, StorePathError> {
        let trimmed = if dir.len() > 1 {
            dir.trim_end_matches('/')
        } else {
            dir
        };
        if !trimmed.starts_with('/') || trimmed == "/" || trimmed.contains("//") {
            return Err(StorePathError::BadStoreDir(dir.to_owned()));
        }
        Ok(StoreDir(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a full store path that must lie directly in this directory.
    pub fn parse_path(&self, full: &str) -> Result<StorePath, StorePathError> {
        let base = full
            .strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|base| !base.contains('/'))
            .ok_or_else(|| StorePathError::NotInStore(self.0.clone()))?;
        StorePath::from_base_name(base)
    }

    /// `<dir>/<hash>-<name>`.
    pub fn display_path(&self, path: &StorePath) -> String {
        format!("{}/{}", self.0, path)
    }
}

impl Default for StoreDir {
    fn default() -> Self {
        StoreDir("/nix/store".to_owned())
    }
}

impl fmt::Display for StoreDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated hash part: 32 characters of the nix32 alphabet.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashPart([u8; HASH_PART_LEN]);

impl HashPart {
    /// `c` 32 times (a nix32 digit): a hash part for the unit tests.
    #[cfg(test)]
    pub fn repeating(c: char) -> Self {
        HashPart::parse(&c.to_string().repeat(HASH_PART_LEN)).expect("a nix32 digit")
    }

    pub fn parse(s: &str) -> Result<Self, StorePathError> {
        let b = s.as_bytes();
        if b.len() != HASH_PART_LEN {
            return Err(StorePathError::HashLength(b.len()));
        }
        if let Some(position) = b.iter().position(|&c| nix32::digit(c).is_none()) {
            return Err(StorePathError::HashCharacter {
                byte: b[position],
                position,
            });
        }
        let mut out = [0u8; HASH_PART_LEN];
        out.copy_from_slice(b);
        Ok(HashPart(out))
    }

    pub fn as_str(&self) -> &str {
        // Only alphabet bytes (ASCII) are ever stored.
        std::str::from_utf8(&self.0).expect("hash part is ASCII")
    }
}

impl fmt::Display for HashPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for HashPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashPart({})", self.as_str())
    }
}

/// Checks a store-path name: 1..=211 bytes of `A-Za-z0-9+-._?=`, and not one
/// of the names current Nix rejects (`.`, `..`, `.-…`, `..-…`).
pub fn validate_name(name: &str) -> Result<(), StorePathError> {
    let b = name.as_bytes();
    if b.is_empty() {
        return Err(StorePathError::EmptyName);
    }
    if b.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong(b.len()));
    }
    if let Some(position) = b
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || b"+-._?=".contains(&c)))
    {
        return Err(StorePathError::NameCharacter {
            byte: b[position],
            position,
        });
    }
    if name == "." || name == ".." || name.starts_with(".-") || name.starts_with("..-") {
        return Err(StorePathError::ReservedName(name.to_owned()));
    }
    Ok(())
}

/// A store path without its directory: hash part and name, both validated.
/// Ordered by base name bytes, which is Nix's order for sets of paths.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    base: String,
}

impl StorePath {
    /// Parses `<hash>-<name>`.
    pub fn from_base_name(base: &str) -> Result<Self, StorePathError> {
        let hash = base.get(..HASH_PART_LEN).ok_or(StorePathError::HashLength(
            base.len().min(HASH_PART_LEN - 1),
        ))?;
        HashPart::parse(hash)?;
        if base.as_bytes().get(HASH_PART_LEN) != Some(&b'-') {
            return Err(StorePathError::MissingDash);
        }
        validate_name(&base[HASH_PART_LEN + 1..])?;
        Ok(StorePath {
            base: base.to_owned(),
        })
    }

    pub fn hash_part(&self) -> HashPart {
        HashPart::parse(&self.base[..HASH_PART_LEN]).expect("validated at construction")
    }

    pub fn name(&self) -> &str {
        &self.base[HASH_PART_LEN + 1..]
    }

    /// `<hash>-<name>`, as narinfo `References` and `Deriver` carry it.
    pub fn base_name(&self) -> &str {
        &self.base
    }

    pub fn is_derivation(&self) -> bool {
        self.name().ends_with(".drv")
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({})", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "i9pmrzmpshapij2kin22pff6fc2adavx";

    #[test]
    fn parses_full_paths() {
        let dir = StoreDir::default();
        let p = dir
            .parse_path("/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt")
            .unwrap();
        assert_eq!(p.hash_part().as_str(), HASH);
        assert_eq!(p.name(), "hello.txt");
        assert_eq!(p.base_name(), format!("{HASH}-hello.txt"));
        assert_eq!(dir.display_path(&p), format!("/nix/store/{HASH}-hello.txt"));
        assert!(!p.is_derivation());
        assert!(StorePath::from_base_name(&format!("{HASH}-x.drv"))
            .unwrap()
            .is_derivation());
    }

    #[test]
    fn configurable_store_dir() {
        let dir = StoreDir::new("/gnu/store/").unwrap();
        assert_eq!(dir.as_str(), "/gnu/store");
        assert!(dir.parse_path(&format!("/gnu/store/{HASH}-a")).is_ok());
        assert_eq!(
            dir.parse_path(&format!("/nix/store/{HASH}-a")),
            Err(StorePathError::NotInStore("/gnu/store".into()))
        );
        for bad in ["relative", "/", "", "/a//b"] {
            assert!(StoreDir::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_bad_paths() {
        let dir = StoreDir::default();
        let cases: &[(&str, StorePathError)] = &[
            (
                "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-a/bin",
                StorePathError::NotInStore("/nix/store".into()),
            ),
            (
                "/nix/storei9pmrzmpshapij2kin22pff6fc2adavx-a",
                StorePathError::NotInStore("/nix/store".into()),
            ),
            (
                "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavxa",
                StorePathError::MissingDash,
            ),
            (
                "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-",
                StorePathError::EmptyName,
            ),
            (
                "/nix/store/e9pmrzmpshapij2kin22pff6fc2adavx-a",
                StorePathError::HashCharacter {
                    byte: b'e',
                    position: 0,
                },
            ),
            (
                "/nix/store/I9pmrzmpshapij2kin22pff6fc2adavx-a",
                StorePathError::HashCharacter {
                    byte: b'I',
                    position: 0,
                },
            ),
            ("/nix/store/short", StorePathError::HashLength(5)),
            (
                "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-a b",
                StorePathError::NameCharacter {
                    byte: b' ',
                    position: 1,
                },
            ),
            (
                "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-..",
                StorePathError::ReservedName("..".into()),
            ),
            (
                "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-.-x",
                StorePathError::ReservedName(".-x".into()),
            ),
        ];
        for (path, err) in cases {
            assert_eq!(dir.parse_path(path).as_ref(), Err(err), "{path}");
        }
    }

    #[test]
    fn name_rules() {
        assert!(validate_name(&"a".repeat(211)).is_ok());
        assert_eq!(
            validate_name(&"a".repeat(212)),
            Err(StorePathError::NameTooLong(212))
        );
        assert!(validate_name("Az09+-._?=").is_ok());
        assert!(validate_name(".hidden").is_ok());
        assert!(validate_name("ü").is_err());
    }

    #[test]
    fn hash_part_rules() {
        assert!(HashPart::parse(HASH).is_ok());
        assert_eq!(
            HashPart::parse(&HASH[1..]),
            Err(StorePathError::HashLength(31))
        );
        assert_eq!(
            HashPart::parse("i9pmrzmpshapij2kin22pff6fc2adav/"),
            Err(StorePathError::HashCharacter {
                byte: b'/',
                position: 31
            })
        );
    }

    #[test]
    fn orders_by_base_name_bytes() {
        let a = StorePath::from_base_name(&format!("{HASH}-B")).unwrap();
        let b = StorePath::from_base_name(&format!("{HASH}-a")).unwrap();
        assert!(a < b);
    }
}
