//! ValidPathInfo on the wire: the QueryPathInfo reply (`docs/protocols.md` §7.7).
//! Pure: reads from any `Read`.

use std::io::Read;

use thiserror::Error;

use super::version::ProtocolVersion;
use crate::nix::hash::{HashError, Sha256};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{StoreDir, StorePath, StorePathError, HASH_PART_LEN, MAX_NAME_LEN};
use crate::store::wire::{self, Bound, WireError};

/// Direct references of one path. The biggest real closures have tens of
/// thousands of paths, but no path refers to more than a few thousand itself.
pub const MAX_REFERENCES: usize = 100_000;
/// Signatures on one path: one per cache that signed it, a handful at most.
const MAX_SIGS: usize = 1_000;
/// The longest sha256 form is `sha256:` plus 64 hex digits.
const NAR_HASH: Bound = Bound::new("narHash", 256);
/// `name:` plus 88 base64 characters; key names are short.
const SIGNATURE: Bound = Bound::new("signature", 1024);
/// `fixed:r:sha512:<base64>` is the longest content address, under 128 bytes.
const CA: Bound = Bound::new("content address", 1024);

#[derive(Debug, Error)]
pub enum PathInfoError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{field} {value:?}: {source}")]
    Path {
        field: &'static str,
        value: String,
        #[source]
        source: StorePathError,
    },
    #[error("narHash {value:?}: {source}")]
    NarHash {
        value: String,
        #[source]
        source: HashError,
    },
}

/// The longest full path in `dir`: no string we read as a path may be longer.
pub fn path_bound(dir: &StoreDir) -> Bound {
    Bound::new(
        "store path",
        dir.as_str().len() + 1 + HASH_PART_LEN + 1 + MAX_NAME_LEN,
    )
}

/// A full path sent by the daemon.
pub fn parse_path(
    dir: &StoreDir,
    field: &'static str,
    full: String,
) -> Result<StorePath, PathInfoError> {
    dir.parse_path(&full).map_err(|source| PathInfoError::Path {
        field,
        value: full,
        source,
    })
}

/// A full path or `""` for none (docs/protocols.md §7.2).
pub fn parse_optional_path(
    dir: &StoreDir,
    field: &'static str,
    full: String,
) -> Result<Option<StorePath>, PathInfoError> {
    if full.is_empty() {
        return Ok(None);
    }
    parse_path(dir, field, full).map(Some)
}

/// Reads the ValidPathInfo of `path` (what follows the `valid = 1` flag).
pub fn read(
    r: &mut impl Read,
    version: ProtocolVersion,
    dir: &StoreDir,
    path: &StorePath,
) -> Result<PathInfo, PathInfoError> {
    let paths = path_bound(dir);
    let deriver = parse_optional_path(dir, "deriver", wire::read_string(r, paths)?)?;
    let hash = wire::read_string(r, NAR_HASH)?;
    let nar_hash = Sha256::parse_any(&hash).map_err(|source| PathInfoError::NarHash {
        value: hash,
        source,
    })?;
    let mut references = wire::read_string_list(r, MAX_REFERENCES, paths)?
        .into_iter()
        .map(|full| parse_path(dir, "reference", full))
        .collect::<Result<Vec<_>, _>>()?;
    // PathInfo promises base-name order; Nix sends a sorted set, but we do
    // not rely on the peer for an invariant of ours.
    references.sort();
    let registration_time = wire::read_u64(r)?;
    let nar_size = wire::read_u64(r)?;
    let (ultimate, sigs, ca) = if version >= ProtocolVersion::PATH_INFO_SIGS {
        let ultimate = wire::read_bool(r, "ultimate")?;
        let sigs = wire::read_string_list(r, MAX_SIGS, SIGNATURE)?;
        let ca = wire::read_string(r, CA)?;
        (ultimate, sigs, Some(ca).filter(|ca| !ca.is_empty()))
    } else {
        (false, Vec::new(), None)
    };
    Ok(PathInfo {
        path: path.clone(),
        deriver,
        nar_hash,
        nar_size,
        references,
        registration_time,
        ultimate,
        sigs,
        ca,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::wire::test_bytes::{s, u};

    const V: ProtocolVersion = ProtocolVersion::new(1, 34);
    const HELLO: &str = "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt";
    const REF: &str = "/nix/store/wmm9hngfwxsjqpiy50lligndn8n83f6w-ref.txt";
    const CA_TEXT: &str = "text:sha256:1sn3ap5rcl7ai63rmink9spijl8kykz8v44axykd8cnkgb387pd2";

    /// A reply shaped like the VERIFIED 2.8 one of docs/protocols.md §7.7 for `ref.txt`.
    fn reply(deriver: &str, hash: &str, refs: &[&str], ca: &str) -> Vec<u8> {
        let mut out = [s(deriver), s(hash), u(refs.len() as u64)].concat();
        for r in refs {
            out.extend(s(r));
        }
        out.extend(
            [
                u(1795552971),
                u(176),
                u(0),
                u(1),
                s("test-cache-1:sig"),
                s(ca),
            ]
            .concat(),
        );
        out
    }

    fn decode(bytes: &[u8]) -> Result<PathInfo, PathInfoError> {
        let dir = StoreDir::default();
        let mut r = bytes;
        let info = read(&mut r, V, &dir, &dir.parse_path(REF).unwrap())?;
        assert!(r.is_empty(), "reply fully consumed");
        Ok(info)
    }

    #[test]
    fn decodes_a_2_8_reply() {
        let hash16 = "27b5fa1cdd24a35c0bbb4fc9da72a0b1c58cfed5e81d34468c30c16cbd1ad60d";
        let info = decode(&reply("", hash16, &[HELLO], CA_TEXT)).unwrap();
        let dir = StoreDir::default();
        assert_eq!(info.path, dir.parse_path(REF).unwrap());
        assert_eq!(info.deriver, None);
        assert_eq!(info.nar_hash.to_base16(), hash16);
        assert_eq!(info.references, [dir.parse_path(HELLO).unwrap()]);
        assert_eq!(info.registration_time, 1795552971);
        assert_eq!(info.nar_size, 176);
        assert!(!info.ultimate);
        assert_eq!(info.sigs, ["test-cache-1:sig"]);
        assert_eq!(info.ca.as_deref(), Some(CA_TEXT));
    }

    #[test]
    fn optional_fields_and_order() {
        let drv = "/nix/store/lhl6i1k4kgf7rmxiadhmv7g70vdlf52k-dep-top.drv";
        let nix32 = "sha256:1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl";
        let info = decode(&reply(drv, nix32, &[REF, HELLO], "")).unwrap();
        assert_eq!(info.deriver.unwrap().name(), "dep-top.drv");
        assert_eq!(info.nar_hash.to_prefixed_nix32(), nix32);
        assert_eq!(info.ca, None);
        let names: Vec<&str> = info.references.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["hello.txt", "ref.txt"], "sorted by base name");
    }

    #[test]
    fn bad_data_is_an_error() {
        let hash = "27b5fa1cdd24a35c0bbb4fc9da72a0b1c58cfed5e81d34468c30c16cbd1ad60d";
        let cases = [
            ("bad hash", reply("", "sha1:abc", &[], "")),
            ("short hash", reply("", &hash[1..], &[], "")),
            ("empty reference", reply("", hash, &[""], "")),
            ("foreign deriver", reply("/gnu/store/x", hash, &[], "")),
            ("relative reference", reply("", hash, &["ref.txt"], "")),
            (
                "too long path",
                reply(&format!("{REF}{}", "x".repeat(300)), hash, &[], ""),
            ),
        ];
        for (name, bytes) in cases {
            assert!(decode(&bytes).is_err(), "{name}");
        }
        let mut truncated = reply("", hash, &[], "");
        truncated.truncate(truncated.len() - 8);
        assert!(matches!(decode(&truncated), Err(PathInfoError::Wire(_))));
        let too_many = [s(""), s(hash), u(MAX_REFERENCES as u64 + 1)].concat();
        assert!(matches!(
            decode(&too_many),
            Err(PathInfoError::Wire(WireError::TooMany { .. }))
        ));
    }
}
