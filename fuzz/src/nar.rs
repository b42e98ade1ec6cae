//! A strict NAR parser (`docs/protocols.md` §3), the oracle for the encoder:
//! every token exact, padding zero, directory entries in strictly increasing
//! byte order, nothing after the end.

use std::collections::BTreeMap;

/// A file-system object as a NAR carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File { executable: bool, contents: Vec<u8> },
    Symlink { target: Vec<u8> },
    Dir(BTreeMap<Vec<u8>, Node>),
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn u64(&mut self) -> Result<u64, String> {
        let b = self
            .data
            .get(self.pos..self.pos + 8)
            .ok_or_else(|| format!("truncated u64 at {}", self.pos))?;
        self.pos += 8;
        Ok(u64::from_le_bytes(b.try_into().unwrap()))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let at = self.pos;
        let len = usize::try_from(self.u64()?).map_err(|_| "huge length".to_string())?;
        let padded = len.checked_add(7).ok_or("huge length")? / 8 * 8;
        let end = self.pos.checked_add(padded).ok_or("huge length")?;
        let all = self
            .data
            .get(self.pos..end)
            .ok_or_else(|| format!("string of {len} bytes at {at} runs past the end"))?;
        if all[len..].iter().any(|&b| b != 0) {
            return Err(format!("non-zero padding after the string at {at}"));
        }
        self.pos = end;
        Ok(&all[..len])
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        let at = self.pos;
        let got = self.bytes()?;
        if got != token.as_bytes() {
            return Err(format!(
                "expected {token:?} at {at}, got {:?}",
                String::from_utf8_lossy(got)
            ));
        }
        Ok(())
    }
}

/// Parses a whole NAR.
pub fn parse(data: &[u8]) -> Result<Node, String> {
    let mut c = Cursor { data, pos: 0 };
    c.expect("nix-archive-1")?;
    let node = node(&mut c, 0)?;
    if c.pos != data.len() {
        return Err(format!("{} bytes after the end", data.len() - c.pos));
    }
    Ok(node)
}

fn node(c: &mut Cursor, depth: usize) -> Result<Node, String> {
    if depth > 256 {
        return Err("too deep".into());
    }
    c.expect("(")?;
    c.expect("type")?;
    let kind = c.bytes()?;
    let node = match kind {
        b"regular" => {
            let mut executable = false;
            let mut tag = c.bytes()?;
            if tag == b"executable" {
                c.expect("")?;
                executable = true;
                tag = c.bytes()?;
            }
            if tag != b"contents" {
                return Err(format!("expected contents, got {tag:?}"));
            }
            let contents = c.bytes()?.to_vec();
            c.expect(")")?;
            Node::File {
                executable,
                contents,
            }
        }
        b"symlink" => {
            c.expect("target")?;
            let target = c.bytes()?.to_vec();
            c.expect(")")?;
            Node::Symlink { target }
        }
        b"directory" => {
            let mut entries = BTreeMap::new();
            let mut last: Option<Vec<u8>> = None;
            loop {
                let tag = c.bytes()?;
                if tag == b")" {
                    break;
                }
                if tag != b"entry" {
                    return Err(format!("expected entry or ), got {tag:?}"));
                }
                c.expect("(")?;
                c.expect("name")?;
                let name = c.bytes()?.to_vec();
                if name.is_empty()
                    || name == b"."
                    || name == b".."
                    || name.contains(&b'/')
                    || name.contains(&0)
                {
                    return Err(format!("bad entry name {name:?}"));
                }
                if last.as_ref().is_some_and(|l| *l >= name) {
                    return Err(format!("entry {name:?} out of order"));
                }
                last = Some(name.clone());
                c.expect("node")?;
                let child = node(c, depth + 1)?;
                c.expect(")")?;
                entries.insert(name, child);
            }
            Node::Dir(entries)
        }
        other => return Err(format!("unknown type {other:?}")),
    };
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The oracle reads Nix's own NARs (tests/golden, made by
    /// `nix-store --dump`), so a disagreement with the encoder is the
    /// encoder's, not the oracle's.
    #[test]
    fn parses_the_golden_nars_from_nix() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "nar") {
                let bytes = std::fs::read(&path).unwrap();
                parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let mut cut = bytes.clone();
                cut.pop();
                assert!(parse(&cut).is_err(), "{}: truncated", path.display());
                seen += 1;
            }
        }
        assert!(seen >= 4, "golden NARs missing from {dir}");
    }

    #[test]
    fn rejects_unsorted_entries_and_bad_padding() {
        let s = |b: &[u8]| {
            let mut v = (b.len() as u64).to_le_bytes().to_vec();
            v.extend_from_slice(b);
            v.resize(v.len() + (8 - b.len() % 8) % 8, 0);
            v
        };
        let entry = |name: &[u8]| {
            [
                s(b"entry"),
                s(b"("),
                s(b"name"),
                s(name),
                s(b"node"),
                s(b"("),
                s(b"type"),
                s(b"symlink"),
                s(b"target"),
                s(b"x"),
                s(b")"),
                s(b")"),
            ]
            .concat()
        };
        let dir = |entries: &[&[u8]]| {
            let mut v = [s(b"nix-archive-1"), s(b"("), s(b"type"), s(b"directory")].concat();
            for e in entries {
                v.extend(entry(e));
            }
            v.extend(s(b")"));
            v
        };
        assert!(parse(&dir(&[b"a", b"b"])).is_ok());
        assert!(parse(&dir(&[b"b", b"a"])).is_err());
        assert!(parse(&dir(&[b"a", b"a"])).is_err());
        let mut padded = dir(&[b"a"]);
        // The pad byte after "nix-archive-1" (13 bytes at offset 8).
        padded[8 + 13] = 1;
        assert!(parse(&padded).is_err());
    }
}
