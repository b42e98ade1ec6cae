//! narinfo: rendering as nix-serve does (`docs/protocols.md` §4.3).
//!
//! `narinfo/parse.rs` parses as Nix does (docs/protocols.md §4.1), quirks included: the
//! server reads upstream caches' narinfos with it, and the tests read our
//! narinfo back exactly as a Nix client would.

use std::fmt::Write as _;

use super::compression::Compression;
use super::path_info::PathInfo;
use super::store_path::{StoreDir, StorePath, HASH_PART_LEN};

/// Characters of a sha256 hash in nix32.
const NAR_HASH_NIX32_LEN: usize = 52;

/// `nar/<hashPart>-<narHash nix32>.nar`: nix-serve's NAR URL (docs/protocols.md §4.3, §10.4),
/// relative with no leading slash so both old and new clients resolve it
/// against the cache URL (docs/protocols.md §4.4).
#[cfg(any(test, feature = "testing"))]
pub fn nar_url(path: &StorePath, nar_hash: &super::hash::Sha256) -> String {
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

/// Renders `info` exactly as nix-serve does (docs/protocols.md §4.3), with one `Sig:` line per
/// element of `sigs` in the given order, and a `CA:` line when the path is
/// content-addressed (nix-serve omits it; clients accept an unsigned CA path
/// with it, docs/protocols.md §5.3).
///
/// A `Sig` or `CA` value containing `\n` or `\r` is left out: written as is
/// it would end its line early and let the rest be read as further keys
/// (docs/protocols.md §4.1). Neither format can contain them, so only a corrupt store does.
pub fn render(info: &PathInfo, store_dir: &StoreDir, sigs: &[impl AsRef<str>]) -> String {
    render_compressed(info, store_dir, sigs, Compression::None)
}

/// [`render`] for NARs served with `compression`: `URL: nar/….nar.zst` and
/// `Compression: zstd` for zstd. No `FileHash`/`FileSize`: the compressed
/// bytes are made while they stream, and Nix needs neither (docs/protocols.md §4.1).
pub fn render_compressed(
    info: &PathInfo,
    store_dir: &StoreDir,
    sigs: &[impl AsRef<str>],
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
    // Always written: a missing Compression means bzip2 to Nix (docs/protocols.md §4.1).
    out.push_str("\nCompression: ");
    out.push_str(compression.name());
    out.push_str("\nNarHash: sha256:");
    out.push_str(&nar32);
    out.push_str("\nNarSize: ");
    // Writing a u64 into a String cannot fail.
    let _ = write!(out, "{}", info.nar_size);
    out.push('\n');

    // nix-serve writes References only when there are some; a bare
    // "References:\n" would make Nix swallow the next line (docs/protocols.md §4.1).
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
    for sig in sigs.iter().map(AsRef::as_ref).filter(|s| is_single_line(s)) {
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
fn rendered_len_bound(info: &PathInfo, store_dir: &StoreDir, sigs: &[impl AsRef<str>]) -> usize {
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
        .map(|s| "Sig: \n".len() + s.as_ref().len())
        .sum::<usize>();
    if let Some(ca) = &info.ca {
        n += "CA: \n".len() + ca.len();
    }
    n
}

// Nix's parser: for the narinfos of upstream caches, and for the tests
// that read our narinfo back as a client would.
pub mod parse;

#[cfg(test)]
mod tests;
