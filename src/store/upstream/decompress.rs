//! The compressions a NAR from an upstream cache may come in: what
//! `nix copy --to file://…?compression=…` and Hydra write (Nix 2.8
//! `compression.cc`: xz by default, zstd, bzip2, none), decoded as the bytes
//! arrive.

use std::fmt;
use std::io::{self, BufReader, Read};

use liblzma::stream::Stream;

/// What an xz decoder may use: a stream of Nix's default preset (6: an
/// 8 MiB dictionary, about 9 MiB to decode), cache.nixos.org's, fits;
/// presets 7 to 9 (16 to 64 MiB) are refused rather than let an upstream
/// decide how much memory a download holds.
pub const XZ_MEMORY: u64 = 12 << 20;
/// The largest zstd window accepted: 8 MiB, what levels up to 19 use (Nix
/// writes level 3, a 2 MiB window at most); only `--long` and the ultra
/// levels go past it.
pub const ZSTD_WINDOW_LOG: u32 = 23;

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

    /// A reader of the NAR that `compressed` carries, holding at most
    /// [`Self::memory`] for its window (what the stream asks for beyond it
    /// is an error, never an allocation).
    pub fn decoder<'r>(
        self,
        compressed: impl Read + Send + 'r,
    ) -> io::Result<Box<dyn Read + Send + 'r>> {
        Ok(match self {
            Method::None => Box::new(compressed),
            // Multi-stream, as `xz` itself reads concatenated files.
            Method::Xz => {
                let stream = Stream::new_auto_decoder(XZ_MEMORY, liblzma::stream::CONCATENATED)
                    .map_err(io::Error::other)?;
                Box::new(liblzma::read::XzDecoder::new_stream(compressed, stream))
            }
            Method::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(BufReader::new(compressed))?;
                d.window_log_max(ZSTD_WINDOW_LOG)?;
                Box::new(d)
            }
            Method::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(compressed)),
        })
    }

    /// What the decoder may hold at most, for the memory budget.
    pub fn memory(self) -> u64 {
        match self {
            Method::None => 0,
            Method::Xz => XZ_MEMORY,
            // The window, and a block and its buffers on top.
            Method::Zstd => (1 << ZSTD_WINDOW_LOG) + (512 << 10),
            // 900 KiB blocks: bzip2's decoder holds at most about 3.6 MiB.
            Method::Bzip2 => 4 << 20,
        }
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

    /// The memory a stream asks for is bounded: an xz of preset 9 (a 64 MiB
    /// dictionary) and a zstd with a 128 MiB window are refused, what Nix
    /// writes by default is not.
    #[test]
    fn a_stream_that_needs_too_much_memory_is_refused() {
        let plain = vec![7u8; 1000];
        let xz = |preset| {
            let mut w = liblzma::write::XzEncoder::new(Vec::new(), preset);
            w.write_all(&plain).unwrap();
            w.finish().unwrap()
        };
        assert_eq!(decode(Method::Xz, &xz(6)).unwrap(), plain);
        let e = decode(Method::Xz, &xz(9)).unwrap_err();
        assert!(e.to_string().contains("memory limit"), "{e}");
        let zst = |window_log| {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            e.set_parameter(zstd::zstd_safe::CParameter::WindowLog(window_log))
                .unwrap();
            e.set_pledged_src_size(None).unwrap();
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(decode(Method::Zstd, &zst(ZSTD_WINDOW_LOG)).unwrap(), plain);
        assert!(decode(Method::Zstd, &zst(27)).is_err());
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
