//! The compressions a NAR from an upstream cache may come in: what
//! `nix copy --to file://…?compression=…` and Hydra write (Nix 2.8
//! `compression.cc`: xz by default, zstd, bzip2, none), decoded as the bytes
//! arrive.

use std::fmt;
use std::io::{self, BufReader, Read};

/// A narinfo's `Compression:` we can decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    None,
    Xz,
    Zstd,
    Bzip2,
}

impl Method {
    /// The narinfo value (already defaulted to `bzip2` when missing, as Nix
    /// reads it); `None` for one we do not decode (`gzip`, `br`, `lz4`…:
    /// Nix can write them, caches do not).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "none" => Some(Method::None),
            "xz" => Some(Method::Xz),
            "zstd" => Some(Method::Zstd),
            "bzip2" => Some(Method::Bzip2),
            _ => None,
        }
    }

    /// A reader of the NAR that `compressed` carries.
    pub fn decoder<'r>(
        self,
        compressed: impl Read + Send + 'r,
    ) -> io::Result<Box<dyn Read + Send + 'r>> {
        Ok(match self {
            Method::None => Box::new(compressed),
            // Multi-stream, as `xz` itself reads concatenated files.
            Method::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(compressed)),
            Method::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(BufReader::new(
                compressed,
            ))?),
            Method::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(compressed)),
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::None => "none",
            Method::Xz => "xz",
            Method::Zstd => "zstd",
            Method::Bzip2 => "bzip2",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn decode(method: Method, bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        method.decoder(bytes)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn each_method_round_trips() {
        let plain: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let xz = {
            let mut w = liblzma::write::XzEncoder::new(Vec::new(), 6);
            w.write_all(&plain).unwrap();
            w.finish().unwrap()
        };
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        let bz = {
            let mut w = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            w.write_all(&plain).unwrap();
            w.finish().unwrap()
        };
        for (method, bytes) in [
            (Method::None, plain.clone()),
            (Method::Xz, xz),
            (Method::Zstd, zst),
            (Method::Bzip2, bz),
        ] {
            assert_eq!(decode(method, &bytes).unwrap(), plain, "{method}");
            assert_eq!(Method::parse(&method.to_string()), Some(method));
        }
        assert_eq!(Method::parse("gzip"), None);
        assert_eq!(Method::parse(""), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_short_nar() {
        for method in [Method::Xz, Method::Zstd, Method::Bzip2] {
            assert!(
                decode(method, b"not compressed at all").is_err(),
                "{method}"
            );
        }
    }
}
