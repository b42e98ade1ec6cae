//! Build logs: the file Nix wrote for a derivation under the store's log
//! directory (`docs/protocols.md` §9), opened for streaming.
//!
//! Only a validated store-path base name (`<hash>-<name>.drv`: nix32 and
//! `A-Za-z0-9+-._?=`, no `/`, never `.` or `..`) ever becomes part of a path
//! here, and the file itself is opened with `O_NOFOLLOW`: nothing outside
//! `<log dir>/drvs` can be reached, whatever a URL says.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bzip2::read::MultiBzDecoder;

use crate::nix::store_path::StorePath;

use super::StoreError;

/// Nix's log directory when `NIX_LOG_DIR` is not set (docs/protocols.md §9).
pub const DEFAULT_LOG_DIR: &str = "/nix/var/log/nix";

/// An open build log.
pub enum BuildLog {
    /// A plain file of `len` bytes (its size when opened).
    Plain { file: File, len: u64 },
    /// A `.bz2` file, decompressed as it is read: the length is known only
    /// at the end.
    Bzip2(Box<dyn Read + Send>),
}

impl BuildLog {
    /// The log text from byte `offset` on (a plain log's `len` at most, even
    /// if the file grows).
    pub fn into_reader(self, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        match self {
            BuildLog::Plain { mut file, len } => {
                file.seek(SeekFrom::Start(offset))?;
                Ok(Box::new(file.take(len.saturating_sub(offset))))
            }
            BuildLog::Bzip2(reader) => Ok(reader),
        }
    }
}

/// The log of `drv` under `log_dir`, or `None` when there is none. Tried in
/// Nix's order (`LocalFSStore::getBuildLog`): `drvs/<2>/<rest>`, then
/// `.bz2`, then the legacy flat `drvs/<base name>` and its `.bz2`.
pub fn open(log_dir: &Path, drv: &StorePath) -> Result<Option<BuildLog>, StoreError> {
    if !drv.is_derivation() {
        return Ok(None);
    }
    let base = drv.base_name();
    // A base name starts with 32 ASCII characters, so this split is safe.
    let (dir, rest) = base.split_at(2);
    let drvs = log_dir.join("drvs");
    let nested = drvs.join(dir);
    let candidates: [(PathBuf, bool); 4] = [
        (nested.join(rest), false),
        (nested.join(format!("{rest}.bz2")), true),
        (drvs.join(base), false),
        (drvs.join(format!("{base}.bz2")), true),
    ];
    for (path, bz2) in candidates {
        let Some(file) = open_regular(&path)? else {
            continue;
        };
        return Ok(Some(if bz2 {
            // Nix writes one bzip2 stream; a concatenation of several (what
            // `bzip2 -c a b` makes) decodes as their sum too.
            BuildLog::Bzip2(Box::new(MultiBzDecoder::new(BufReader::new(file))))
        } else {
            let len = file.metadata()?.len();
            BuildLog::Plain { file, len }
        }));
    }
    Ok(None)
}

/// Opens `path` if it is a regular file. Absent, a symlink (`O_NOFOLLOW`
/// fails with `ELOOP`), or anything but a regular file: `None`. Any other
/// failure (permissions) is an error: the log may exist, so never a 404.
fn open_regular(path: &Path) -> Result<Option<File>, StoreError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(None)
        }
        Err(e) => return Err(io_error(path, e)),
    };
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    Ok(meta.is_file().then_some(file))
}

fn io_error(path: &Path, e: io::Error) -> StoreError {
    StoreError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    const DRV: &str = "9ygls0mbwcvql4g896aar9vxfbzqwf0n-logtest.drv";

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir()
                .join(format!("nix-serve-sd-log-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(d.join("drvs/9y")).unwrap();
            Dir(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn read(dir: &Path, base: &str) -> Option<(Vec<u8>, Option<u64>)> {
        let drv = StorePath::from_base_name(base).unwrap();
        open(dir, &drv).unwrap().map(|log| {
            let len = match &log {
                BuildLog::Plain { len, .. } => Some(*len),
                BuildLog::Bzip2(_) => None,
            };
            let mut out = Vec::new();
            log.into_reader(0).unwrap().read_to_end(&mut out).unwrap();
            (out, len)
        })
    }

    fn bz2(text: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(text).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn plain_then_bz2_then_legacy() {
        let d = Dir::new("order");
        let nested = d.0.join("drvs/9y").join(&DRV[2..]);
        assert_eq!(read(&d.0, DRV), None);
        fs::write(
            d.0.join("drvs").join(format!("{DRV}.bz2")),
            bz2(b"legacy bz2\n"),
        )
        .unwrap();
        assert_eq!(read(&d.0, DRV), Some((b"legacy bz2\n".to_vec(), None)));
        fs::write(d.0.join("drvs").join(DRV), "legacy\n").unwrap();
        assert_eq!(read(&d.0, DRV), Some((b"legacy\n".to_vec(), Some(7))));
        fs::write(nested.with_extension("drv.bz2"), bz2(b"building-hello\n")).unwrap();
        assert_eq!(read(&d.0, DRV), Some((b"building-hello\n".to_vec(), None)));
        fs::write(&nested, "plain\n").unwrap();
        assert_eq!(read(&d.0, DRV), Some((b"plain\n".to_vec(), Some(6))));
        // From an offset, for a range.
        let log = open(&d.0, &StorePath::from_base_name(DRV).unwrap());
        let mut tail = String::new();
        let mut reader = log.unwrap().unwrap().into_reader(2).unwrap();
        reader.read_to_string(&mut tail).unwrap();
        assert_eq!(tail, "ain\n");
    }

    #[test]
    fn only_derivations_and_regular_files() {
        let d = Dir::new("refusals");
        let secret = d.0.join("secret");
        fs::write(&secret, "secret\n").unwrap();
        // A symlink where the log would be is never followed.
        symlink(&secret, d.0.join("drvs/9y").join(&DRV[2..])).unwrap();
        assert_eq!(read(&d.0, DRV), None);
        // A directory is no log.
        fs::create_dir(d.0.join("drvs").join(DRV)).unwrap();
        assert_eq!(read(&d.0, DRV), None);
        // Not a derivation: no log, and no file is looked at.
        let out = "9ygls0mbwcvql4g896aar9vxfbzqwf0n-logtest";
        fs::write(d.0.join("drvs/9y").join(&out[2..]), "x").unwrap();
        assert_eq!(read(&d.0, out), None);
    }
}
