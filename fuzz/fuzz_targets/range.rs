//! `Range` header interpretation (src/cache/range.rs): never panics, and what
//! it returns is a range inside the representation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nix_serve_sd::cache::range::{parse, RangeOutcome};

// The input: 8 bytes of total size (little-endian), then the header value
// (none when the rest is not UTF-8), so seeds are plain text after 8 bytes.
fuzz_target!(|data: &[u8]| {
    let Some((size, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let total = u64::from_le_bytes(*size);
    let header = std::str::from_utf8(rest).ok();
    match parse(header, total) {
        RangeOutcome::Full => {}
        RangeOutcome::Unsatisfiable => {
            assert!(header.is_some(), "no header is always Full");
        }
        RangeOutcome::Partial { start, len } => {
            assert!(len >= 1, "{header:?} {total}: empty partial range");
            let end = start.checked_add(len).expect("start + len overflows");
            assert!(end <= total, "{header:?}: {start}+{len} > {total}");
            // The range written back in its explicit form means the same.
            let explicit = format!("bytes={start}-{}", end - 1);
            assert_eq!(
                parse(Some(&explicit), total),
                RangeOutcome::Partial { start, len },
                "{header:?} -> {explicit}"
            );
        }
    }
});
