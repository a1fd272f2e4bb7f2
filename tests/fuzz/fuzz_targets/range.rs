//! The `Range` header of a blob GET (`api/range.rs`) against blobs of edge
//! sizes: it never panics, a 206's span is a non-empty part of the blob,
//! and the whole blob is chosen only where no span can name it.
//!
//! Input: the header's text, optionally followed by a newline and a size
//! in decimal, tried besides the fixed ones.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (header, extra) = match text.rsplit_once('\n') {
        Some((h, size)) => (h, size.parse::<u64>().ok()),
        None => (text, None),
    };
    let sizes = [0, 1, 2, 1000, u64::MAX - 1, u64::MAX];
    for size in sizes.into_iter().chain(extra) {
        match wharf::fuzz::range(header, size) {
            Some(Ok(Some((start, end)))) => {
                assert!(start < end && end <= size, "{header:?} on {size}: span {start}..{end}")
            }
            Some(Ok(None)) => assert_eq!(size, 0, "{header:?}: the whole blob of {size} bytes"),
            Some(Err(())) | None => {}
        }
    }
});
