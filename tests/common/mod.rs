//! Shared by the integration tests that need a real Nix: the fixtures that
//! `scripts/setup-nix` makes. A test that needs them and finds none fails: it
//! never passes without having run.
#![allow(dead_code)]

use std::path::PathBuf;

/// The fixture directory (`$NIX_SERVE_SD_FIXTURES`, see `scripts/setup-nix`).
pub struct Fixtures {
    pub dir: PathBuf,
    /// `(name, full store path)`, in the order of `paths.tsv`.
    pub paths: Vec<(String, String)>,
}

impl Fixtures {
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
                let (name, path) = l.split_once('\t').expect("paths.tsv line is name<TAB>path");
                (name.to_owned(), path.to_owned())
            })
            .collect();
        assert!(
            paths.len() >= 15,
            "{} lists too few fixtures",
            tsv.display()
        );
        Fixtures { dir, paths }
    }

    /// The store path of fixture `name`.
    pub fn path(&self, name: &str) -> &str {
        self.paths
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("no fixture named {name}"))
    }

    pub fn key(&self, file: &str) -> PathBuf {
        self.dir.join("keys").join(file)
    }
}
