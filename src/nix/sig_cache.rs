//! A small memo of `Sig:` lines by fingerprint.
//!
//! Ed25519 signatures are deterministic (`docs/protocols.md` §5.2), so a
//! remembered signature is byte for byte the one signing again would give.
//! Signing was a quarter of the server's CPU on repeated narinfo requests
//! (bench/README.md, `perf` of 2026-11-25). One memo per worker: no lock on
//! the hot path; bounded, so a scan of a large store cannot grow it.

use crate::bounded::BoundedMap;

use super::signing::SecretKey;

/// Entries one memo holds before it starts over (about 300 bytes each, a
/// third of a megabyte per worker): fewer than the narinfo replies a worker
/// keeps, since it is asked only when a reply is not remembered (after a
/// change of the store, mostly).
const SIGNED: usize = 1024;

pub struct SigCache {
    by_fingerprint: BoundedMap<String, Vec<String>>,
}

impl Default for SigCache {
    fn default() -> Self {
        SigCache {
            by_fingerprint: BoundedMap::new(SIGNED),
        }
    }
}

impl SigCache {
    /// The `Sig:` values of `keys` (in their order) over `fingerprint`. The
    /// keys must be the same on every call: the process's keys, read once.
    pub fn signatures(&mut self, keys: &[SecretKey], fingerprint: String) -> &[String] {
        self.by_fingerprint
            .get_or_insert_with(fingerprint, |fp| keys.iter().map(|k| k.sign(fp)).collect())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_fingerprint.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The docs/protocols.md §5.3 test key and fingerprint (a).
    const SECRET: &str = "test-cache-1:FJHot+xBwwdaU6W5DUXXFJOfUdnPmAfasjihN7wK2/xDXLbXhV7FiiSbrkFeHUnzgLkRm6xKsCJAwi7MxtJUQg==";
    const FP_A: &str = "1;/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt;sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw;120;";
    const SIG_A: &str = "test-cache-1:efNYGuSlHTRRw8WPYlN6SFAWMdBu/wAQkt5joLvIKrMJBsTNBineWxpkJEpHa/OdhZ81nJM9Axpyp6aZu5isAQ==";

    #[test]
    fn remembers_exactly_what_signing_gives() {
        let keys = [SecretKey::parse(SECRET).unwrap()];
        let mut cache = SigCache::default();
        assert_eq!(cache.signatures(&keys, FP_A.into()), [SIG_A.to_string()]);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.signatures(&keys, FP_A.into()), [SIG_A.to_string()]);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn no_keys_no_signatures() {
        let mut cache = SigCache::default();
        assert!(cache.signatures(&[], FP_A.into()).is_empty());
    }
}
