//! Scratch directories for trees and chroot stores the tests make.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// A new directory under the system temp dir, mode 0755 whatever the umask
/// (a test runs part of itself as `nobody` in one), removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    /// `tag` names the test in the directory's name, for whoever finds one
    /// left behind.
    pub fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let name = format!("nix-serve-sd-{tag}-{}-{nanos}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        // create_dir, not create_dir_all: fails if it already exists.
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `name` inside the scratch directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Nix makes store contents read-only; give write access back first.
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(&self.0)
            .status();
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A regular file, executable or not: the two kinds Nix keeps apart (the
/// NAR's `executable` flag); mode 0644 or 0755 whatever the umask.
pub fn write_file(path: &Path, contents: &[u8], executable: bool) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mode = if executable { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}
