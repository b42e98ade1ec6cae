//! Directory trees generated from fuzz input (not raw bytes): names, sizes
//! around the encoder's buffer size, symlinks, executables, empty
//! directories; written to disk, and the [`Node`] they should encode to.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use arbitrary::{Arbitrary, Result, Unstructured};

use crate::nar::Node;

/// File sizes worth hitting exactly: around 8-byte padding and around the
/// encoder's 128 KiB read size.
const SIZES: &[usize] = &[
    0, 1, 7, 8, 9, 15, 16, 17, 4095, 4096, 4097, 131_071, 131_072, 131_073, 262_145,
];

/// Bytes allowed in a name: anything but `/` and NUL.
fn name(u: &mut Unstructured) -> Result<Vec<u8>> {
    let len = u.int_in_range(1..=12)?;
    let mut n = Vec::with_capacity(len);
    for _ in 0..len {
        let b: u8 = u.arbitrary()?;
        n.push(match b {
            0 | b'/' => b'_',
            b => b,
        });
    }
    if n == b"." || n == b".." {
        n.push(b'x');
    }
    Ok(n)
}

fn contents(u: &mut Unstructured) -> Result<Vec<u8>> {
    let len = if u.ratio(1, 8)? {
        *u.choose(SIZES)?
    } else {
        u.int_in_range(0..=300)?
    };
    let seed: u8 = u.arbitrary()?;
    Ok((0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect())
}

fn target(u: &mut Unstructured) -> Result<Vec<u8>> {
    // Targets may be anything but empty or NUL-containing, up to PATH_MAX.
    let len = if u.ratio(1, 16)? {
        4095
    } else {
        u.int_in_range(1..=40)?
    };
    let seed: u8 = u.arbitrary()?;
    Ok((0..len)
        .map(|i| match seed.wrapping_add(i as u8) {
            0 => b'.',
            b => b,
        })
        .collect())
}

fn node(u: &mut Unstructured, depth: usize) -> Result<Node> {
    let choice = if depth >= 5 {
        u.int_in_range(0..=1)?
    } else {
        u.int_in_range(0..=2)?
    };
    Ok(match choice {
        0 => Node::File {
            executable: u.arbitrary()?,
            contents: contents(u)?,
        },
        1 => Node::Symlink { target: target(u)? },
        _ => {
            let mut entries = BTreeMap::new();
            let count = u.int_in_range(0..=6)?;
            for _ in 0..count {
                entries.insert(name(u)?, node(u, depth + 1)?);
            }
            Node::Dir(entries)
        }
    })
}

/// A tree and the NAR it should encode to.
#[derive(Debug)]
pub struct Tree(pub Node);

impl<'a> Arbitrary<'a> for Tree {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        node(u, 0).map(Tree)
    }
}

/// Writes `node` at `path` (which must not exist).
pub fn write(path: &Path, node: &Node) -> io::Result<()> {
    match node {
        Node::File {
            executable,
            contents,
        } => {
            fs::write(path, contents)?;
            let mode = if *executable { 0o555 } else { 0o444 };
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
        }
        Node::Symlink { target } => symlink(std::ffi::OsStr::from_bytes(target), path),
        Node::Dir(entries) => {
            fs::create_dir(path)?;
            for (name, child) in entries {
                write(&path.join(std::ffi::OsStr::from_bytes(name)), child)?;
            }
            Ok(())
        }
    }
}

/// Removes what [`write`] made, read-only files and all.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}
