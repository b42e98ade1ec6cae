//! The fixture directory `scripts/setup-nix` makes: `paths.tsv` (lines
//! `name<TAB>store path`) and `keys/` (Nix key files).

use std::path::{Path, PathBuf};

use nix_serve_sd::nix::store_path::{StoreDir, StorePath};

/// Every fixture `scripts/setup-nix` makes. A directory missing one was made
/// by an older setup-nix and would silently test less: `Fixtures::load`
/// refuses it.
pub const SETUP_NIX_FIXTURES: &[&str] = &[
    "empty",
    "big-10M",
    "big-10M-flat",
    "hello-exe",
    "empty-dir",
    "link-rel",
    "link-abs",
    "link-dangling",
    "link-dir",
    "tree",
    "text-with-ref",
    "dep-leaf",
    "dep-mid",
    "dep-top",
    "many-files",
    "compressible-10M",
    "multi-output.out",
    "multi-output.lib",
    "multi-output.dev",
    "multi-output.drv",
];

/// A hash part no store holds.
pub const ABSENT: &str = "00000000000000000000000000000000";

/// The hash part of a full store path: the first 32 characters of its base
/// name, what a narinfo URL is named by.
pub fn hash_part(full: &str) -> &str {
    let base = full.rsplit('/').next().unwrap_or_default();
    base.get(..32)
        .unwrap_or_else(|| panic!("{full:?} is not a store path"))
}

/// The fixture directory (`$NIX_SERVE_SD_FIXTURES`).
pub struct Fixtures {
    pub dir: PathBuf,
    /// `(name, full store path)`, in the order of `paths.tsv`.
    pub paths: Vec<(String, String)>,
}

impl Fixtures {
    /// Reads `paths.tsv`, panicking unless it lists every fixture in
    /// [`SETUP_NIX_FIXTURES`] and every path it lists exists.
    pub fn load() -> Fixtures {
        let dir = std::env::var_os("NIX_SERVE_SD_FIXTURES")
            .map(PathBuf::from)
            .expect(
                "NIX_SERVE_SD_FIXTURES is not set: this test needs a real Nix and the \
                 fixture store paths; run it through scripts/test",
            );
        let tsv = dir.join("paths.tsv");
        let text = std::fs::read_to_string(&tsv)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", tsv.display()));
        let paths: Vec<(String, String)> = text
            .lines()
            .map(|l| {
                let (name, path) = l
                    .split_once('\t')
                    .unwrap_or_else(|| panic!("{}: {l:?} is not name<TAB>path", tsv.display()));
                (name.to_owned(), path.to_owned())
            })
            .collect();
        for (name, path) in &paths {
            // symlink_metadata, not exists(): a fixture may be a dangling symlink.
            assert!(
                Path::new(path).symlink_metadata().is_ok(),
                "fixture {name}: {path} does not exist"
            );
        }
        let fixtures = Fixtures { dir, paths };
        fixtures.require(SETUP_NIX_FIXTURES);
        fixtures
    }

    /// Panics naming every one of `names` that `paths.tsv` lacks.
    pub fn require(&self, names: &[&str]) -> &Self {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|want| !self.paths.iter().any(|(n, _)| n == want))
            .collect();
        assert!(
            missing.is_empty(),
            "{}/paths.tsv lacks fixtures {missing:?}: rerun scripts/setup-nix",
            self.dir.display()
        );
        self
    }

    /// The full store path of fixture `name`.
    pub fn path(&self, name: &str) -> &str {
        self.paths
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("no fixture named {name}"))
    }

    /// Fixture `name` as a store path of the default store directory.
    pub fn store_path(&self, name: &str) -> StorePath {
        StoreDir::default().parse_path(self.path(name)).unwrap()
    }

    /// Every fixture as `(name, store path)`, in the order of `paths.tsv`.
    pub fn store_paths(&self) -> Vec<(&str, StorePath)> {
        let dir = StoreDir::default();
        (self.paths.iter())
            .map(|(n, p)| (n.as_str(), dir.parse_path(p).unwrap()))
            .collect()
    }

    /// Every fixture's full store path, in the order of `paths.tsv`.
    pub fn full_paths(&self) -> Vec<&str> {
        self.paths.iter().map(|(_, p)| p.as_str()).collect()
    }

    /// The key file `keys/<file>`, which must exist.
    pub fn key(&self, file: &str) -> PathBuf {
        let key = self.dir.join("keys").join(file);
        assert!(key.is_file(), "fixture key {} is missing", key.display());
        key
    }
}
