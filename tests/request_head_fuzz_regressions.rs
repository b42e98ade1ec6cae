//! Inputs the `request_head` fuzz target found (fuzz/README.md), kept as
//! regression tests. Pure: no Nix, no server.

use nix_serve_sd::server::http1::request::{parse, Parsed};

/// A request line with a space inside the target ends in a valid version,
/// but httparse reads the version after the *first* target and says
/// `Version`; `later_version` then rewrote the last token's digit (already
/// `1`) and called `parse` again, which recursed without end: one request
/// line overflowed the event loop's stack and aborted the whole server.
/// Found by the fuzzer as `GET /nar/x.nGET /nar/x.nar HTTP/1.1…`; fixed in
/// b371f70.
#[test]
fn request_line_with_a_space_in_the_target_is_a_400_not_endless_recursion() {
    for raw in [
        &b"GET /a /b HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET /a /b HTTP/1.0\r\n\r\n",
        b"GET /a /b HTTP/1.1",
        b"GET /nar/x.nGET /nar/x.nar HTTP/1.1\r\nHost: c\r\n\r\n",
    ] {
        match parse(raw) {
            Err(e) => assert_eq!(e.status(), 400, "{raw:?}: {e}"),
            Ok(Parsed::Partial) => {}
            Ok(p) => panic!("{raw:?}: accepted as {p:?}"),
        }
    }
}

/// The same misreading, without the recursion: with a fourth token the
/// last one (`HTTP`) looked like an unfinished version, so the whole line
/// was `Partial` (wait for more) while its own prefix `GET / HH` was
/// already a 400: the answer depended on how TCP split the bytes, and a
/// client could hold a connection to the head deadline with a line that
/// was wrong from its fourth byte on. An error must come as soon as the
/// bytes are wrong, and more bytes never repair one.
#[test]
fn request_line_with_four_tokens_is_refused_whatever_the_segmentation() {
    let line = b"GET / HHEAD HTTP";
    for k in 0..=line.len() {
        match parse(&line[..k]) {
            Ok(Parsed::Partial) => {
                // Every partial prefix must extend to something that can
                // still be valid: nothing after "GET / HH" can.
                assert!(k < 8, "{:?} is still Partial", &line[..k]);
            }
            Err(e) => {
                assert_eq!(e.status(), 400);
                assert!(k >= 8, "{:?} refused too early", &line[..k]);
            }
            Ok(p) => panic!("{:?}: {p:?}", &line[..k]),
        }
    }
}
