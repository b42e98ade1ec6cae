//! One `ValidPaths` row as SQLite returns it, and its reading as a
//! [`PathInfo`] under Nix's column rules (`docs/protocols.md` §8). Pure: the
//! connection lives in `local.rs`.

use rusqlite::Row;
use thiserror::Error;

use crate::nix::hash::{HashError, Sha256};
use crate::nix::path_info::PathInfo;
use crate::nix::store_path::{StoreDir, StorePathError};

/// A row of the database that does not read as Nix would write it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RowError {
    #[error("path {path:?}: {source}")]
    Path {
        path: String,
        #[source]
        source: StorePathError,
    },
    #[error("{path}: hash {hash:?}: {source}")]
    Hash {
        path: String,
        hash: String,
        #[source]
        source: HashError,
    },
    #[error("{path}: deriver {deriver:?}: {source}")]
    Deriver {
        path: String,
        deriver: String,
        #[source]
        source: StorePathError,
    },
    #[error("{path}: reference {reference:?}: {source}")]
    Reference {
        path: String,
        reference: String,
        #[source]
        source: StorePathError,
    },
    #[error("{path}: {column} is negative ({value})")]
    Negative {
        path: String,
        column: &'static str,
        value: i64,
    },
}

/// The raw columns of an info query (`info_query!` in `local.rs`); SQLite's dynamic types are checked by
/// rusqlite when the row is read (a blob where text belongs is an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RawRow {
    pub id: i64,
    pub path: String,
    pub hash: String,
    pub registration_time: i64,
    pub deriver: Option<String>,
    pub nar_size: Option<i64>,
    pub ultimate: Option<i64>,
    pub sigs: Option<String>,
    pub ca: Option<String>,
}

impl RawRow {
    pub(super) fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawRow {
            id: row.get(0)?,
            path: row.get(1)?,
            hash: row.get(2)?,
            registration_time: row.get(3)?,
            deriver: row.get(4)?,
            nar_size: row.get(5)?,
            ultimate: row.get(6)?,
            sigs: row.get(7)?,
            ca: row.get(8)?,
        })
    }

    /// Nix's reading (`LocalStore::queryPathInfoInternal`): `narSize` NULL is
    /// 0 (unknown), `ultimate` NULL is false, `sigs` is split on spaces, an
    /// empty `ca` is none. `references` are full paths from the Refs query.
    pub(super) fn into_info(
        self,
        dir: &StoreDir,
        references: Vec<String>,
    ) -> Result<PathInfo, RowError> {
        let path = dir
            .parse_path(&self.path)
            .map_err(|source| RowError::Path {
                path: self.path.clone(),
                source,
            })?;
        let nar_hash = Sha256::parse_prefixed(&self.hash).map_err(|source| RowError::Hash {
            path: self.path.clone(),
            hash: self.hash.clone(),
            source,
        })?;
        let deriver = match self.deriver.as_deref() {
            // Nix never writes an empty deriver; reading it as "none" is
            // harmless, unlike refusing the path.
            None | Some("") => None,
            Some(d) => Some(dir.parse_path(d).map_err(|source| RowError::Deriver {
                path: self.path.clone(),
                deriver: d.to_owned(),
                source,
            })?),
        };
        let mut refs = references
            .into_iter()
            .map(|r| {
                dir.parse_path(&r).map_err(|source| RowError::Reference {
                    path: self.path.clone(),
                    reference: r.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        refs.sort();
        let non_negative = |column, value: i64| {
            u64::try_from(value).map_err(|_| RowError::Negative {
                path: self.path.clone(),
                column,
                value,
            })
        };
        Ok(PathInfo {
            nar_size: non_negative("narSize", self.nar_size.unwrap_or(0))?,
            registration_time: non_negative("registrationTime", self.registration_time)?,
            path,
            deriver,
            nar_hash,
            references: refs,
            ultimate: self.ultimate.unwrap_or(0) != 0,
            sigs: self
                .sigs
                .as_deref()
                .unwrap_or("")
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            ca: self.ca.filter(|ca| !ca.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::store_path::StorePath;

    const P: &str = "/nix/store/wmm9hngfwxsjqpiy50lligndn8n83f6w-ref.txt";
    const R: &str = "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt";
    const D: &str = "/nix/store/5z4dzl54ci5l9n35fy3hl4bw8h2w2l44-multi-output.drv";
    /// The database's spelling of the NAR hash of `P` (docs/protocols.md §7.7, base16).
    const HASH16: &str = "sha256:5412b0b0b18448967acb7ebc7822c77c446c9ba7ccea468b1b3b63219a2edfea";

    fn row() -> RawRow {
        RawRow {
            id: 7,
            path: P.into(),
            hash: HASH16.into(),
            registration_time: 1795552971,
            deriver: None,
            nar_size: Some(176),
            ultimate: None,
            sigs: None,
            ca: None,
        }
    }

    fn base(p: &str) -> StorePath {
        StoreDir::default().parse_path(p).unwrap()
    }

    #[test]
    fn reads_columns_as_nix_does() {
        let dir = StoreDir::default();
        type Case = (fn(&mut RawRow), fn(&PathInfo) -> bool, &'static str);
        let cases: &[Case] = &[
            (|_| {}, |i| i.nar_size == 176 && !i.ultimate, "plain row"),
            (|r| r.nar_size = None, |i| i.nar_size == 0, "narSize NULL"),
            (|r| r.ultimate = Some(1), |i| i.ultimate, "ultimate 1"),
            (|r| r.ultimate = Some(0), |i| !i.ultimate, "ultimate 0"),
            (|r| r.sigs = None, |i| i.sigs.is_empty(), "sigs NULL"),
            (
                |r| r.sigs = Some(String::new()),
                |i| i.sigs.is_empty(),
                "sigs empty",
            ),
            (
                |r| r.sigs = Some("a:AA== b:BB==".into()),
                |i| i.sigs == ["a:AA==", "b:BB=="],
                "two sigs",
            ),
            (
                |r| r.sigs = Some(" a:AA==  ".into()),
                |i| i.sigs == ["a:AA=="],
                "stray spaces",
            ),
            (
                |r| r.ca = Some(String::new()),
                |i| i.ca.is_none(),
                "ca empty",
            ),
            (
                |r| r.ca = Some("text:sha256:x".into()),
                |i| i.ca.as_deref() == Some("text:sha256:x"),
                "ca set",
            ),
            (
                |r| r.deriver = None,
                |i| i.deriver.is_none(),
                "deriver NULL",
            ),
            (
                |r| r.deriver = Some(String::new()),
                |i| i.deriver.is_none(),
                "deriver empty",
            ),
            (
                |r| r.deriver = Some(D.into()),
                |i| i.deriver.as_ref().map(StorePath::name) == Some("multi-output.drv"),
                "deriver set",
            ),
            (
                |r| r.hash = "sha256:1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl".into(),
                |i| i.nar_hash.to_base16() == HASH16[7..],
                "nix32 hash accepted",
            ),
        ];
        for (edit, check, what) in cases {
            let mut r = row();
            edit(&mut r);
            let info = r.into_info(&dir, vec![]).unwrap();
            assert!(check(&info), "{what}: {info:?}");
            assert_eq!(info.path, base(P), "{what}");
        }
    }

    #[test]
    fn hash_reads_as_the_golden_nar_hash() {
        let info = row().into_info(&StoreDir::default(), vec![]).unwrap();
        assert_eq!(
            info.nar_hash.to_prefixed_nix32(),
            "sha256:1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl"
        );
        assert_eq!(info.registration_time, 1795552971);
    }

    #[test]
    fn references_are_sorted_self_reference_kept() {
        let info = row()
            .into_info(&StoreDir::default(), vec![P.into(), R.into()])
            .unwrap();
        assert_eq!(info.references, vec![base(R), base(P)]);
    }

    #[test]
    fn bad_rows_are_errors_naming_the_field() {
        let dir = StoreDir::default();
        let bad = |edit: fn(&mut RawRow), refs: Vec<String>| {
            let mut r = row();
            edit(&mut r);
            r.into_info(&dir, refs).unwrap_err()
        };
        assert!(matches!(
            bad(|r| r.path = "/nix/store/short".into(), vec![]),
            RowError::Path { .. }
        ));
        assert!(matches!(
            bad(
                |r| r.path = "/gnu/store/wmm9hngfwxsjqpiy50lligndn8n83f6w-a".into(),
                vec![]
            ),
            RowError::Path { .. }
        ));
        assert!(matches!(
            bad(|r| r.hash = "md5:0000".into(), vec![]),
            RowError::Hash { .. }
        ));
        assert!(matches!(
            bad(|r| r.deriver = Some("x.drv".into()), vec![]),
            RowError::Deriver { .. }
        ));
        assert!(matches!(
            bad(|_| {}, vec!["/nix/store/bad".into()]),
            RowError::Reference { .. }
        ));
        assert_eq!(
            bad(|r| r.nar_size = Some(-1), vec![]),
            RowError::Negative {
                path: P.into(),
                column: "narSize",
                value: -1
            }
        );
        assert!(matches!(
            bad(|r| r.registration_time = -5, vec![]),
            RowError::Negative {
                column: "registrationTime",
                ..
            }
        ));
    }
}
