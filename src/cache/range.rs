//! Single `Range: bytes=…` requests on NARs (RFC 9110 §14). With
//! `Accept-Ranges: bytes` a Nix client resumes a broken NAR download from an
//! offset instead of starting over (`docs/protocols.md` §4.4). Plain build
//! logs and NAR listings take ranges too.

use crate::server::app::Response;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeOutcome {
    /// No usable Range header: send everything with 200. Malformed and
    /// multi-range requests land here too; RFC 9110 lets a server ignore them.
    Full,
    /// 206: bytes `start..start + len`.
    Partial { start: u64, len: u64 },
    /// 416 with `Content-Range: bytes */<total>`.
    Unsatisfiable,
}

/// Interprets `header` against a representation of `total` bytes.
pub fn parse(header: Option<&str>, total: u64) -> RangeOutcome {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeOutcome::Full;
    };
    if spec.contains(',') {
        return RangeOutcome::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeOutcome::Full;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.is_empty(), num(first), num(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || total == 0 {
                RangeOutcome::Unsatisfiable
            } else {
                let len = n.min(total);
                RangeOutcome::Partial {
                    start: total - len,
                    len,
                }
            }
        }
        (false, Some(start), end) if last.is_empty() || end.is_some() => {
            if start >= total {
                return RangeOutcome::Unsatisfiable;
            }
            let end = match end {
                Some(e) if e < start => return RangeOutcome::Full,
                Some(e) => e.min(total - 1),
                None => total - 1,
            };
            RangeOutcome::Partial {
                start,
                len: end - start + 1,
            }
        }
        _ => RangeOutcome::Full,
    }
}

/// The part of a `total`-byte reply that `header` asks for: `(status,
/// first byte, length)`, 200 for the whole; `None` when it cannot be had
/// (send [`super::response::range_not_satisfiable`]).
pub fn select(header: Option<&str>, total: u64) -> Option<(u16, u64, u64)> {
    match parse(header, total) {
        RangeOutcome::Full => Some((200, 0, total)),
        RangeOutcome::Partial { start, len } => Some((206, start, len)),
        RangeOutcome::Unsatisfiable => None,
    }
}

/// `Accept-Ranges: bytes`, and for a 206 its `Content-Range`.
pub fn with_headers(r: Response, start: u64, len: u64, total: u64) -> Response {
    let r = r.with_header("Accept-Ranges", "bytes".to_owned());
    if r.status == 206 {
        r.with_header(
            "Content-Range",
            format!("bytes {start}-{}/{total}", start + len - 1),
        )
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeOutcome::*;

    #[test]
    fn table() {
        let p = |start, len| Partial { start, len };
        let cases: [(Option<&str>, RangeOutcome); 16] = [
            (None, Full),
            (Some("bytes=0-"), p(0, 100)),
            (Some("bytes=10-"), p(10, 90)),
            (Some("bytes=10-19"), p(10, 10)),
            (Some("bytes=10-1000"), p(10, 90)),
            (Some("bytes=99-99"), p(99, 1)),
            (Some("bytes=-10"), p(90, 10)),
            (Some("bytes=-1000"), p(0, 100)),
            (Some("bytes=100-"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            (Some("bytes=20-10"), Full),
            (Some("bytes=0-1,5-6"), Full),
            (Some("items=0-1"), Full),
            (Some("bytes=a-b"), Full),
            (Some("bytes=-"), Full),
            (Some("bytes=99999999999999999999999-"), Full),
        ];
        for (h, want) in cases {
            assert_eq!(parse(h, 100), want, "{h:?}");
        }
    }
}
