//! Finding Nix's inputs for tests/nixos_module.rs and running nix-instantiate.
//! Lookup order and the skip rule are described at the top of tests/nixos_module.rs.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs nix-instantiate; Err carries its stderr.
pub fn nix_instantiate(args: &[&str]) -> Result<String, String> {
    let out = Command::new("nix-instantiate")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run nix-instantiate ({e}): these tests need real Nix, run scripts/test")
        });
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

pub struct Inputs {
    pub lib: PathBuf,
    pub upstream: PathBuf,
}

/// Finds nixpkgs' lib and the upstream module, or says why not: a panic, or
/// with NIX_SERVE_SD_ALLOW_SKIP=1 a SKIPPED line and None.
pub fn inputs() -> Option<Inputs> {
    let found = find_lib().and_then(|lib| find_upstream().map(|upstream| Inputs { lib, upstream }));
    match found {
        Ok(inputs) => Some(inputs),
        Err(why) if env::var("NIX_SERVE_SD_ALLOW_SKIP").as_deref() == Ok("1") => {
            println!("SKIPPED (NIX_SERVE_SD_ALLOW_SKIP=1): {why}");
            eprintln!("SKIPPED (NIX_SERVE_SD_ALLOW_SKIP=1): {why}");
            None
        }
        Err(why) => panic!("{why}; set NIX_SERVE_SD_ALLOW_SKIP=1 to skip these tests instead"),
    }
}

/// A directory that is nixpkgs' lib (has default.nix and modules.nix), or
/// one holding it as `lib/`.
fn as_lib_dir(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.join("lib")]
        .into_iter()
        .find(|d| d.join("default.nix").is_file() && d.join("modules.nix").is_file())
}

fn find_lib() -> Result<PathBuf, String> {
    if let Ok(given) = env::var("NIX_SERVE_SD_NIXPKGS_LIB") {
        return as_lib_dir(Path::new(&given))
            .ok_or_else(|| format!("NIX_SERVE_SD_NIXPKGS_LIB={given} is not nixpkgs' lib"));
    }
    let shared = repo().join("../shared/nixpkgs-lib");
    if let Some(dir) = as_lib_dir(&shared) {
        return Ok(dir);
    }
    if let Ok(found) = nix_instantiate(&["--find-file", "nixpkgs/lib"]) {
        if let Some(dir) = as_lib_dir(Path::new(found.trim())) {
            return Ok(dir);
        }
    }
    Err(format!(
        "nixpkgs' lib not found: NIX_SERVE_SD_NIXPKGS_LIB is unset, {} does not exist, \
         and <nixpkgs/lib> is not on NIX_PATH",
        shared.display()
    ))
}

fn find_upstream() -> Result<PathBuf, String> {
    if let Ok(given) = env::var("NIX_SERVE_SD_NIXOS_UPSTREAM") {
        let path = PathBuf::from(&given);
        let file = if path.is_dir() {
            path.join("nix-serve.nix")
        } else {
            path
        };
        return if file.is_file() {
            Ok(file)
        } else {
            Err(format!(
                "NIX_SERVE_SD_NIXOS_UPSTREAM={given}: no nix-serve.nix there"
            ))
        };
    }
    let shared = repo().join("../shared/nixos-upstream/nix-serve.nix");
    if shared.is_file() {
        return Ok(shared);
    }
    let nixpkgs = "nixpkgs/nixos/modules/services/networking/nix-serve.nix";
    if let Ok(found) = nix_instantiate(&["--find-file", nixpkgs]) {
        return Ok(PathBuf::from(found.trim()));
    }
    Err(format!(
        "nixpkgs' services.nix-serve module not found: NIX_SERVE_SD_NIXOS_UPSTREAM is unset, \
         {} does not exist, and <{nixpkgs}> is not on NIX_PATH",
        shared.display()
    ))
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("nix gave no JSON ({e}): {text}"))
}
