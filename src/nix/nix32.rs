//! Nix's own base-32 ("nix32", `docs/protocols.md` §1).
//!
//! Not RFC 4648: the alphabet omits `e o u t`, there is no padding, and the
//! bit order is reversed (the last character holds the low bits of byte 0).

use thiserror::Error;

/// Digit value = index. The letters `e`, `o`, `u` and `t` are left out.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Value of each ASCII byte as a nix32 digit, or `0xff` when it is not one.
const DIGIT: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 32 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Nix32Error {
    #[error("nix32 string has {actual} characters, expected {expected}")]
    Length { expected: usize, actual: usize },
    #[error("invalid nix32 character {byte:#04x} at position {position}")]
    Character { byte: u8, position: usize },
    #[error("non-canonical nix32: bits set beyond the {bytes}-byte value")]
    NonCanonical { bytes: usize },
}

/// Number of characters that encode `n` bytes: `floor((8n - 1) / 5) + 1`, or 0.
pub const fn encoded_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (8 * n - 1) / 5 + 1
    }
}

/// The value of `c` as a nix32 digit, if it is one.
pub fn digit(c: u8) -> Option<u8> {
    match DIGIT[c as usize] {
        0xff => None,
        d => Some(d),
    }
}

/// Encodes `bytes`, highest 5-bit group first.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for group in (0..len).rev() {
        let bit = group * 5;
        let (i, j) = (bit / 8, bit % 8);
        let mut c = u16::from(bytes[i]) >> j;
        if let Some(&next) = bytes.get(i + 1) {
            c |= u16::from(next) << (8 - j);
        }
        out.push(ALPHABET[usize::from(c & 0x1f)] as char);
    }
    out
}

/// Decodes a nix32 string into exactly `N` bytes, rejecting a wrong length,
/// characters outside the alphabet, and bits beyond `8 * N` (non-canonical).
pub fn decode<const N: usize>(s: &str) -> Result<[u8; N], Nix32Error> {
    let s = s.as_bytes();
    let expected = encoded_len(N);
    if s.len() != expected {
        return Err(Nix32Error::Length {
            expected,
            actual: s.len(),
        });
    }
    let mut out = [0u8; N];
    for (k, &c) in s.iter().rev().enumerate() {
        let d = digit(c).ok_or(Nix32Error::Character {
            byte: c,
            position: s.len() - 1 - k,
        })?;
        let bit = k * 5;
        let (i, j) = (bit / 8, bit % 8);
        out[i] |= d << j;
        let carry = u16::from(d) >> (8 - j);
        if carry != 0 {
            match out.get_mut(i + 1) {
                Some(b) => *b |= carry as u8,
                None => return Err(Nix32Error::NonCanonical { bytes: N }),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `docs/protocols.md` §1.4 test vectors, all checked against Nix 2.8.
    const VECTORS: &[(&str, &str)] = &[
        (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
        ),
        (
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
        ),
        (
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "143xibwh31h9bvxzalr0sjvbbvpa6ffs",
        ),
        (
            "d41d8cd98f00b204e9800998ecf8427e",
            "3y8bwfr609h3lh9ch0izcqq7fl",
        ),
        ("00", "00"),
        ("01", "01"),
        ("1f", "0z"),
        ("20", "10"),
        ("ff", "7z"),
        ("0100", "0001"),
        (
            "7daba60473c6b92b848d53c87815d4b7fe5c6f8a",
            "i9pmrzmpshapij2kin22pff6fc2adavx",
        ),
        ("", ""),
    ];

    #[test]
    fn encodes_spec_vectors() {
        for (h, want) in VECTORS {
            assert_eq!(encode(&hex(h)), *want, "encoding {h}");
        }
    }

    #[test]
    fn decodes_spec_vectors() {
        assert_eq!(
            decode::<32>(VECTORS[0].1).unwrap().to_vec(),
            hex(VECTORS[0].0)
        );
        assert_eq!(
            decode::<32>(VECTORS[1].1).unwrap().to_vec(),
            hex(VECTORS[1].0)
        );
        assert_eq!(
            decode::<20>(VECTORS[2].1).unwrap().to_vec(),
            hex(VECTORS[2].0)
        );
        assert_eq!(
            decode::<16>(VECTORS[3].1).unwrap().to_vec(),
            hex(VECTORS[3].0)
        );
        assert_eq!(decode::<1>("7z").unwrap(), [0xff]);
        assert_eq!(decode::<2>("0001").unwrap(), [1, 0]);
        assert_eq!(decode::<0>("").unwrap(), [0u8; 0]);
    }

    #[test]
    fn encoded_lengths() {
        for (n, len) in [(0, 0), (1, 2), (16, 26), (20, 32), (32, 52), (64, 103)] {
            assert_eq!(encoded_len(n), len);
        }
    }

    #[test]
    fn rejects_bad_input() {
        let good = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
        assert_eq!(
            decode::<32>(&good[1..]),
            Err(Nix32Error::Length {
                expected: 52,
                actual: 51
            })
        );
        for bad in [b'e', b'o', b'u', b't', b'A', b'-', b' '] {
            let mut s = good.as_bytes().to_vec();
            s[5] = bad;
            let s = String::from_utf8(s).unwrap();
            assert_eq!(
                decode::<32>(&s),
                Err(Nix32Error::Character {
                    byte: bad,
                    position: 5
                }),
                "{s}"
            );
        }
        // sha256: the first character carries only one bit, so it must be 0 or 1.
        let mut s = good.to_string();
        s.replace_range(0..1, "2");
        assert_eq!(
            decode::<32>(&s),
            Err(Nix32Error::NonCanonical { bytes: 32 })
        );
        // md5: 26 characters hold 130 bits, so the first character carries
        // bits 125..=129 and only 0..=7 keep the two above 128 clear.
        // (docs/protocols.md §1.3; Nix 2.8 accepts the first, refuses the second.)
        assert!(decode::<16>("7y8bwfr609h3lh9ch0izcqq7fl").is_ok());
        assert_eq!(
            decode::<16>("8y8bwfr609h3lh9ch0izcqq7fl"),
            Err(Nix32Error::NonCanonical { bytes: 16 })
        );
        assert_eq!(
            decode::<1>("80"),
            Err(Nix32Error::NonCanonical { bytes: 1 })
        );
    }

    #[test]
    fn round_trips_every_byte_pattern() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..500 {
            let mut b = [0u8; 20];
            for x in b.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *x = state as u8;
            }
            assert_eq!(decode::<20>(&encode(&b)).unwrap(), b);
        }
    }
}
