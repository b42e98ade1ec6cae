//! narinfo: rendering as nix-serve does (`nix-protocols.md` §4.3) and parsing
//! as Nix does (§4.1).
//!
//! The server only renders. The parser exists so that tests (and tools) can
//! read a narinfo back exactly as a Nix client would, quirks included.

use std::fmt::Write as _;

use thiserror::Error;

use super::compression::Compression;
use super::hash::{HashError, Sha256};
use super::path_info::PathInfo;
use super::store_path::{StoreDir, StorePath, StorePathError, HASH_PART_LEN};

/// Characters of a sha256 hash in nix32.
const NAR_HASH_NIX32_LEN: usize = 52;

/// What Nix assumes when `Compression` is missing or empty (§4.1).
pub const DEFAULT_COMPRESSION: &str = "bzip2";

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

/// `nar/<hashPart>-<narHash nix32>.nar`: nix-serve's NAR URL (§4.3, §10.4),
/// relative with no leading slash so both old and new clients resolve it
/// against the cache URL (§4.4).
pub fn nar_url(path: &StorePath, nar_hash: &Sha256) -> String {
    let mut out = String::with_capacity(nar_url_len());
    push_nar_url(&mut out, path, &nar_hash.to_nix32());
    out
}

const fn nar_url_len() -> usize {
    "nar/".len() + HASH_PART_LEN + "-".len() + NAR_HASH_NIX32_LEN + ".nar".len()
}

fn push_nar_url(out: &mut String, path: &StorePath, nar_hash_nix32: &str) {
    out.push_str("nar/");
    out.push_str(path.hash_part().as_str());
    out.push('-');
    out.push_str(nar_hash_nix32);
    out.push_str(".nar");
}

/// Renders `info` exactly as nix-serve does (§4.3), with one `Sig:` line per
/// element of `sigs` in the given order, and a `CA:` line when the path is
/// content-addressed (nix-serve omits it; clients accept an unsigned CA path
/// with it, §5.3).
///
/// A `Sig` or `CA` value containing `\n` or `\r` is left out: written as is
/// it would end its line early and let the rest be read as further keys
/// (§4.1). Neither format can contain them, so only a corrupt store does.
pub fn render(info: &PathInfo, store_dir: &StoreDir, sigs: &[String]) -> String {
    render_compressed(info, store_dir, sigs, Compression::None)
}

/// [`render`] for NARs served with `compression`: `URL: nar/….nar.zst` and
/// `Compression: zstd` for zstd. No `FileHash`/`FileSize`: the compressed
/// bytes are made while they stream, and Nix needs neither (§4.1).
pub fn render_compressed(
    info: &PathInfo,
    store_dir: &StoreDir,
    sigs: &[String],
    compression: Compression,
) -> String {
    let nar32 = info.nar_hash.to_nix32();
    let mut out = String::with_capacity(rendered_len_bound(info, store_dir, sigs));

    out.push_str("StorePath: ");
    out.push_str(store_dir.as_str());
    out.push('/');
    out.push_str(info.path.base_name());
    out.push_str("\nURL: ");
    push_nar_url(&mut out, &info.path, &nar32);
    out.push_str(compression.extension());
    // Always written: a missing Compression means bzip2 to Nix (§4.1).
    out.push_str("\nCompression: ");
    out.push_str(compression.name());
    out.push_str("\nNarHash: sha256:");
    out.push_str(&nar32);
    out.push_str("\nNarSize: ");
    // Writing a u64 into a String cannot fail.
    let _ = write!(out, "{}", info.nar_size);
    out.push('\n');

    // nix-serve writes References only when there are some; a bare
    // "References:\n" would make Nix swallow the next line (§4.1).
    if !info.references.is_empty() {
        out.push_str("References:");
        if info.references.windows(2).all(|w| w[0] <= w[1]) {
            push_base_names(&mut out, info.references.iter());
        } else {
            let mut sorted: Vec<&StorePath> = info.references.iter().collect();
            sorted.sort();
            push_base_names(&mut out, sorted.into_iter());
        }
        out.push('\n');
    }
    if let Some(deriver) = &info.deriver {
        out.push_str("Deriver: ");
        out.push_str(deriver.base_name());
        out.push('\n');
    }
    for sig in sigs.iter().filter(|s| is_single_line(s)) {
        out.push_str("Sig: ");
        out.push_str(sig);
        out.push('\n');
    }
    if let Some(ca) = info.ca.as_deref().filter(|ca| is_single_line(ca)) {
        out.push_str("CA: ");
        out.push_str(ca);
        out.push('\n');
    }
    out
}

fn push_base_names<'a>(out: &mut String, paths: impl Iterator<Item = &'a StorePath>) {
    for p in paths {
        out.push(' ');
        out.push_str(p.base_name());
    }
}

fn is_single_line(value: &str) -> bool {
    !value.contains(['\n', '\r'])
}

/// An upper bound on what [`render`] writes, so it allocates once.
fn rendered_len_bound(info: &PathInfo, store_dir: &StoreDir, sigs: &[String]) -> usize {
    const U64_DIGITS: usize = 20;
    let mut n = "StorePath: /\n".len() + store_dir.as_str().len() + info.path.base_name().len();
    n += "URL: \n".len() + nar_url_len() + ".zst".len();
    n += "Compression: none\n".len();
    n += "NarHash: sha256:\n".len() + NAR_HASH_NIX32_LEN;
    n += "NarSize: \n".len() + U64_DIGITS;
    if !info.references.is_empty() {
        n += "References:\n".len();
        n += info
            .references
            .iter()
            .map(|r| 1 + r.base_name().len())
            .sum::<usize>();
    }
    if let Some(d) = &info.deriver {
        n += "Deriver: \n".len() + d.base_name().len();
    }
    n += sigs
        .iter()
        .map(|s| "Sig: \n".len() + s.len())
        .sum::<usize>();
    if let Some(ca) = &info.ca {
        n += "CA: \n".len() + ca.len();
    }
    n
}

impl NarInfo {
    /// Parses with Nix's own line rules (§4.1, `NarInfo::NarInfo` in
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

#[cfg(test)]
#[path = "narinfo_tests.rs"]
mod tests;
