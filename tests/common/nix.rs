//! Real Nix as the oracle: running its commands, and what
//! `nix path-info --json` says about store paths (`docs/protocols.md` §8).
//!
//! serde_json (dev only) reads that JSON: nothing else of Nix's prints
//! signatures and content addresses.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use nix_serve_sd::nix::hash::Sha256;
use nix_serve_sd::nix::path_info::PathInfo;
use nix_serve_sd::nix::store_path::{StoreDir, StorePath};
use serde_json::Value;

/// Runs `cmd`, panicking with its stderr unless it succeeds; its stdout.
pub fn output_of(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is Nix installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// [`output_of`] as text.
pub fn run(cmd: &mut Command) -> String {
    String::from_utf8(output_of(cmd)).expect("command output is UTF-8")
}

/// `nix-store --dump path`: Nix's NAR of it.
pub fn nix_store_dump(path: impl AsRef<Path>) -> Vec<u8> {
    output_of(Command::new("nix-store").arg("--dump").arg(path.as_ref()))
}

/// `nix <args> <paths>`, with `--derivation` when the paths are `.drv`s:
/// to a `nix` command a `.drv` argument otherwise means the derivation's
/// outputs. Refuses to mix `.drv`s and other paths ([`nix_on`] splits them).
pub fn nix_command(args: &[&str], paths: &[&str]) -> Command {
    let drvs = paths.iter().filter(|p| p.ends_with(".drv")).count();
    assert!(
        drvs == 0 || drvs == paths.len(),
        "one nix call for .drv and other paths: {paths:?}"
    );
    let mut cmd = Command::new("nix");
    cmd.args(["--extra-experimental-features", "nix-command"])
        .args(args);
    if drvs > 0 {
        cmd.arg("--derivation");
    }
    cmd.args(paths);
    cmd
}

/// Runs `nix <args>` on `paths`, the `.drv`s in a call of their own (see
/// [`nix_command`]); the stdout of each call.
pub fn nix_on(args: &[&str], paths: &[&str]) -> Vec<String> {
    let (drvs, others): (Vec<&str>, Vec<&str>) = paths.iter().partition(|p| p.ends_with(".drv"));
    [drvs, others]
        .iter()
        .filter(|group| !group.is_empty())
        .map(|group| run(&mut nix_command(args, group)))
        .collect()
}

/// What `nix path-info --json` says about each of `paths` (full store paths,
/// the keys of the answer), in `store` or else the machine's store.
pub fn nix_path_infos(store: Option<&Path>, paths: &[&str]) -> HashMap<String, PathInfo> {
    let mut args = vec!["path-info", "--json"];
    let store_arg;
    if let Some(s) = store {
        store_arg = s.to_str().expect("store path is UTF-8");
        args.extend(["--store", store_arg]);
    }
    let mut found = HashMap::new();
    for out in nix_on(&args, paths) {
        let json: Value = serde_json::from_str(&out).unwrap();
        for v in json
            .as_array()
            .expect("nix path-info --json gives an array")
        {
            let info = from_json(v);
            let full = StoreDir::default().display_path(&info.path);
            assert!(found.insert(full, info).is_none(), "a path twice: {out}");
        }
    }
    let mut asked: Vec<&str> = paths.to_vec();
    let mut answered: Vec<&str> = found.keys().map(String::as_str).collect();
    asked.sort();
    answered.sort();
    assert_eq!(answered, asked, "nix path-info answered other paths");
    found
}

/// [`nix_path_infos`] of one path.
pub fn nix_path_info(store: Option<&Path>, path: &str) -> PathInfo {
    nix_path_infos(store, &[path]).remove(path).unwrap()
}

fn from_json(v: &Value) -> PathInfo {
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let path = text("path").unwrap_or_else(|| panic!("no path in {v}"));
    assert!(
        v.get("valid").and_then(Value::as_bool) != Some(false),
        "{path} is not valid in that store"
    );
    let store_path = |p: &str| StoreDir::default().parse_path(p).unwrap();
    let need = |k: &str| v.get(k).unwrap_or_else(|| panic!("{path}: no {k} in {v}"));
    let mut references: Vec<StorePath> = (need("references").as_array().unwrap().iter())
        .map(|r| store_path(r.as_str().unwrap()))
        .collect();
    references.sort();
    PathInfo {
        path: store_path(path),
        deriver: text("deriver").map(store_path),
        nar_hash: Sha256::parse_prefixed(need("narHash").as_str().unwrap()).unwrap(),
        nar_size: need("narSize").as_u64().unwrap(),
        references,
        registration_time: need("registrationTime").as_u64().unwrap(),
        ultimate: v.get("ultimate").and_then(Value::as_bool).unwrap_or(false),
        sigs: v
            .get("signatures")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default(),
        ca: text("ca").map(str::to_owned),
    }
}

/// Runs Nix's `cmd` with its own client cache in `xdg` (a client caches 404s
/// for an hour, `docs/protocols.md` §4.4) and without `NIX_REMOTE`.
pub fn nix_fresh_cache(cmd: &str, args: &[&str], xdg: &Path) -> Output {
    Command::new(cmd)
        .args(args)
        .env("XDG_CACHE_HOME", xdg)
        .env_remove("NIX_REMOTE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

/// `nix copy --from url --to dst` of `paths`, trusting only `public` (a key
/// file's contents), with a client cache of its own in `xdg`.
pub fn nix_copy_from(url: &str, dst: &Path, public: &str, paths: &[&str], xdg: &Path) -> Output {
    let dst = dst.to_str().expect("UTF-8 path");
    let mut args = vec!["copy", "--from", url, "--to", dst];
    args.extend(["--option", "trusted-public-keys", public.trim()]);
    args.extend_from_slice(paths);
    nix_fresh_cache("nix", &args, xdg)
}

/// Panics with its output unless `out` succeeded; its stdout otherwise.
pub fn succeeded(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
