//! How things are written into a log line: what a client sent, escaped; an
//! error with its causes; a count.

use std::error::Error;
use std::fmt::Write as _;

/// `raw` as nginx writes request fields into its access log
/// (`escape=default`): `"` and `\` and every byte outside printable ASCII
/// (controls, DEL, anything above 0x7e) as `\xHH`. A client's User-Agent or
/// target then cannot end the quoted field, forge a line (CR, LF) or send
/// escape sequences to whoever reads the log on a terminal (`\x1b[2J`,
/// BEL). Bytes, not text: what the log shows of a byte that is not UTF-8 is
/// that byte, never the `\xEF\xBF\xBD` of a replacement character.
pub fn escape_bytes(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            // Writing into a String cannot fail.
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// [`escape_bytes`] of text (`"é"` is `\xC3\xA9`, its two bytes).
pub fn escape(s: &str) -> String {
    escape_bytes(s.as_bytes())
}

/// `e` and its causes, outermost first, joined with `": "`: what the log
/// says about an error. A cause whose text the message already ends with is
/// not repeated: many errors here print their source themselves.
pub fn chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// `n` with a comma between groups of three digits (`12,345`): the counts
/// of dropped and suppressed lines are read by people, and can be large.
pub(super) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` lines, said as a person would: `1 similar line`, `12,345 similar lines`.
pub(super) fn lines(n: u64, what: &str) -> String {
    let noun = if n == 1 { "line" } else { "lines" };
    format!("{} {what} {noun}", grouped(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn chain_joins_causes_once() {
        let e = E("a", Some(Box::new(E("b", Some(Box::new(E("c", None)))))));
        assert_eq!(chain(&e), "a: b: c");
        // An error that prints its source itself: not said twice.
        let e = E("open x: denied", Some(Box::new(E("denied", None))));
        assert_eq!(chain(&e), "open x: denied");
        assert_eq!(chain(&E("alone", None)), "alone");
    }

    #[test]
    fn escape_is_nginx_default_byte_for_byte() {
        let cases = [
            ("curl/8.0 (x86_64)", "curl/8.0 (x86_64)"),
            ("", ""),
            ("\x1b[2J", "\\x1B[2J"),
            ("a\rb\nc", "a\\x0Db\\x0Ac"),
            ("bell\x07", "bell\\x07"),
            ("say \"hi\"", "say \\x22hi\\x22"),
            ("back\\slash", "back\\x5Cslash"),
            ("tab\tdel\x7f", "tab\\x09del\\x7F"),
            ("é", "\\xC3\\xA9"),
            ("~ and space", "~ and space"),
        ];
        for (raw, logged) in cases {
            assert_eq!(escape(raw), logged, "{raw:?}");
            assert_eq!(escape_bytes(raw.as_bytes()), logged, "{raw:?} as bytes");
        }
    }

    /// What a client sent that is not UTF-8 is logged as the bytes it sent:
    /// a Latin-1 `é` is `\xE9`, not the three bytes of U+FFFD.
    #[test]
    fn escape_writes_the_bytes_sent_even_when_they_are_not_utf8() {
        let cases: [(&[u8], &str); 6] = [
            (b"caf\xe9", "caf\\xE9"),
            (b"\xff\xfe", "\\xFF\\xFE"),
            (b"\x80", "\\x80"),
            (b"\xc3", "\\xC3"),
            (b"\x00nul", "\\x00nul"),
            (b"ok \xed\xa0\x80 surrogate", "ok \\xED\\xA0\\x80 surrogate"),
        ];
        for (raw, logged) in cases {
            assert_eq!(escape_bytes(raw), logged, "{raw:?}");
        }
        // Every byte, once: the line stays printable ASCII, and reading each
        // `\xHH` back gives exactly the bytes sent (nothing lost, nothing
        // replaced).
        let all: Vec<u8> = (0..=255).collect();
        let out = escape_bytes(&all);
        assert!(out.bytes().all(|b| (0x20..0x7f).contains(&b)), "{out}");
        assert_eq!(out.len(), (95 - 2) + (256 - 95 + 2) * 4);
        let mut back = Vec::new();
        let mut rest = out.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            if b == b'\\' {
                let hex = std::str::from_utf8(&tail[1..3]).unwrap();
                assert_eq!(tail[0], b'x');
                assert_eq!(hex, hex.to_uppercase());
                back.push(u8::from_str_radix(hex, 16).unwrap());
                rest = &tail[3..];
            } else {
                back.push(b);
                rest = tail;
            }
        }
        assert_eq!(back, all);
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        for (n, text) in [
            (0, "0"),
            (7, "7"),
            (999, "999"),
            (1_000, "1,000"),
            (12_345, "12,345"),
            (100_000, "100,000"),
            (1_234_567, "1,234,567"),
            (u64::MAX, "18,446,744,073,709,551,615"),
        ] {
            assert_eq!(grouped(n), text);
        }
        assert_eq!(lines(1, "similar"), "1 similar line");
        assert_eq!(lines(0, "access log"), "0 access log lines");
        assert_eq!(lines(12_345, "diagnostic"), "12,345 diagnostic lines");
    }
}
