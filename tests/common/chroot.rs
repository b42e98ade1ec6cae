//! A chroot store that real Nix makes and fills in a scratch directory
//! (`local?root=<dir>`: files in `<dir>/nix/store`, state in `<dir>/nix/var`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{nix_command, output_of, run, write_file, Scratch};

pub struct ChrootStore {
    scratch: Scratch,
}

impl ChrootStore {
    /// An empty directory; Nix makes the store in it on the first `add`.
    pub fn new(tag: &str) -> Self {
        let scratch = Scratch::new(tag);
        fs::create_dir(scratch.join("src")).unwrap();
        ChrootStore { scratch }
    }

    pub fn root(&self) -> &Path {
        self.scratch.path()
    }

    /// The store URI naming it (`local?root=<dir>`).
    pub fn uri(&self) -> String {
        format!("local?root={}", self.root().display())
    }

    /// `nix-store --add` of a regular file `name` holding `contents`: its
    /// full (logical) store path.
    pub fn add(&self, name: &str, contents: &[u8]) -> String {
        let src = self.scratch.join("src").join(name);
        write_file(&src, contents, false);
        let out = run(Command::new("nix-store")
            .args(["--store", &self.uri(), "--add"])
            .arg(&src));
        out.trim().to_owned()
    }

    /// `nix store sign` of `path` with the key file `key`: the signature is
    /// stored in the database, as a cache's own signatures are.
    pub fn sign(&self, path: &str, key: &Path) {
        let key = key.to_str().expect("key path is UTF-8");
        let uri = self.uri();
        output_of(&mut nix_command(
            &["store", "sign", "--store", &uri, "--key-file", key],
            &[path],
        ));
    }

    /// `nix-store -q <query>` of `path` (`--hash` gives `sha256:<nix32>`).
    pub fn query(&self, query: &str, path: &str) -> String {
        let out = run(Command::new("nix-store").args(["--store", &self.uri(), "-q", query, path]));
        out.trim().to_owned()
    }

    /// `nix store dump-path`: Nix's NAR of `path` (`nix-store --dump` reads
    /// the machine's store whatever `--store` says).
    pub fn dump(&self, path: &str) -> Vec<u8> {
        let uri = self.uri();
        output_of(&mut nix_command(
            &["store", "dump-path", "--store", &uri],
            &[path],
        ))
    }

    /// Where the files of `path` really are, made writable (with their
    /// directory) so a test can change them behind Nix's back.
    pub fn writable_file(&self, path: &str) -> PathBuf {
        let real = self.root().join(path.trim_start_matches('/'));
        for p in [real.parent().unwrap(), &real] {
            let mode = fs::metadata(p).unwrap().permissions().mode();
            fs::set_permissions(p, fs::Permissions::from_mode(mode | 0o200)).unwrap();
        }
        real
    }
}
