//! The routes a store path is served on, for the tests that ask each of
//! them (tests/serve_closure_of.rs, auth.rs).

/// Every route a path is served on, for the hash part `hash` whose NAR
/// hash is `nar` (nix32, no prefix).
pub fn every_route(hash: &str, nar: &str) -> Vec<String> {
    vec![
        format!("/{hash}.narinfo"),
        format!("/nar/{hash}-{nar}.nar"),
        format!("/nar/{hash}.nar"),
        format!("/nar/{nar}.nar?hash={hash}"),
        format!("/nar/{hash}-{nar}.nar.zst"),
        format!("/{hash}.ls"),
        format!("/log/{hash}"),
    ]
}

/// `nix-store -q --hash`: `path`'s NAR hash, nix32 without `sha256:`.
pub fn nar_hash(path: &str) -> String {
    let out = super::run(std::process::Command::new("nix-store").args(["-q", "--hash", path]));
    out.trim().trim_start_matches("sha256:").to_owned()
}
