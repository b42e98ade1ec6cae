//! What the store knows about one valid path (`docs/protocols.md` §7.7, §8),
//! and its signing fingerprint (docs/protocols.md §5.1).

use super::hash::Sha256;
use super::store_path::{StoreDir, StorePath};

/// Metadata of a valid store path, whatever backend it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    pub deriver: Option<StorePath>,
    pub nar_hash: Sha256,
    pub nar_size: u64,
    /// Sorted by base name, self-reference included.
    pub references: Vec<StorePath>,
    pub registration_time: u64,
    pub ultimate: bool,
    /// `name:base64` strings as stored.
    pub sigs: Vec<String>,
    /// Content address, e.g. `fixed:r:sha256:<nix32>`, when the path has one.
    pub ca: Option<String>,
}

impl PathInfo {
    /// `1;<path>;sha256:<nix32>;<narSize>;<refs joined by ','>` with full,
    /// sorted reference paths (docs/protocols.md §5.1). What Ed25519 signs.
    pub fn fingerprint(&self, store_dir: &StoreDir) -> String {
        let mut refs: Vec<&StorePath> = self.references.iter().collect();
        refs.sort();
        let refs: Vec<String> = refs.iter().map(|r| store_dir.display_path(r)).collect();
        format!(
            "1;{};{};{};{}",
            store_dir.display_path(&self.path),
            self.nar_hash.to_prefixed_nix32(),
            self.nar_size,
            refs.join(",")
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Path (b) of `docs/protocols.md` §5.3: a text path with one reference.
    pub(crate) fn ref_txt() -> PathInfo {
        let dir = StoreDir::default();
        PathInfo {
            path: dir
                .parse_path("/nix/store/wmm9hngfwxsjqpiy50lligndn8n83f6w-ref.txt")
                .unwrap(),
            deriver: None,
            nar_hash: Sha256::parse_prefixed(
                "sha256:1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl",
            )
            .unwrap(),
            nar_size: 176,
            references: vec![dir
                .parse_path("/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt")
                .unwrap()],
            registration_time: 1795552971,
            ultimate: false,
            sigs: vec![],
            ca: Some("text:sha256:1sn3ap5rcl7ai63rmink9spijl8kykz8v44axykd8cnkgb387pd2".into()),
        }
    }

    #[test]
    fn golden_fingerprints() {
        assert_eq!(
            ref_txt().fingerprint(&StoreDir::default()),
            "1;/nix/store/wmm9hngfwxsjqpiy50lligndn8n83f6w-ref.txt;\
             sha256:1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl;176;\
             /nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt"
        );
        let mut hello = ref_txt();
        hello.path =
            StorePath::from_base_name("i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt").unwrap();
        hello.nar_hash =
            Sha256::parse_prefixed("sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw")
                .unwrap();
        hello.nar_size = 120;
        hello.references.clear();
        assert_eq!(
            hello.fingerprint(&StoreDir::default()),
            "1;/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt;\
             sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw;120;"
        );
    }
}
