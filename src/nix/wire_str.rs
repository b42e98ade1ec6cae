//! The string of Nix's serialisation (`docs/protocols.md` §3 `str`): a u64
//! little-endian length, the bytes, then zero bytes up to a multiple of 8.
//! One encoder for the two formats built on it: the NAR (`nix::nar`) and
//! the nix-daemon worker protocol (`store::wire`, docs/protocols.md §7.2).

/// The zero bytes that follow a `str` of `len` bytes.
pub fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

/// Appends `str(bytes)` to `out`.
pub fn put_str(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
    out.resize(out.len() + padding(bytes.len() as u64), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/protocols.md §3.1: the empty string is eight zero bytes.
    #[test]
    fn byte_exact() {
        let cases: [(&[u8], &[u8]); 4] = [
            (b"", &[0, 0, 0, 0, 0, 0, 0, 0]),
            (b"(", b"\x01\0\0\0\0\0\0\0(\0\0\0\0\0\0\0"),
            (b"12345678", b"\x08\0\0\0\0\0\0\x0012345678"),
            (b"nix-archive-1", b"\x0d\0\0\0\0\0\0\0nix-archive-1\0\0\0"),
        ];
        for (plain, wire) in cases {
            let mut out = b"kept".to_vec();
            put_str(&mut out, plain);
            assert_eq!(&out[..4], b"kept", "{plain:?}: appends");
            assert_eq!(&out[4..], wire, "{plain:?}");
        }
    }

    #[test]
    fn padding_reaches_a_multiple_of_8() {
        for len in 0..=17u64 {
            assert_eq!((len as usize + padding(len)) % 8, 0, "{len}");
            assert!(padding(len) < 8, "{len}");
        }
    }
}
