//! Parsing a narinfo as Nix does (`docs/protocols.md` §4.1, `nar-info.cc`),
//! quirks included: the oracle the rendering tests read our output back
//! with, and how the server reads an upstream cache's narinfo (pull-through).

use thiserror::Error;

use crate::nix::hash::{HashError, Sha256};
use crate::nix::store_path::{StoreDir, StorePath, StorePathError};

/// What Nix assumes when `Compression` is missing or empty (docs/protocols.md §4.1).
const DEFAULT_COMPRESSION: &str = "bzip2";

/// Why a narinfo is corrupt. `line` is 1-based and names the line where the
/// offending `Key:` starts.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NarInfoError {
    #[error("narinfo line {line}: expecting ':'")]
    NoColon { line: usize },
    #[error("narinfo line {line}: expecting '\\n' (every line, the last included, must end in a newline)")]
    NoNewline { line: usize },
    #[error("narinfo line {line}: value does not start on a character boundary")]
    SplitCharacter { line: usize },
    #[error("narinfo line {line}: StorePath: {source}")]
    StorePath {
        line: usize,
        #[source]
        source: StorePathError,
    },
    #[error("narinfo line {line}: References: {source}")]
    Reference {
        line: usize,
        #[source]
        source: StorePathError,
    },
    #[error("narinfo line {line}: Deriver: {source}")]
    Deriver {
        line: usize,
        #[source]
        source: StorePathError,
    },
    #[error("narinfo line {line}: bad hash in {field}: {source}")]
    Hash {
        line: usize,
        field: &'static str,
        #[source]
        source: HashError,
    },
    #[error("narinfo line {line}: invalid {field} (expected a decimal number)")]
    Number { line: usize, field: &'static str },
    #[error("narinfo line {line}: extra References")]
    ExtraReferences { line: usize },
    #[error("narinfo line {line}: extra CA")]
    ExtraCa { line: usize },
    #[error(
        "narinfo line {line}: unrecognised content address (expected \"text:\" or \"fixed:\")"
    )]
    Ca { line: usize },
    #[error("narinfo lacks {0}")]
    Missing(&'static str),
    #[error("narinfo NarSize is zero")]
    ZeroNarSize,
}

/// A parsed narinfo (what a binary cache serves for `/<hash>.narinfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: StorePath,
    pub url: String,
    /// As written; [`DEFAULT_COMPRESSION`] when missing or empty.
    pub compression: String,
    /// `sha256:<…>` as written, validated.
    pub file_hash: Option<String>,
    pub file_size: Option<u64>,
    pub nar_hash: Sha256,
    pub nar_size: u64,
    /// A set, as Nix holds it: sorted, no duplicates.
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    pub system: Option<String>,
    /// A set, as Nix holds it: sorted, no duplicates.
    pub sigs: Vec<String>,
    pub ca: Option<String>,
}

impl NarInfo {
    /// Parses with Nix's own line rules (docs/protocols.md §4.1, `NarInfo::NarInfo` in
    /// `nar-info.cc`), quirks included:
    /// - the key runs from the line start to the next `:`, even across a
    ///   newline (a line without `:` glues onto the next as an unknown key);
    /// - the value starts two bytes after the colon and runs to the next
    ///   `\n`, untrimmed; so every line, the last included, must end in `\n`;
    /// - unknown keys are ignored; a repeated key overwrites, except a
    ///   second References after a non-empty one, or a second CA after a
    ///   non-empty one, which are errors.
    ///
    /// Stricter than Nix 2.8 only where Nix would accept a value that no
    /// writer produces: `FileHash` must be sha256, and `CA` must start with
    /// `text:` or `fixed:` (Nix parses the whole content address).
    pub fn parse(text: &str, store_dir: &StoreDir) -> Result<NarInfo, NarInfoError> {
        let bytes = text.as_bytes();
        let mut store_path = None;
        let mut url = String::new();
        let mut compression = String::new();
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = 0;
        let mut references: Vec<StorePath> = Vec::new();
        let mut deriver = None;
        let mut system = None;
        let mut sigs: Vec<String> = Vec::new();
        let mut ca: Option<String> = None;

        let mut pos = 0;
        let mut line = 1;
        while pos < bytes.len() {
            let colon = find(bytes, b':', pos).ok_or(NarInfoError::NoColon { line })?;
            let start = colon + 2;
            let eol = find(bytes, b'\n', start).ok_or(NarInfoError::NoNewline { line })?;
            let key = &text[pos..colon];
            let value = text
                .get(start..eol)
                .ok_or(NarInfoError::SplitCharacter { line })?;

            match key {
                "StorePath" => {
                    let p = store_dir
                        .parse_path(value)
                        .map_err(|source| NarInfoError::StorePath { line, source })?;
                    store_path = Some(p);
                }
                "URL" => url = value.to_owned(),
                "Compression" => compression = value.to_owned(),
                "FileHash" => {
                    Sha256::parse_prefixed(value).map_err(|source| NarInfoError::Hash {
                        line,
                        field: "FileHash",
                        source,
                    })?;
                    file_hash = Some(value.to_owned());
                }
                "FileSize" => file_size = Some(parse_u64(value, line, "FileSize")?),
                "NarHash" => {
                    let h = Sha256::parse_prefixed(value).map_err(|source| NarInfoError::Hash {
                        line,
                        field: "NarHash",
                        source,
                    })?;
                    nar_hash = Some(h);
                }
                "NarSize" => nar_size = parse_u64(value, line, "NarSize")?,
                "References" => {
                    if !references.is_empty() {
                        return Err(NarInfoError::ExtraReferences { line });
                    }
                    for base in value.split(' ').filter(|t| !t.is_empty()) {
                        let r = StorePath::from_base_name(base)
                            .map_err(|source| NarInfoError::Reference { line, source })?;
                        references.push(r);
                    }
                }
                "Deriver" if value != "unknown-deriver" => {
                    let d = StorePath::from_base_name(value)
                        .map_err(|source| NarInfoError::Deriver { line, source })?;
                    deriver = Some(d);
                }
                "System" => system = Some(value.to_owned()),
                "Sig" => sigs.push(value.to_owned()),
                "CA" => {
                    if ca.is_some() {
                        return Err(NarInfoError::ExtraCa { line });
                    }
                    // An empty CA means none, and does not block a later one.
                    if !value.is_empty() {
                        if !(value.starts_with("text:") || value.starts_with("fixed:")) {
                            return Err(NarInfoError::Ca { line });
                        }
                        ca = Some(value.to_owned());
                    }
                }
                _ => {}
            }
            line += bytes[pos..=eol].iter().filter(|&&b| b == b'\n').count();
            pos = eol + 1;
        }

        let store_path = store_path.ok_or(NarInfoError::Missing("StorePath"))?;
        let nar_hash = nar_hash.ok_or(NarInfoError::Missing("NarHash"))?;
        if url.is_empty() {
            return Err(NarInfoError::Missing("URL"));
        }
        if nar_size == 0 {
            return Err(NarInfoError::ZeroNarSize);
        }
        if compression.is_empty() {
            compression = DEFAULT_COMPRESSION.to_owned();
        }
        references.sort();
        references.dedup();
        sigs.sort();
        sigs.dedup();
        Ok(NarInfo {
            store_path,
            url,
            compression,
            file_hash,
            file_size,
            nar_hash,
            nar_size,
            references,
            deriver,
            system,
            sigs,
            ca,
        })
    }
}

fn find(bytes: &[u8], needle: u8, from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    rest.iter().position(|&b| b == needle).map(|i| from + i)
}

/// Nix's `string2Int`: plain decimal digits, no sign, no spaces, must fit.
fn parse_u64(value: &str, line: usize, field: &'static str) -> Result<u64, NarInfoError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NarInfoError::Number { line, field });
    }
    value
        .parse()
        .map_err(|_| NarInfoError::Number { line, field })
}
