//! narinfo parser and renderer (src/nix/narinfo.rs): the parser never panics,
//! and for every narinfo it accepts, render(parse(x)) parses back to the same
//! path info (what nix-serve's format carries of it), and rendering that
//! again gives the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nix_serve_sd::nix::narinfo::parse::NarInfo;
use nix_serve_sd::nix::narinfo::{nar_url, render};
use nix_serve_sd::nix::path_info::PathInfo;
use nix_serve_sd::nix::store_path::StoreDir;

fn single_line(s: &str) -> bool {
    !s.contains(['\n', '\r'])
}

fuzz_target!(|text: &str| {
    let dir = StoreDir::default();
    let Ok(parsed) = NarInfo::parse(text, &dir) else {
        return;
    };
    let info = PathInfo {
        path: parsed.store_path.clone(),
        deriver: parsed.deriver.clone(),
        nar_hash: parsed.nar_hash,
        nar_size: parsed.nar_size,
        references: parsed.references.clone(),
        registration_time: 0,
        ultimate: false,
        sigs: parsed.sigs.clone(),
        ca: parsed.ca.clone(),
    };
    let rendered = render(&info, &dir, &info.sigs);
    let back = NarInfo::parse(&rendered, &dir)
        .unwrap_or_else(|e| panic!("our own narinfo does not parse: {e}\n{rendered}"));

    assert_eq!(back.store_path, parsed.store_path);
    assert_eq!(back.url, nar_url(&info.path, &info.nar_hash));
    assert_eq!(back.compression, "none");
    assert_eq!(back.file_hash, None);
    assert_eq!(back.file_size, None);
    assert_eq!(back.nar_hash, parsed.nar_hash);
    assert_eq!(back.nar_size, parsed.nar_size);
    assert_eq!(back.references, parsed.references);
    assert_eq!(back.deriver, parsed.deriver);
    assert_eq!(back.system, None);
    // Values that would break a line are left out by design (render's doc).
    let sigs: Vec<String> = parsed
        .sigs
        .iter()
        .filter(|s| single_line(s))
        .cloned()
        .collect();
    assert_eq!(back.sigs, sigs);
    assert_eq!(back.ca, parsed.ca.clone().filter(|c| single_line(c)));

    let again = PathInfo {
        sigs: back.sigs.clone(),
        ca: back.ca.clone(),
        ..info
    };
    assert_eq!(
        render(&again, &dir, &again.sigs),
        rendered,
        "not a fixed point"
    );
});
