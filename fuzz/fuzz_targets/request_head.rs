//! The HTTP request head (src/server/http1/request.rs `parse`: httparse underneath,
//! our limits and RFC 9112 rules on top). Never panics, and its three
//! answers are consistent as bytes arrive, which is how the server calls it:
//! - Complete(head, n): n within the buffer and MAX_HEAD, the same head from
//!   exactly those n bytes, every shorter prefix Partial, and the head
//!   within its limits (ASCII target of at most MAX_TARGET, minor 0 or 1,
//!   no line breaks in what is kept);
//! - Partial: every prefix Partial too, and the buffer within MAX_HEAD;
//! - an error: more bytes never repair it, and its status is a 4xx/5xx the
//!   parser may give (408 is the server's, never the parser's).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nix_serve_sd::server::http1::request::{parse, Parsed, MAX_HEAD, MAX_TARGET};

fn prefixes(len: usize) -> [usize; 4] {
    [0, 1, len / 2, len.saturating_sub(1)].map(|k| k.min(len))
}

fuzz_target!(|buf: &[u8]| {
    match parse(buf) {
        Ok(Parsed::Complete(head, n)) => {
            assert!(n > 0 && n <= buf.len() && n <= MAX_HEAD, "n = {n}");
            let r = &head.request;
            assert!(!r.target.is_empty() && r.target.len() <= MAX_TARGET);
            assert!(r.target.bytes().all(|b| b.is_ascii_graphic()));
            assert!(head.minor <= 1);
            for kept in [&r.range, &r.accept_encoding].into_iter().flatten() {
                assert!(!kept.contains(['\r', '\n']), "{kept:?}");
            }
            if let Some(a) = &r.authorization {
                let a = a.as_bytes();
                assert!(!a.contains(&b'\r') && !a.contains(&b'\n'), "{a:?}");
            }
            if let Some(ua) = &head.user_agent {
                assert!(!ua.contains(&b'\r') && !ua.contains(&b'\n'), "{ua:?}");
            }
            assert_eq!(
                parse(&buf[..n]),
                Ok(Parsed::Complete(head.clone(), n)),
                "not self-delimiting"
            );
            for k in prefixes(n) {
                if k < n {
                    assert_eq!(parse(&buf[..k]), Ok(Parsed::Partial), "prefix {k} of {n}");
                }
            }
        }
        Ok(Parsed::Partial) => {
            assert!(buf.len() <= MAX_HEAD, "Partial past MAX_HEAD");
            for k in prefixes(buf.len()) {
                assert_eq!(parse(&buf[..k]), Ok(Parsed::Partial), "prefix {k}");
            }
        }
        Err(e) => {
            assert!(
                matches!(e.status(), 400 | 414 | 431 | 501 | 505),
                "{e}: status {}",
                e.status()
            );
            let mut more = buf.to_vec();
            more.extend_from_slice(b"\r\nHost: x\r\n\r\n");
            assert!(parse(&more).is_err(), "{e} repaired by more bytes");
        }
    }
});
