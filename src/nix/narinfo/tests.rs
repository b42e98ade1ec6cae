//! Tests of `narinfo.rs`: byte-exact rendering against the narinfo a real Nix
//! accepted (`docs/protocols.md` §5.3) and Nix's parse rules (docs/protocols.md §4.1).

use super::parse::{NarInfo, NarInfoError};
use super::*;
use crate::nix::hash::HashError;
use crate::nix::path_info::tests::ref_txt;
use crate::nix::store_path::StorePathError;

const HELLO: &str = "i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt";
const REF: &str = "wmm9hngfwxsjqpiy50lligndn8n83f6w-ref.txt";
const NAR32: &str = "1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl";
const SIG_B: &str = "test-cache-1:RvgguPkrgkxKkHjxRHhkvW4Y7NMmCpxEs7wPME2s+9MI5qnG6uQZWhpG9UYR0tzPOgGeYx4smOokvw4d60fUBg==";
const CA: &str = "text:sha256:1sn3ap5rcl7ai63rmink9spijl8kykz8v44axykd8cnkgb387pd2";
const DRV: &str = "9ygls0mbwcvql4g896aar9vxfbzqwf0n-logtest.drv";

/// The narinfo of docs/protocols.md §5.3, byte for byte, as served to and accepted by Nix 2.8.
const SPEC_NARINFO: &str = "\
StorePath: /nix/store/wmm9hngfwxsjqpiy50lligndn8n83f6w-ref.txt
URL: nar/wmm9hngfwxsjqpiy50lligndn8n83f6w-1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl.nar
Compression: none
NarHash: sha256:1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl
NarSize: 176
References: i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt
Sig: test-cache-1:RvgguPkrgkxKkHjxRHhkvW4Y7NMmCpxEs7wPME2s+9MI5qnG6uQZWhpG9UYR0tzPOgGeYx4smOokvw4d60fUBg==
";

fn dir() -> StoreDir {
    StoreDir::default()
}

fn sp(base: &str) -> StorePath {
    StorePath::from_base_name(base).unwrap()
}

/// The head every rendering of ref.txt starts with (no References yet).
fn head() -> String {
    format!(
        "StorePath: /nix/store/{REF}\nURL: nar/wmm9hngfwxsjqpiy50lligndn8n83f6w-{NAR32}.nar\n\
         Compression: none\nNarHash: sha256:{NAR32}\nNarSize: 176\n"
    )
}

#[test]
fn renders_the_spec_narinfo_byte_for_byte() {
    let mut info = ref_txt();
    info.ca = None;
    assert_eq!(render(&info, &dir(), &[SIG_B.to_owned()]), SPEC_NARINFO);
}

#[test]
fn renders_every_optional_field() {
    let other = "test-cache-2:AAAA";
    let cases: Vec<(&str, PathInfo, Vec<String>, String)> = vec![
        (
            "no references, no sigs, no CA",
            PathInfo {
                references: vec![],
                ca: None,
                ..ref_txt()
            },
            vec![],
            head(),
        ),
        (
            "CA after the Sig lines",
            ref_txt(),
            vec![SIG_B.into()],
            format!("{}Sig: {SIG_B}\nCA: {CA}\n", references_and(&[HELLO])),
        ),
        (
            "deriver as a base name, sigs in the given order",
            PathInfo {
                deriver: Some(sp(DRV)),
                ca: None,
                ..ref_txt()
            },
            vec![other.into(), SIG_B.into()],
            format!(
                "{}Deriver: {DRV}\nSig: {other}\nSig: {SIG_B}\n",
                references_and(&[HELLO])
            ),
        ),
        (
            "references sorted, self-reference kept",
            PathInfo {
                references: vec![sp(REF), sp(HELLO)],
                ca: None,
                ..ref_txt()
            },
            vec![],
            references_and(&[HELLO, REF]),
        ),
        (
            "a Sig or CA with a line break is left out",
            PathInfo {
                references: vec![],
                ca: Some("text:x\nStorePath: evil".into()),
                ..ref_txt()
            },
            vec!["k:a\nURL: evil".into(), "k:b\r".into(), other.into()],
            format!("{}Sig: {other}\n", head()),
        ),
    ];
    for (what, info, sigs, expected) in cases {
        let got = render(&info, &dir(), &sigs);
        assert_eq!(got, expected, "{what}");
        assert!(
            got.len() <= rendered_len_bound(&info, &dir(), &sigs),
            "{what}: capacity bound too small"
        );
    }
}

fn references_and(refs: &[&str]) -> String {
    format!("{}References: {}\n", head(), refs.join(" "))
}

#[test]
fn renders_under_another_store_dir() {
    let mut info = ref_txt();
    info.ca = None;
    info.references.clear();
    let gnu = StoreDir::new("/gnu/store").unwrap();
    let got = render(&info, &gnu, &[] as &[&str]);
    assert!(got.starts_with(&format!("StorePath: /gnu/store/{REF}\nURL: nar/")));
}

#[test]
fn nar_url_is_nix_serves() {
    let info = ref_txt();
    assert_eq!(
        nar_url(&info.path, &info.nar_hash),
        format!("nar/wmm9hngfwxsjqpiy50lligndn8n83f6w-{NAR32}.nar")
    );
    assert_eq!(nar_url(&info.path, &info.nar_hash).len(), nar_url_len());
}

#[test]
fn parses_the_spec_narinfo() {
    let n = NarInfo::parse(SPEC_NARINFO, &dir()).unwrap();
    assert_eq!(
        n,
        NarInfo {
            store_path: sp(REF),
            url: format!("nar/wmm9hngfwxsjqpiy50lligndn8n83f6w-{NAR32}.nar"),
            compression: "none".into(),
            file_hash: None,
            file_size: None,
            nar_hash: ref_txt().nar_hash,
            nar_size: 176,
            references: vec![sp(HELLO)],
            deriver: None,
            system: None,
            sigs: vec![SIG_B.into()],
            ca: None,
        }
    );
}

#[test]
fn render_then_parse_round_trips() {
    let sigs: Vec<String> = vec!["z:2".into(), SIG_B.into(), "a:1".into()];
    let infos = [
        ref_txt(),
        PathInfo {
            references: vec![sp(REF), sp(HELLO)],
            deriver: Some(sp(DRV)),
            nar_size: u64::MAX,
            ca: None,
            ..ref_txt()
        },
        PathInfo {
            references: vec![],
            ..ref_txt()
        },
    ];
    for info in infos {
        let text = render(&info, &dir(), &sigs);
        let n = NarInfo::parse(&text, &dir()).unwrap();
        let mut sorted_refs = info.references.clone();
        sorted_refs.sort();
        let mut sorted_sigs = sigs.clone();
        sorted_sigs.sort();
        assert_eq!(n.store_path, info.path, "{text}");
        assert_eq!(n.url, nar_url(&info.path, &info.nar_hash));
        assert_eq!(n.compression, "none");
        assert_eq!(n.nar_hash, info.nar_hash);
        assert_eq!(n.nar_size, info.nar_size);
        assert_eq!(n.references, sorted_refs);
        assert_eq!(n.deriver, info.deriver);
        assert_eq!(n.sigs, sorted_sigs);
        assert_eq!(n.ca, info.ca);
    }
}

/// A minimal valid narinfo with `extra` appended.
fn minimal(extra: &str) -> String {
    format!("StorePath: /nix/store/{REF}\nURL: u\nNarHash: sha256:{NAR32}\nNarSize: 1\n{extra}")
}

#[test]
fn follows_nix_quirks() {
    let d = dir();
    // Compression missing or empty means bzip2.
    assert_eq!(
        NarInfo::parse(&minimal(""), &d).unwrap().compression,
        "bzip2"
    );
    let empty = minimal("Compression: \n");
    assert_eq!(NarInfo::parse(&empty, &d).unwrap().compression, "bzip2");
    // Unknown keys are ignored; so is a line without ':' (it glues onto the
    // next line as one unknown key).
    let n = NarInfo::parse(&minimal("X-Foo: bar\njunk\nSystem: x86_64-linux\n"), &d).unwrap();
    assert_eq!(n.system, None);
    assert_eq!(n, NarInfo::parse(&minimal(""), &d).unwrap());
    // A blank line glues onto the next: that key is lost, silently.
    let n = NarInfo::parse(&minimal("\nSig: a:b\n"), &d).unwrap();
    assert!(n.sigs.is_empty());
    // "Key:\n" skips the newline: the value swallows the whole next line.
    let n = NarInfo::parse(&minimal("System:\nabc: d\n"), &d).unwrap();
    assert_eq!(n.system.as_deref(), Some("abc: d"));
    // Values are not trimmed.
    let n = NarInfo::parse(&minimal("System:  x \n"), &d).unwrap();
    assert_eq!(n.system.as_deref(), Some(" x "));
    // unknown-deriver is no deriver; References tolerate extra spaces, keep
    // the set sorted and without duplicates.
    let text = minimal(&format!(
        "Deriver: unknown-deriver\nReferences:  {REF}  {HELLO} {REF}\n"
    ));
    let n = NarInfo::parse(&text, &d).unwrap();
    assert_eq!(n.deriver, None);
    assert_eq!(n.references, vec![sp(HELLO), sp(REF)]);
    // An empty References or CA may be followed by a real one.
    let text = minimal(&format!(
        "References: \nReferences: {HELLO}\nCA: \nCA: {CA}\n"
    ));
    let n = NarInfo::parse(&text, &d).unwrap();
    assert_eq!(n.references, vec![sp(HELLO)]);
    assert_eq!(n.ca.as_deref(), Some(CA));
    // NarHash in any prefixed form; FileHash and FileSize kept.
    let hex = ref_txt().nar_hash.to_base16();
    let text = minimal(&format!(
        "NarHash: sha256:{hex}\nFileHash: sha256:{NAR32}\nFileSize: 0\n"
    ));
    let n = NarInfo::parse(&text, &d).unwrap();
    assert_eq!(n.nar_hash, ref_txt().nar_hash);
    assert_eq!(n.file_hash.as_deref(), Some(&*format!("sha256:{NAR32}")));
    assert_eq!(n.file_size, Some(0));
    // A later line overwrites an earlier one; Sig is a sorted set.
    let n = NarInfo::parse(&minimal("NarSize: 7\nSig: b:2\nSig: a:1\nSig: b:2\n"), &d).unwrap();
    assert_eq!(n.nar_size, 7);
    assert_eq!(n.sigs, vec!["a:1".to_owned(), "b:2".to_owned()]);
    // Another store directory.
    let gnu = StoreDir::new("/gnu/store").unwrap();
    let text = minimal("").replace("/nix/store", "/gnu/store");
    assert_eq!(NarInfo::parse(&text, &gnu).unwrap().store_path, sp(REF));
}

#[test]
fn rejects_each_corrupt_form() {
    use NarInfoError as E;
    let not_in_store = || StorePathError::NotInStore("/nix/store".into());
    let cases: Vec<(&str, String, NarInfoError)> = vec![
        (
            "last line without newline",
            minimal("Sig: a:b"),
            E::NoNewline { line: 5 },
        ),
        (
            "empty value without newline",
            minimal("URL:"),
            E::NoNewline { line: 5 },
        ),
        (
            "trailing text without colon",
            minimal("junk"),
            E::NoColon { line: 5 },
        ),
        (
            "CRLF line endings",
            SPEC_NARINFO.replace('\n', "\r\n"),
            E::StorePath {
                line: 1,
                source: StorePathError::NameCharacter {
                    byte: b'\r',
                    position: 7,
                },
            },
        ),
        ("trailing blank line", minimal("\n"), E::NoColon { line: 5 }),
        ("empty text", String::new(), E::Missing("StorePath")),
        (
            "no StorePath",
            minimal("").replacen("StorePath", "X", 1),
            E::Missing("StorePath"),
        ),
        (
            "no NarHash",
            minimal("").replacen("NarHash", "X", 1),
            E::Missing("NarHash"),
        ),
        (
            "no URL",
            minimal("").replacen("URL", "X", 1),
            E::Missing("URL"),
        ),
        ("empty URL", minimal("URL: \n"), E::Missing("URL")),
        (
            "no NarSize",
            minimal("").replacen("NarSize", "X", 1),
            E::ZeroNarSize,
        ),
        ("NarSize 0", minimal("NarSize: 0\n"), E::ZeroNarSize),
        (
            "signed NarSize",
            minimal("NarSize: +5\n"),
            E::Number {
                line: 5,
                field: "NarSize",
            },
        ),
        (
            "NarSize beyond u64",
            minimal("NarSize: 18446744073709551616\n"),
            E::Number {
                line: 5,
                field: "NarSize",
            },
        ),
        (
            "FileSize with a space",
            minimal("FileSize: 1 \n"),
            E::Number {
                line: 5,
                field: "FileSize",
            },
        ),
        (
            "NarHash too short",
            minimal("NarHash: sha256:abcde\n"),
            E::Hash {
                line: 5,
                field: "NarHash",
                source: HashError::Length(5),
            },
        ),
        (
            "NarHash not sha256",
            minimal(&format!("NarHash: md5:{NAR32}\n")),
            E::Hash {
                line: 5,
                field: "NarHash",
                source: HashError::Algorithm("md5:1snz5sd22qrv".into()),
            },
        ),
        (
            "NarHash non-canonical nix32",
            minimal(&format!("NarHash: sha256:2{}\n", &NAR32[1..])),
            E::Hash {
                line: 5,
                field: "NarHash",
                source: HashError::Nix32(crate::nix::nix32::Nix32Error::NonCanonical { bytes: 32 }),
            },
        ),
        (
            "bad FileHash",
            minimal("FileHash: sha256:abcde\n"),
            E::Hash {
                line: 5,
                field: "FileHash",
                source: HashError::Length(5),
            },
        ),
        (
            "StorePath outside the store dir",
            minimal("").replacen("/nix/store", "/gnu/store", 1),
            E::StorePath {
                line: 1,
                source: not_in_store(),
            },
        ),
        (
            "StorePath as a base name",
            minimal(&format!("StorePath: {REF}\n")),
            E::StorePath {
                line: 5,
                source: not_in_store(),
            },
        ),
        (
            "full path in References",
            minimal(&format!("References: /nix/store/{HELLO}\n")),
            E::Reference {
                line: 5,
                source: StorePathError::HashCharacter {
                    byte: b'/',
                    position: 0,
                },
            },
        ),
        (
            "full path as Deriver",
            minimal(&format!("Deriver: /nix/store/{DRV}\n")),
            E::Deriver {
                line: 5,
                source: StorePathError::HashCharacter {
                    byte: b'/',
                    position: 0,
                },
            },
        ),
        (
            "empty Deriver",
            minimal("Deriver: \n"),
            E::Deriver {
                line: 5,
                source: StorePathError::HashLength(0),
            },
        ),
        (
            "second References",
            minimal(&format!("References: {HELLO}\nReferences: \n")),
            E::ExtraReferences { line: 6 },
        ),
        (
            "second CA",
            minimal(&format!("CA: {CA}\nSig: a:b\nCA: {CA}\n")),
            E::ExtraCa { line: 7 },
        ),
        (
            "unknown CA scheme",
            minimal("CA: sha256:abc\n"),
            E::Ca { line: 5 },
        ),
        (
            "value starting inside a character",
            minimal("System:é\n"),
            E::SplitCharacter { line: 5 },
        ),
    ];
    for (what, text, expected) in cases {
        assert_eq!(
            NarInfo::parse(&text, &dir()),
            Err(expected),
            "{what}: {text:?}"
        );
    }
}

#[test]
fn line_numbers_count_glued_lines() {
    // "junk\nX: y" is one entry spanning two lines; the error is on line 7.
    let text = minimal("junk\nX: y\nNarSize: z\n");
    assert_eq!(
        NarInfo::parse(&text, &dir()),
        Err(NarInfoError::Number {
            line: 7,
            field: "NarSize"
        })
    );
}

#[test]
fn renders_zstd_compression() {
    let mut info = ref_txt();
    info.ca = None;
    let zstd = Compression::Zstd { level: 3 };
    let got = render_compressed(&info, &dir(), &[SIG_B.to_owned()], zstd);
    let want = SPEC_NARINFO
        .replace(".nar\n", ".nar.zst\n")
        .replace("Compression: none", "Compression: zstd");
    assert_eq!(got, want);
    assert_eq!(
        render_compressed(&info, &dir(), &[SIG_B.to_owned()], Compression::None),
        SPEC_NARINFO
    );
    // What a Nix client reads back.
    let parsed = NarInfo::parse(&got, &dir()).unwrap();
    assert_eq!(parsed.compression, "zstd");
    assert!(parsed.url.ends_with(".nar.zst"));
    assert_eq!((parsed.file_hash, parsed.file_size), (None, None));
}
