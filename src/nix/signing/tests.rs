//! Tests of `signing.rs` with the throw-away key pair and the signatures real
//! Nix 2.8 made (`docs/protocols.md` §5.3).

use super::*;

const SECRET: &str = "test-cache-1:FJHot+xBwwdaU6W5DUXXFJOfUdnPmAfasjihN7wK2/xDXLbXhV7FiiSbrkFeHUnzgLkRm6xKsCJAwi7MxtJUQg==";
const PUBLIC: &str = "test-cache-1:Q1y214VexYokm65BXh1J84C5EZusSrAiQMIuzMbSVEI=";
const FP_A: &str = "1;/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt;sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw;120;";
const SIG_A: &str = "test-cache-1:efNYGuSlHTRRw8WPYlN6SFAWMdBu/wAQkt5joLvIKrMJBsTNBineWxpkJEpHa/OdhZ81nJM9Axpyp6aZu5isAQ==";
const FP_B: &str = "1;/nix/store/wmm9hngfwxsjqpiy50lligndn8n83f6w-ref.txt;sha256:1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl;176;/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt";
const SIG_B: &str = "test-cache-1:RvgguPkrgkxKkHjxRHhkvW4Y7NMmCpxEs7wPME2s+9MI5qnG6uQZWhpG9UYR0tzPOgGeYx4smOokvw4d60fUBg==";

fn secret() -> SecretKey {
    SecretKey::parse(SECRET).unwrap()
}

/// The secret key's 64 bytes, for building malformed variants.
fn secret_bytes() -> Vec<u8> {
    BASE64.decode(SECRET.split_once(':').unwrap().1).unwrap()
}

#[test]
fn signs_exactly_as_nix() {
    let sk = secret();
    assert_eq!(sk.name, "test-cache-1");
    assert_eq!(sk.sign(FP_A), SIG_A);
    assert_eq!(sk.sign(FP_B), SIG_B);
}

#[test]
fn signs_the_fingerprint_of_a_path_info() {
    let fp = crate::nix::path_info::tests::ref_txt().fingerprint(&Default::default());
    assert_eq!(secret().sign(&fp), SIG_B);
}

#[test]
fn public_half_is_the_published_key() {
    assert_eq!(secret().public_key().to_string(), PUBLIC);
    let pk = PublicKey::parse(PUBLIC).unwrap();
    assert_eq!(pk, secret().public_key());
    assert_eq!(pk.to_string(), PUBLIC);
}

#[test]
fn verifies_nix_signatures() {
    let pk = PublicKey::parse(PUBLIC).unwrap();
    assert!(pk.verify(FP_A, SIG_A));
    assert!(pk.verify(FP_B, SIG_B));
    let own = secret().sign("anything");
    assert!(pk.verify("anything", &own));
}

#[test]
fn rejects_what_does_not_verify() {
    let pk = PublicKey::parse(PUBLIC).unwrap();
    let other = {
        let mut seed = [7u8; 32];
        seed[0] = 1;
        let key = SigningKey::from_bytes(&seed);
        SecretKey {
            name: "test-cache-1".into(),
            key,
        }
    };
    let sig_data = SIG_A.split_once(':').unwrap().1;
    let mut flipped = BASE64.decode(sig_data).unwrap();
    flipped[10] ^= 1;
    let cases: Vec<(&str, &str, String)> = vec![
        ("fingerprint of another path", FP_B, SIG_A.into()),
        (
            "tampered fingerprint",
            &FP_A[..FP_A.len() - 2],
            SIG_A.into(),
        ),
        ("other key, same name", FP_A, other.sign(FP_A)),
        ("other name", FP_A, format!("test-cache-2:{sig_data}")),
        ("empty name", FP_A, format!(":{sig_data}")),
        ("no name", FP_A, sig_data.into()),
        (
            "flipped bit",
            FP_A,
            format!("test-cache-1:{}", BASE64.encode(&flipped)),
        ),
        ("truncated", FP_A, SIG_A[..SIG_A.len() - 4].into()),
        (
            "not base64",
            FP_A,
            format!("test-cache-1:{}", "!".repeat(88)),
        ),
        (
            "63 bytes",
            FP_A,
            format!("test-cache-1:{}", BASE64.encode([0u8; 63])),
        ),
        ("empty", FP_A, String::new()),
    ];
    for (what, fp, sig) in cases {
        assert!(!pk.verify(fp, &sig), "{what}");
    }
}

#[test]
fn tolerates_surrounding_whitespace() {
    let unpadded = SECRET.trim_end_matches('=');
    for text in [
        format!("{SECRET}\n"),
        format!("  \n{SECRET}\r\n\t"),
        unpadded.to_owned(),
    ] {
        assert_eq!(SecretKey::parse(&text).unwrap().sign(FP_A), SIG_A);
    }
    assert!(PublicKey::parse(&format!("{PUBLIC}\n")).is_ok());
}

/// Renders an error, checks it carries no key material, and returns it.
fn message(e: &KeyError) -> String {
    let text = e.to_string();
    let b64 = SECRET.split_once(':').unwrap().1;
    for window in b64.as_bytes().windows(8) {
        let w = std::str::from_utf8(window).unwrap();
        assert!(!text.contains(w), "{text:?} shows key material {w:?}");
    }
    text
}

#[test]
fn rejects_each_malformed_secret_key() {
    let bytes = secret_bytes();
    let mut mismatched = bytes.clone();
    mismatched[40] ^= 1;
    let name = "test-cache-1";
    let with = |data: &[u8]| format!("{name}:{}", BASE64.encode(data));
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "no ':'"),
        ("no colon", SECRET.replace(':', ""), "no ':'"),
        ("empty name", SECRET.replacen(name, "", 1), "empty name"),
        (
            "bad base64",
            SECRET.replacen("FJH", "F.H", 1),
            "secret key \"test-cache-1\": invalid base64",
        ),
        (
            "inner whitespace",
            SECRET.replacen("FJH", "F H", 1),
            "invalid base64",
        ),
        (
            "padding in the middle",
            SECRET.replacen("FJH", "F=H", 1),
            "invalid base64",
        ),
        (
            "empty data",
            format!("{name}:"),
            "decodes to 0 bytes, expected 64",
        ),
        (
            "seed only",
            with(&bytes[..32]),
            "decodes to 32 bytes, expected 64",
        ),
        (
            "one byte more",
            with(&[&bytes[..], &[0]].concat()),
            "65 bytes",
        ),
        (
            "public half of another key",
            with(&mismatched),
            "public half does not match its seed",
        ),
    ];
    for (what, text, expected) in cases {
        let e = SecretKey::parse(&text).expect_err(what);
        let msg = message(&e);
        assert!(msg.contains(expected), "{what}: {msg:?}");
    }
}

#[test]
fn rejects_each_malformed_public_key() {
    let mut off_curve = [0u8; 32];
    off_curve[0] = 2; // y = 2 has no x on edwards25519.
    let cases: Vec<(&str, String, &str)> = vec![
        ("no colon", PUBLIC.replace(':', ""), "no ':'"),
        (
            "empty name",
            PUBLIC.replacen("test-cache-1", "", 1),
            "empty name",
        ),
        (
            "bad base64",
            PUBLIC.replacen("Q1y", "Q-y", 1),
            "public key \"test-cache-1\": invalid base64",
        ),
        (
            "secret key given",
            SECRET.into(),
            "public key \"test-cache-1\": decodes to 64 bytes, expected 32",
        ),
        (
            "not a point",
            format!("k:{}", BASE64.encode(off_curve)),
            "public key \"k\": not a valid Ed25519 point",
        ),
    ];
    for (what, text, expected) in cases {
        let e = PublicKey::parse(&text).expect_err(what);
        let msg = message(&e);
        assert!(msg.contains(expected), "{what}: {msg:?}");
    }
}

#[test]
fn key_files() {
    let dir = std::env::temp_dir().join(format!("nss-signing-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let good = dir.join("good");
    std::fs::write(&good, format!("{SECRET}\n")).unwrap();
    assert_eq!(SecretKey::from_file(&good).unwrap().sign(FP_B), SIG_B);

    let missing = dir.join("missing");
    let e = SecretKey::from_file(&missing).unwrap_err();
    assert!(matches!(e, KeyError::Read { .. }), "{e:?}");
    let msg = message(&e);
    assert!(msg.contains(&*missing.to_string_lossy()), "{msg}");

    let bad = dir.join("bad");
    std::fs::write(&bad, SECRET.replace(':', ";")).unwrap();
    let e = SecretKey::from_file(&bad).unwrap_err();
    let msg = message(&e);
    assert!(
        msg.starts_with(&format!("key file {}: ", bad.display())) && msg.contains("no ':'"),
        "{msg}"
    );

    let big = dir.join("big");
    std::fs::write(&big, vec![b' '; MAX_KEY_FILE_LEN as usize + 1]).unwrap();
    let e = SecretKey::from_file(&big).unwrap_err();
    assert!(matches!(e, KeyError::FileTooLarge { .. }), "{e:?}");

    let e = SecretKey::from_file(&dir).unwrap_err();
    assert!(matches!(e, KeyError::Read { .. }), "a directory: {e:?}");

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn debug_shows_no_secret() {
    let shown = format!("{:?}", secret());
    assert_eq!(shown, "SecretKey { name: \"test-cache-1\", .. }");
}

#[test]
fn parses_stored_signatures_byte_exactly() {
    let sig = NamedSignature::parse(SIG_A).unwrap();
    assert_eq!(sig.name, "test-cache-1");
    assert_eq!(
        BASE64.encode(sig.bytes),
        SIG_A.split_once(':').unwrap().1,
        "the 64 bytes, re-encoded, are the stored base64"
    );
    // Padding is optional, as for Nix's decoder.
    let unpadded = SIG_A.trim_end_matches('=');
    assert_eq!(NamedSignature::parse(unpadded).unwrap(), sig);
    // The name is everything before the first ':'.
    let odd = format!("a.b-c_1{}", &SIG_A["test-cache-1".len()..]);
    assert_eq!(NamedSignature::parse(&odd).unwrap().name, "a.b-c_1");
}

#[test]
fn rejects_each_malformed_signature_precisely() {
    let data = SIG_A.split_once(':').unwrap().1;
    let name = |n: &str| n.to_owned();
    let cases: Vec<(String, SignatureError)> = vec![
        ("no-colon".into(), SignatureError::NoColon(name("no-colon"))),
        (String::new(), SignatureError::NoColon(String::new())),
        (
            format!(":{data}"),
            SignatureError::EmptyName(format!(":{data}")),
        ),
        (
            format!("a b:{data}"),
            SignatureError::NameByte {
                name: name("a b"),
                byte: b' ',
                position: 1,
            },
        ),
        (
            format!("ab\n:{data}"),
            SignatureError::NameByte {
                name: name("ab\n"),
                byte: b'\n',
                position: 2,
            },
        ),
        (
            format!("k:{}!{}", &data[..10], &data[11..]),
            SignatureError::Base64 {
                name: name("k"),
                position: 10,
            },
        ),
        (
            format!("k:{data}\n"),
            SignatureError::Base64 {
                name: name("k"),
                position: data.len(),
            },
        ),
        (
            "k:".into(),
            SignatureError::Length {
                name: name("k"),
                actual: 0,
            },
        ),
        (
            format!("k:{}", BASE64.encode([7u8; 63])),
            SignatureError::Length {
                name: name("k"),
                actual: 63,
            },
        ),
        (
            format!("k:{}", BASE64.encode([7u8; 65])),
            SignatureError::Length {
                name: name("k"),
                actual: 65,
            },
        ),
        // The second ':' is part of the base64, where it is not allowed.
        (
            format!("k:x:{data}"),
            SignatureError::Base64 {
                name: name("k"),
                position: 1,
            },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(NamedSignature::parse(&text), Err(want), "{text:?}");
    }
    assert_eq!(
        SignatureError::Length {
            name: name("k"),
            actual: 63
        }
        .to_string(),
        "signature by \"k\": decodes to 63 bytes, an Ed25519 signature is 64"
    );
}

#[test]
fn merges_ours_with_the_stores_by_key_name() {
    let ours = vec![SIG_A.to_owned()];
    let other = format!("other-1:{}", SIG_B.split_once(':').unwrap().1);
    let same_name_as_ours = SIG_B.to_owned();
    let stored = vec![
        same_name_as_ours,
        other.clone(),
        "broken".to_owned(),
        format!("other-1:{}", SIG_A.split_once(':').unwrap().1),
    ];
    let (sigs, rejected) = merge_signatures(&ours, &stored);
    assert_eq!(sigs, [SIG_A, other.as_str()], "ours wins, one per name");
    assert_eq!(rejected, [SignatureError::NoColon("broken".into())]);

    let (sigs, rejected) = merge_signatures(&[], &stored[..2]);
    assert_eq!(sigs, [SIG_B, other.as_str()], "no keys: the stored ones");
    assert!(rejected.is_empty());
}
