//! Worker-protocol framing: u64, strings, lists (`docs/protocols.md` §7.2, with
//! the primitives of docs/protocols.md §3).
//!
//! Pure functions over `Read`/`Write`; no sockets here. Every length read off
//! the wire is checked against a caller-given [`Bound`] *before* anything is
//! allocated, so a desynchronised or hostile peer cannot make us allocate or
//! read without limit.

use std::io::{self, Read};

use thiserror::Error;

use crate::nix::wire_str::padding;
pub use crate::nix::wire_str::put_str;

/// Longest string we accept, and the field it is for (named in errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    pub what: &'static str,
    pub max: usize,
}

impl Bound {
    pub const fn new(what: &'static str, max: usize) -> Self {
        Bound { what, max }
    }
}

#[derive(Debug, Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{what}: length {len} exceeds the limit of {max}")]
    TooLong {
        what: &'static str,
        len: u64,
        max: usize,
    },
    #[error("{what}: {count} entries exceed the limit of {max}")]
    TooMany {
        what: &'static str,
        count: u64,
        max: usize,
    },
    #[error("{what}: non-zero padding after {len} bytes")]
    Padding { what: &'static str, len: usize },
    #[error("{what}: not UTF-8")]
    Utf8 { what: &'static str },
    #[error("{what}: boolean is {value}, expected 0 or 1")]
    Bool { what: &'static str, value: u64 },
}

pub fn read_u64(r: &mut impl Read) -> Result<u64, WireError> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A u64 that must be 0 or 1 (docs/protocols.md §7.2 bools). Anything else means we are out of
/// step with the peer.
pub fn read_bool(r: &mut impl Read, what: &'static str) -> Result<bool, WireError> {
    match read_u64(r)? {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(WireError::Bool { what, value }),
    }
}

/// `u64 len`, the bytes, then zero padding to a multiple of 8 (docs/protocols.md §3).
pub fn read_bytes(r: &mut impl Read, bound: Bound) -> Result<Vec<u8>, WireError> {
    let len = read_u64(r)?;
    if len > bound.max as u64 {
        return Err(WireError::TooLong {
            what: bound.what,
            len,
            max: bound.max,
        });
    }
    let len = len as usize;
    let mut buf = vec![0u8; len + padding(len as u64)];
    r.read_exact(&mut buf)?;
    if buf[len..].iter().any(|&b| b != 0) {
        return Err(WireError::Padding {
            what: bound.what,
            len,
        });
    }
    buf.truncate(len);
    Ok(buf)
}

pub fn read_string(r: &mut impl Read, bound: Bound) -> Result<String, WireError> {
    String::from_utf8(read_bytes(r, bound)?).map_err(|_| WireError::Utf8 { what: bound.what })
}

/// `u64 count` then `count` strings: Nix's string lists and sets.
pub fn read_string_list(
    r: &mut impl Read,
    max_count: usize,
    bound: Bound,
) -> Result<Vec<String>, WireError> {
    let count = read_u64(r)?;
    if count > max_count as u64 {
        return Err(WireError::TooMany {
            what: bound.what,
            count,
            max: max_count,
        });
    }
    // Capacity grows with what actually arrives, not with the announced count.
    let mut out = Vec::with_capacity((count as usize).min(64));
    for _ in 0..count {
        out.push(read_string(r, bound)?);
    }
    Ok(out)
}

// Requests are built in memory and sent with one write, so the writers
// append to a buffer and cannot fail.

pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn write_string_list<S: AsRef<str>>(out: &mut Vec<u8>, items: &[S]) {
    write_u64(out, items.len() as u64);
    for s in items {
        put_str(out, s.as_ref().as_bytes());
    }
}

/// Wire bytes to build replies in unit tests: a u64 and a padded string.
#[cfg(test)]
pub(crate) mod test_bytes {
    pub fn u(v: u64) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }

    pub fn s(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        super::put_str(&mut out, text.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: Bound = Bound::new("test string", 64);

    fn encode(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_str(&mut out, s);
        out
    }

    #[test]
    fn u64_is_little_endian() {
        let mut out = Vec::new();
        write_u64(&mut out, 0x6e697863);
        assert_eq!(out, [0x63, 0x78, 0x69, 0x6e, 0, 0, 0, 0]);
        assert_eq!(read_u64(&mut &out[..]).unwrap(), 0x6e697863);
        assert_eq!(
            read_u64(&mut &[0xff; 8][..]).unwrap(),
            u64::MAX,
            "all 64 bits"
        );
    }

    #[test]
    fn strings_byte_exact() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", &[0, 0, 0, 0, 0, 0, 0, 0]),
            (b"(", &[1, 0, 0, 0, 0, 0, 0, 0, b'(', 0, 0, 0, 0, 0, 0, 0]),
            (
                b"2.8.0",
                &[
                    5, 0, 0, 0, 0, 0, 0, 0, b'2', b'.', b'8', b'.', b'0', 0, 0, 0,
                ],
            ),
            (
                b"contents",
                &[
                    8, 0, 0, 0, 0, 0, 0, 0, b'c', b'o', b'n', b't', b'e', b'n', b't', b's',
                ],
            ),
            (
                b"nix-archive-1",
                &[
                    13, 0, 0, 0, 0, 0, 0, 0, b'n', b'i', b'x', b'-', b'a', b'r', b'c', b'h', b'i',
                    b'v', b'e', b'-', b'1', 0, 0, 0,
                ],
            ),
        ];
        for (plain, wire) in cases {
            assert_eq!(&encode(plain), wire, "encode {plain:?}");
            let mut r = *wire;
            assert_eq!(&read_bytes(&mut r, ANY).unwrap(), plain, "decode {plain:?}");
            assert!(r.is_empty(), "{plain:?}: padding consumed");
        }
    }

    #[test]
    fn rejects_nonzero_padding() {
        for pad_byte in 13..16 {
            let mut wire = encode(b"nix-archive-1");
            wire[8 + pad_byte] = 1;
            match read_bytes(&mut &wire[..], ANY) {
                Err(WireError::Padding { len: 13, .. }) => {}
                other => panic!("padding byte {pad_byte}: {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_overlong_length_before_allocating() {
        // A length near u64::MAX would abort the process if we allocated it.
        for len in [65u64, 1 << 40, u64::MAX] {
            let wire = len.to_le_bytes();
            match read_bytes(&mut &wire[..], ANY) {
                Err(WireError::TooLong {
                    len: l, max: 64, ..
                }) => assert_eq!(l, len),
                other => panic!("{len}: {other:?}"),
            }
        }
        // The limit itself is allowed.
        let s = [b'x'; 64];
        assert_eq!(read_bytes(&mut &encode(&s)[..], ANY).unwrap(), s);
    }

    #[test]
    fn truncated_input_is_an_io_error() {
        let wire = encode(b"hello");
        for cut in [0, 4, 8, 12, 15] {
            match read_bytes(&mut &wire[..cut], ANY) {
                Err(WireError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn strings_must_be_utf8() {
        assert!(matches!(
            read_string(&mut &encode(b"\xff")[..], ANY),
            Err(WireError::Utf8 { .. })
        ));
        assert_eq!(read_string(&mut &encode(b"ok")[..], ANY).unwrap(), "ok");
    }

    #[test]
    fn bools_are_strict() {
        let wire = [0u64, 1, 2].map(u64::to_le_bytes).concat();
        let mut r = &wire[..];
        assert!(!read_bool(&mut r, "flag").unwrap());
        assert!(read_bool(&mut r, "flag").unwrap());
        assert!(matches!(
            read_bool(&mut r, "flag"),
            Err(WireError::Bool { value: 2, .. })
        ));
    }

    #[test]
    fn string_lists() {
        let mut wire = Vec::new();
        write_string_list(&mut wire, &["a", "", "bcdefghij"]);
        let expected = [
            &[3u8, 0, 0, 0, 0, 0, 0, 0][..],
            &[1, 0, 0, 0, 0, 0, 0, 0, b'a', 0, 0, 0, 0, 0, 0, 0],
            &[0; 8],
            &[9, 0, 0, 0, 0, 0, 0, 0],
            b"bcdefghij\0\0\0\0\0\0\0",
        ]
        .concat();
        assert_eq!(wire, expected);
        assert_eq!(
            read_string_list(&mut &wire[..], 3, ANY).unwrap(),
            ["a", "", "bcdefghij"]
        );
        match read_string_list(&mut &wire[..], 2, ANY) {
            Err(WireError::TooMany {
                count: 3, max: 2, ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // A huge count with no data behind it fails on the data, not on allocation.
        let wire = (u64::MAX / 2).to_le_bytes();
        assert!(matches!(
            read_string_list(&mut &wire[..], usize::MAX, ANY),
            Err(WireError::Io(_))
        ));
        let mut empty = Vec::new();
        write_string_list::<&str>(&mut empty, &[]);
        assert_eq!(empty, [0; 8]);
    }
}
