//! Inputs the `keys` fuzz target found (fuzz/README.md), kept as regression
//! tests. Pure: no Nix.

use nix_serve_sd::nix::signing::SecretKey;

/// A secret key whose name has a control byte (0x16) is accepted at
/// start-up and signs every narinfo, but a signature with that name is
/// refused by our own signature parser (names must be printable ASCII), so
/// the key's own public half never verifies what it signed: the name rule
/// must be the same for keys and signatures. Found by the fuzzer in 5 s
/// against main at 8985ed6..e14f69b.
#[test]
fn a_secret_key_that_parses_signs_what_its_public_half_verifies() {
    let text = "fu-\x16:H3adrGapPMVhuntLvOsApEE3Ni3DuhlwZ/Xja6QBXckPRTAwimNwWrSPKLNmFNvApSwuF6TwpV2+Dgtc0sRxpw=";
    // Refused at start-up now, with the byte and where it is.
    match SecretKey::parse(text) {
        Err(e) => assert!(e.to_string().contains("byte 0x16 at position 3"), "{e}"),
        Ok(_) => panic!("a key name with a control byte was accepted"),
    }
    // And the property the fuzzer checks, for a key that does parse.
    let good = text.replacen("fu-\x16", "fu-x", 1);
    if let Ok(secret) = SecretKey::parse(&good) {
        let sig = secret.sign("1;/nix/store/x;sha256:0;1;");
        assert!(
            secret
                .public_key()
                .verify("1;/nix/store/x;sha256:0;1;", &sig),
            "signed as {sig:?}, refused by its own public key"
        );
    }
}
