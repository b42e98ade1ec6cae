//! The NAR listing made from a NAR stream (src/nix/nar/listing/from_nar.rs),
//! the path for a daemon whose files are not on this machine: on any bytes
//! it never panics, never loops and never allocates without bound
//! (libFuzzer's RSS limit); a NAR it accepts is one the independent parser
//! (`src/nar.rs`) accepts too, and its listing is the one written here from
//! that parser's tree, with offsets counted here (docs/protocols.md §3.5); a
//! NAR the independent parser accepts is refused only for one of our bounds
//! (name and target lengths, nesting) or a name Nix refuses; and told a
//! wrong NarSize, the parse fails.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nix_serve_sd::nix::nar::listing::{listing_from_nar, NarParseError};
use nix_serve_sd_fuzz::nar::{self, Node};

/// The NAR bytes of `str(b)` for a string of `len` bytes.
fn str_len(len: usize) -> u64 {
    8 + len.div_ceil(8) as u64 * 8
}

/// A JSON string of raw bytes as Nix 2.8 writes it.
fn json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b if b < 0x20 => out.extend_from_slice(format!("\\u{:04x}", b).as_bytes()),
            b => out.push(b),
        }
    }
    out.push(b'"');
}

/// Writes the listing node of `node`, which starts at NAR offset `at`
/// (its `"("`); returns the offset just past its `")"`.
fn listing(node: &Node, at: u64, out: &mut Vec<u8>) -> u64 {
    let head = str_len(1) + str_len(4);
    match node {
        Node::File {
            executable,
            contents,
        } => {
            let mut at = at + head + str_len(7);
            if *executable {
                at += str_len(10) + str_len(0);
            }
            at += str_len(8) + 8;
            out.extend_from_slice(
                format!(r#"{{"type":"regular","size":{}"#, contents.len()).as_bytes(),
            );
            if *executable {
                out.extend_from_slice(br#","executable":true"#);
            }
            out.extend_from_slice(format!(r#","narOffset":{at}}}"#).as_bytes());
            at - 8 + str_len(contents.len()) + str_len(1)
        }
        Node::Symlink { target } => {
            out.extend_from_slice(br#"{"type":"symlink","target":"#);
            json_string(out, target);
            out.push(b'}');
            at + head + str_len(7) + str_len(6) + str_len(target.len()) + str_len(1)
        }
        Node::Dir(entries) => {
            out.extend_from_slice(br#"{"type":"directory","entries":{"#);
            let mut at = at + head + str_len(9);
            for (i, (name, child)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_string(out, name);
                out.push(b':');
                at += str_len(5) + str_len(1) + str_len(4) + str_len(name.len()) + str_len(4);
                at = listing(child, at, out) + str_len(1);
            }
            out.extend_from_slice(b"}}");
            at + str_len(1)
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let size = data.len() as u64;
    let ours = listing_from_nar(data, size);
    match (&ours, nar::parse(data)) {
        (Ok(json), Ok(tree)) => {
            let mut want = br#"{"version":1,"root":"#.to_vec();
            let end = listing(&tree, str_len(13), &mut want);
            want.push(b'}');
            assert_eq!(end, size, "the size arithmetic here is wrong");
            assert!(
                *json == want,
                "listing differs:\nours {}\nwant {}",
                String::from_utf8_lossy(json),
                String::from_utf8_lossy(&want)
            );
        }
        // The independent parser stops at depth 256, we at 2048.
        (Ok(_), Err(e)) if e.contains("too deep") => {}
        (Ok(json), Err(e)) => panic!(
            "accepted what the independent parser refuses ({e}): {}",
            String::from_utf8_lossy(json)
        ),
        (Err(e), Ok(_)) => assert!(
            matches!(
                e,
                NarParseError::TooLong { .. }
                    | NarParseError::Name { .. }
                    | NarParseError::TooDeep { .. }
            ) || e.to_string().contains("symlink target"),
            "refused a NAR the independent parser accepts: {e}"
        ),
        (Err(_), Err(_)) => {}
    }
    if ours.is_ok() {
        assert!(listing_from_nar(data, size + 1).is_err(), "NarSize + 1");
        assert!(
            listing_from_nar(&data[..data.len() - 1], size).is_err(),
            "truncated"
        );
        assert!(listing_from_nar(data, size - 1).is_err(), "NarSize - 1");
    }
});
