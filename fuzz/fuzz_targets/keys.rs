//! Secret- and public-key parsing (src/nix/signing.rs): never panics; a key
//! that parses signs, its public half verifies that signature and reads back
//! from its own display form; no error message shows the key's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nix_serve_sd::nix::signing::{KeyError, PublicKey, SecretKey};

const FINGERPRINT: &str = "1;/nix/store/x;sha256:0;1;";

/// Errors name the key, never show what follows its `:`. Checked where that
/// part is long, has no space and is not in the name as errors show it
/// (`{name:?}`), so it cannot be a phrase of the error text or the name.
fn assert_no_key_bytes(text: &str, e: &KeyError) {
    let Some((name, data)) = text.trim().split_once(':') else {
        return;
    };
    if data.len() >= 16 && !data.contains(' ') && !format!("{name:?}").contains(data) {
        let msg = e.to_string();
        assert!(!msg.contains(data), "error shows key bytes: {msg}");
    }
}

fuzz_target!(|text: &str| {
    match SecretKey::parse(text) {
        Ok(secret) => {
            let public = secret.public_key();
            let sig = secret.sign(FINGERPRINT);
            assert!(public.verify(FINGERPRINT, &sig));
            assert!(!public.verify("1;/nix/store/y;sha256:0;1;", &sig));
            let shown = public.to_string();
            assert_eq!(PublicKey::parse(&shown).expect("own display form"), public);
            // The name is shown, and may itself spell the key's base64 (the
            // campaign built such a name): look for the key bytes in what is
            // left once the name is taken out.
            let debug = format!("{secret:?}").replacen(&format!("{:?}", secret.name), "", 1);
            if let Some((_, data)) = text.trim().split_once(':') {
                assert!(!debug.contains(data), "Debug shows the secret: {debug}");
            }
        }
        Err(e) => assert_no_key_bytes(text, &e),
    }
    match PublicKey::parse(text) {
        Ok(public) => {
            let shown = public.to_string();
            assert_eq!(PublicKey::parse(&shown).expect("own display form"), public);
            // A key is never a valid signature of anything.
            assert!(!public.verify("fp", text));
        }
        Err(e) => assert_no_key_bytes(text, &e),
    }
});
