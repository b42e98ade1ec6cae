//! Real Nix as the oracle for signing (`nix-protocols.md` §5): for every
//! fixture path, `nix store sign` in a throw-away chroot store must produce
//! exactly the signature we compute from the path's metadata, and
//! `nix store verify` must accept it with the fixture public key.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use nix_serve_sd::nix::hash::Sha256;
use nix_serve_sd::nix::path_info::PathInfo;
use nix_serve_sd::nix::signing::{PublicKey, SecretKey};
use nix_serve_sd::nix::store_path::StoreDir;

const FIXTURE_NAMES: &[&str] = &[
    "empty",
    "big-10M",
    "big-10M-flat",
    "hello-exe",
    "tree",
    "text-with-ref",
    "dep-leaf",
    "dep-mid",
    "dep-top",
    "many-files",
    "compressible-10M",
    "multi-output.out",
    "multi-output.lib",
    "multi-output.dev",
    "multi-output.drv",
];

struct Fixtures {
    dir: PathBuf,
    paths: Vec<(String, String)>,
}

/// Reads `$NIX_SERVE_SD_FIXTURES`, panicking if it is unset or incomplete:
/// a test that silently skips would pass without checking anything.
fn fixtures() -> Fixtures {
    let dir = std::env::var_os("NIX_SERVE_SD_FIXTURES")
        .map(PathBuf::from)
        .expect(
            "NIX_SERVE_SD_FIXTURES is unset: point it at the fixture directory (run scripts/test)",
        );
    let tsv = dir.join("paths.tsv");
    let text = std::fs::read_to_string(&tsv)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", tsv.display()));
    let paths: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, path) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("{}: malformed line {l:?}", tsv.display()));
            (name.to_owned(), path.to_owned())
        })
        .collect();
    for want in FIXTURE_NAMES {
        assert!(
            paths.iter().any(|(n, _)| n == want),
            "{} lacks fixture {want:?}",
            tsv.display()
        );
    }
    for key in ["secret", "public", "wrong.public"] {
        let k = dir.join("keys").join(key);
        assert!(k.is_file(), "fixture key {} is missing", k.display());
    }
    Fixtures { dir, paths }
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?} (is Nix installed?): {e}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a nix command, panicking with its stderr if it fails.
fn nix(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed with {}: {}",
        out.status,
        stderr(&out)
    );
    String::from_utf8(out.stdout).expect("nix output is UTF-8")
}

/// A chroot store directory, new for each run, removed afterwards.
struct ScratchStore(PathBuf);

impl ScratchStore {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "nix-serve-sd-signing-{}-{nanos}",
            std::process::id()
        ));
        assert!(!dir.exists(), "{} already exists", dir.display());
        ScratchStore(dir)
    }

    fn uri(&self) -> &str {
        self.0.to_str().expect("temp dir path is UTF-8")
    }
}

impl Drop for ScratchStore {
    fn drop(&mut self) {
        // Nix makes store contents read-only; restore write access first.
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The JSON value after `"key":` in `obj`, as raw text up to its end. Enough
/// for `nix path-info --json`, whose strings (store paths, hashes, base64)
/// never contain quotes or escapes; an escape makes this panic, not guess.
fn json_raw<'a>(obj: &'a str, key: &str) -> Option<&'a str> {
    let start = obj.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &obj[start..];
    let end = match rest.as_bytes().first()? {
        b'"' => rest[1..].find('"')? + 2,
        b'[' => rest.find(']')? + 1,
        _ => rest.find([',', '}'])?,
    };
    let raw = &rest[..end];
    assert!(!raw.contains('\\'), "unexpected JSON escape in {raw}");
    Some(raw)
}

fn json_str(obj: &str, key: &str) -> Option<String> {
    json_raw(obj, key).map(|r| r.trim_matches('"').to_owned())
}

fn json_str_list(obj: &str, key: &str) -> Vec<String> {
    let raw = json_raw(obj, key).unwrap_or("[]");
    raw.trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// What we need of `nix path-info --json`: our PathInfo and Nix's sigs.
fn path_info_from_json(json: &str, dir: &StoreDir) -> (PathInfo, Vec<String>) {
    assert_eq!(json.matches("\"path\":").count(), 1, "not one path: {json}");
    let path = json_str(json, "path").unwrap_or_else(|| panic!("no path in {json}"));
    assert!(
        json_raw(json, "valid") != Some("false"),
        "{path} is not valid in the scratch store"
    );
    let nar_hash = json_str(json, "narHash").unwrap_or_else(|| panic!("no narHash in {json}"));
    let nar_size = json_raw(json, "narSize").unwrap_or_else(|| panic!("no narSize in {json}"));
    let mut references: Vec<_> = json_str_list(json, "references")
        .iter()
        .map(|r| dir.parse_path(r).expect("reference is a store path"))
        .collect();
    references.sort();
    let info = PathInfo {
        path: dir.parse_path(&path).expect("path is a store path"),
        deriver: None,
        nar_hash: Sha256::parse_any(&nar_hash).expect("narHash parses"),
        nar_size: nar_size.parse().expect("narSize is a number"),
        references,
        registration_time: 0,
        ultimate: false,
        sigs: vec![],
        ca: None,
    };
    (info, json_str_list(json, "signatures"))
}

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn our_signatures_match_nix_store_sign() {
    let fx = fixtures();
    let keys = fx.dir.join("keys");
    let secret_file = keys.join("secret");
    let sk = SecretKey::from_file(&secret_file).expect("fixture secret key parses");
    let public_text = std::fs::read_to_string(keys.join("public")).expect("read public key");
    let pk = PublicKey::parse(&public_text).expect("fixture public key parses");
    assert_eq!(sk.public_key(), pk, "secret and public fixture keys differ");
    let wrong_text = read(&keys.join("wrong.public"));
    let wrong = PublicKey::parse(&wrong_text).expect("wrong.public parses");

    let store = ScratchStore::new();
    let dir = StoreDir::default();
    let secret_arg = secret_file.to_str().expect("UTF-8 fixture path");
    let mut checked_input_addressed = 0;
    for (name, path) in &fx.paths {
        let path = path.as_str();
        // Fixture paths carry no signature Nix would trust; this is a copy
        // between local stores, so skip the check.
        let copy = ["nix", "copy", "--no-check-sigs", "--to", store.uri()];
        nix(&on(&copy, path));
        let sign = [
            "nix",
            "store",
            "sign",
            "--store",
            store.uri(),
            "--key-file",
            secret_arg,
        ];
        nix(&on(&sign, path));
        let json = nix(&on(
            &["nix", "path-info", "--json", "--store", store.uri()],
            path,
        ));
        let (info, nix_sigs) = path_info_from_json(&json, &dir);
        assert_eq!(dir.display_path(&info.path), path, "{name}");

        let fingerprint = info.fingerprint(&dir);
        let ours = sk.sign(&fingerprint);
        assert!(
            nix_sigs.contains(&ours),
            "{name}: our signature {ours} is not among Nix's {nix_sigs:?}"
        );
        assert!(pk.verify(&fingerprint, &ours), "{name}");
        assert!(!wrong.verify(&fingerprint, &ours), "{name}");

        let verify = |key: &str| {
            let args = [
                "nix",
                "store",
                "verify",
                "--store",
                store.uri(),
                "--sigs-needed",
                "1",
                "--option",
                "trusted-public-keys",
                key,
            ];
            run(&on(&args, path))
        };
        let ok = verify(public_text.trim());
        assert!(
            ok.status.success(),
            "{name}: nix store verify: {}",
            stderr(&ok)
        );
        // Nix counts a content-addressed path as signed whatever its sigs
        // (§5.3), so only an input-addressed path shows that verify really
        // looked at the signature.
        if json_raw(&json, "ca").is_none() {
            let bad = verify(wrong_text.trim());
            assert!(
                !bad.status.success(),
                "{name}: verify passed with the wrong key"
            );
            checked_input_addressed += 1;
        }
    }
    assert!(
        checked_input_addressed > 0,
        "no input-addressed fixture path"
    );
}

/// `args` then `path`, with `--derivation` for a .drv: to nix commands a
/// .drv argument otherwise means the derivation's outputs.
fn on<'a>(args: &[&'a str], path: &'a str) -> Vec<&'a str> {
    let mut v = args.to_vec();
    if path.ends_with(".drv") {
        v.push("--derivation");
    }
    v.push(path);
    v
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}
