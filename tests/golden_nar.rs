//! Golden NAR bytes (docs/style.md §11): `tests/golden/*.nar` are what
//! `nix-store --dump` wrote for the trees built below (see the README
//! there). The trees are built at test time because git does not keep modes,
//! odd names or symlink targets the way Nix would see them.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix_serve_sd::nix::nar::NarReader;

use common::{nix_store_dump, write_file, Scratch};

type Make = fn(&Path);

/// Golden file stem and the tree it is the NAR of.
const GOLDEN: [(&str, Make); 4] = [
    ("hello", |p| write_file(p, b"hello\n", false)),
    ("exe", |p| write_file(p, b"#!/bin/sh\necho hello\n", true)),
    ("symlink", |p| {
        symlink(OsStr::from_bytes(b"../d\xffir/x y"), p).unwrap()
    }),
    ("tree", make_tree),
];

fn make_tree(root: &Path) {
    fs::create_dir(root).unwrap();
    let files: [(&[u8], &[u8], bool); 14] = [
        (b"B", b"upper\n", false),
        (b"a", b"lower\n", false),
        (b"empty", b"", false),
        (b"run.sh", b"#!/bin/sh\n", true),
        (b"eight", b"12345678", false),
        (b"name with space", b"x", false),
        (b"new\nline", b"n", false),
        (b"tab\tand \"quotes\"", b"q", false),
        ("é".as_bytes(), "ü\n".as_bytes(), false),
        (b".hidden", b"h", false),
        (b"-dash", b"d", true),
        (b"\xff\xfe", b"not utf-8 name", false),
        (b"sub/a", b"in sub\n", false),
        (b"sub/deeper/z", b"z", false),
    ];
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::create_dir(root.join("emptydir")).unwrap();
    for (name, contents, executable) in files {
        write_file(&root.join(OsStr::from_bytes(name)), contents, executable);
    }
    // Larger than a page and not a multiple of 8.
    let odd: Vec<u8> = (0..4097u32).map(|i| (i * 31 % 256) as u8).collect();
    write_file(&root.join("odd-4097"), &odd, false);
    symlink("../d", root.join("sub/link")).unwrap();
    symlink("/nix/store/does-not-exist", root.join("absolute")).unwrap();
    symlink("sub", root.join("dirlink")).unwrap();
}

fn golden_path(stem: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{stem}.nar"))
}

fn read_golden(stem: &str) -> Vec<u8> {
    let path = golden_path(stem);
    fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (see tests/golden/README.md)", path.display()))
}

fn assert_same(what: &str, ours: &[u8], theirs: &[u8]) {
    if ours != theirs {
        let first = ours.iter().zip(theirs).position(|(a, b)| a != b);
        panic!(
            "{what}: NARs differ: ours {} bytes, golden {} bytes, first difference at {:?}",
            ours.len(),
            theirs.len(),
            first.unwrap_or(ours.len().min(theirs.len()))
        );
    }
}

#[test]
fn our_nar_equals_the_golden_bytes() {
    for (stem, make) in GOLDEN {
        let tmp = Scratch::new(&format!("golden-{stem}"));
        let path = tmp.join(stem);
        make(&path);
        let mut reader = NarReader::open(&path).unwrap();
        let mut ours = Vec::new();
        reader.read_to_end(&mut ours).unwrap();
        assert_eq!(ours.len() as u64, reader.nar_size(), "{stem}");
        assert_same(stem, &ours, &read_golden(stem));
    }
}

/// Checks that the golden files are Nix's bytes for these trees; with
/// `NIX_SERVE_SD_WRITE_GOLDEN=1`, (re)writes them instead.
#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn golden_files_are_nix_store_dump_bytes() {
    let write = std::env::var_os("NIX_SERVE_SD_WRITE_GOLDEN").is_some_and(|v| v == "1");
    for (stem, make) in GOLDEN {
        let tmp = Scratch::new(&format!("golden-nix-{stem}"));
        let path = tmp.join(stem);
        make(&path);
        let nix = nix_store_dump(&path);
        if write {
            fs::write(golden_path(stem), &nix).unwrap();
        } else {
            assert_same(stem, &read_golden(stem), &nix);
        }
    }
}
