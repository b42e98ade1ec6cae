//! Real Nix as the oracle for signing (`docs/protocols.md` §5): for every
//! fixture path, `nix store sign` in a throw-away chroot store must produce
//! exactly the signature we compute from the path's metadata, and
//! `nix store verify` must accept it with the fixture public key.

mod common;

use std::path::Path;
use std::process::Output;

use nix_serve_sd::nix::signing::{PublicKey, SecretKey};
use nix_serve_sd::nix::store_path::StoreDir;

use common::{nix_command, nix_on, nix_path_info, Fixtures, Scratch};

#[test]
#[ignore = "needs real Nix and fixtures: run scripts/test"]
fn our_signatures_match_nix_store_sign() {
    let fx = Fixtures::load();
    let secret_file = fx.key("secret");
    let sk = SecretKey::from_file(&secret_file).expect("fixture secret key parses");
    let public_text = read(&fx.key("public"));
    let pk = PublicKey::parse(&public_text).expect("fixture public key parses");
    assert_eq!(sk.public_key(), pk, "secret and public fixture keys differ");
    let wrong_text = read(&fx.key("wrong.public"));
    let wrong = PublicKey::parse(&wrong_text).expect("wrong.public parses");

    let scratch = Scratch::new("signing");
    let store = scratch.join("store");
    let uri = store.to_str().expect("temp dir path is UTF-8");
    let dir = StoreDir::default();
    let secret_arg = secret_file.to_str().expect("UTF-8 fixture path");
    let mut checked_input_addressed = 0;
    for (name, path) in &fx.paths {
        let path = path.as_str();
        // Fixture paths carry no signature Nix would trust; this is a copy
        // between local stores, so skip the check.
        nix_on(&["copy", "--no-check-sigs", "--to", uri], &[path]);
        let sign = ["store", "sign", "--store", uri, "--key-file", secret_arg];
        nix_on(&sign, &[path]);
        let info = nix_path_info(Some(&store), path);
        assert_eq!(dir.display_path(&info.path), path, "{name}");

        let fingerprint = info.fingerprint(&dir);
        let ours = sk.sign(&fingerprint);
        assert!(
            info.sigs.contains(&ours),
            "{name}: our signature {ours} is not among Nix's {:?}",
            info.sigs
        );
        assert!(pk.verify(&fingerprint, &ours), "{name}");
        assert!(!wrong.verify(&fingerprint, &ours), "{name}");

        let verify = |key: &str| -> Output {
            let args = [
                "store",
                "verify",
                "--store",
                uri,
                "--sigs-needed",
                "1",
                "--option",
                "trusted-public-keys",
                key,
            ];
            (nix_command(&args, &[path]).output())
                .unwrap_or_else(|e| panic!("cannot run nix (is Nix installed?): {e}"))
        };
        let ok = verify(public_text.trim());
        assert!(
            ok.status.success(),
            "{name}: nix store verify: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        // Nix counts a content-addressed path as signed whatever its sigs
        // (docs/protocols.md §5.3), so only an input-addressed path shows that verify really
        // looked at the signature.
        if info.ca.is_none() {
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

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}
