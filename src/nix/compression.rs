//! How the NARs a narinfo points to are compressed (`Compression:` in
//! `docs/protocols.md` §4.1): `none`, as nix-serve serves them, or `zstd`,
//! which every Nix since 2.4 (2.8 here) reads.

use std::fmt;

/// What `--compression zstd` means without a level. From `bench/run`'s
/// compression figures (bench/results/compression.md, 2026-11-30): on 10 MiB
/// of shared libraries level 1 sends 25.5 % of the NAR for 27–35 ms of
/// server CPU, level 3 23.9 % for 46 ms and more, level 9 22.0 % for 355 ms,
/// level 19 20.1 % for about a second. Each step past 1 saves a few percent
/// of the bytes for 1.7× to 35× the CPU of a request, on a server that
/// compresses every download again; zstd's own default is 3.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// The NAR itself: nix-serve's bytes, `Content-Length` = NarSize, ranges.
    #[default]
    None,
    /// zstd at this level (1..=19), compressed while the NAR streams.
    Zstd { level: i32 },
}

impl Compression {
    /// Parses `none`, `zstd` or `zstd:LEVEL` (1..=19: 20 and above need
    /// zstd's `--ultra` memory and are no use for streaming).
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        match s.split_once(':') {
            None if s == "none" => Ok(Compression::None),
            None if s == "zstd" => Ok(Compression::Zstd {
                level: DEFAULT_ZSTD_LEVEL,
            }),
            Some(("zstd", level)) => match level.parse::<i32>() {
                Ok(level) if (1..=19).contains(&level) => Ok(Compression::Zstd { level }),
                _ => Err("the zstd level must be a number from 1 to 19"),
            },
            _ => Err("expected none, zstd or zstd:LEVEL"),
        }
    }

    /// The narinfo `Compression:` value.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd { .. } => "zstd",
        }
    }

    /// What the NAR URL ends with after `.nar`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd { .. } => ".zst",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let z = |level| Ok(Compression::Zstd { level });
        let table: [(&str, Result<Compression, ()>); 9] = [
            ("none", Ok(Compression::None)),
            ("zstd", z(DEFAULT_ZSTD_LEVEL)),
            ("zstd:1", z(1)),
            ("zstd:19", z(19)),
            ("zstd:0", Err(())),
            ("zstd:20", Err(())),
            ("zstd:x", Err(())),
            ("xz", Err(())),
            ("", Err(())),
        ];
        for (s, want) in table {
            assert_eq!(Compression::parse(s).map_err(|_| ()), want, "{s}");
        }
        assert_eq!(Compression::Zstd { level: 3 }.to_string(), "zstd:3");
    }
}
