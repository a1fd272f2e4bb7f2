//! The `Range` header of a blob GET (RFC 9110 section 14): one byte range
//! parsed, then resolved against the blob's size into the span to send.
//! Pure: no I/O, no HTTP types. Every number here is a client's, up to
//! `u64::MAX`, so nothing adds to one before it is clamped to the size.

/// A single byte range from a `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// `bytes=first-last` (`last` inclusive) or `bytes=first-`.
    From { first: u64, last: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
    /// `bytes=first-last` with `last` before `first`: no byte can satisfy
    /// it. RFC 9110 lets a server ignore it or refuse it; it is refused
    /// (416), as distribution and nginx do, so the client learns its
    /// request was wrong rather than receiving bytes it did not ask for.
    Backwards,
}

/// A range no byte of the blob satisfies: the answer is 416 with the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsatisfiable;

impl ByteRange {
    /// Parses one range; several ranges, other units or a malformed one are
    /// ignored (the whole blob is served), as RFC 9110 allows. A backwards
    /// one is kept, to be refused.
    pub(crate) fn parse(v: &str) -> Option<ByteRange> {
        let (unit, spec) = v.trim().split_once('=')?;
        if !unit.eq_ignore_ascii_case("bytes") || spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return Some(ByteRange::Suffix(position(b)?));
        }
        let first = position(a)?;
        let last = if b.is_empty() { None } else { Some(position(b)?) };
        if last.is_some_and(|l| l < first) {
            return Some(ByteRange::Backwards);
        }
        Some(ByteRange::From { first, last })
    }

    /// The span `[start, end)` to send from a blob of `size` bytes: None
    /// for the whole blob, or Unsatisfiable (416).
    ///
    /// A last byte past the end means the end (RFC 9110 section 14.1.1); a
    /// suffix longer than the blob means all of it. On an empty blob only a
    /// non-empty suffix is satisfiable, and there is no span to name, so
    /// the (empty) whole is sent.
    pub(crate) fn resolve(self, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
        match self {
            ByteRange::From { first, last } => {
                if first >= size {
                    return Err(Unsatisfiable);
                }
                // size >= 1 here, and clamping before adding one keeps the
                // sum at most `size`.
                let end = last.map_or(size, |l| l.min(size - 1) + 1);
                Ok(Some((first, end)))
            }
            ByteRange::Backwards | ByteRange::Suffix(0) => Err(Unsatisfiable),
            ByteRange::Suffix(_) if size == 0 => Ok(None),
            ByteRange::Suffix(n) => Ok(Some((size - n.min(size), size))),
        }
    }
}

/// A byte position: one or more ASCII digits (no sign, unlike `u64`'s
/// parser). Past `u64::MAX` it saturates: no blob is that large, so such a
/// position means "beyond the end" just as `u64::MAX` does.
fn position(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| n.saturating_mul(10).saturating_add(u64::from(b - b'0'))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn span(header: &str, size: u64) -> Option<Result<Option<(u64, u64)>, Unsatisfiable>> {
        ByteRange::parse(header).map(|r| r.resolve(size))
    }

    #[test]
    fn ranges_parse_and_resolve() {
        assert_eq!(span("bytes=0-9", 100), Some(Ok(Some((0, 10)))));
        assert_eq!(span("bytes=90-", 100), Some(Ok(Some((90, 100)))));
        assert_eq!(span("bytes=-10", 100), Some(Ok(Some((90, 100)))));
        assert_eq!(span("bytes=50-500", 100), Some(Ok(Some((50, 100)))));
        assert_eq!(span("Bytes=1-1", 100), Some(Ok(Some((1, 2)))));
        assert_eq!(span("bytes=100-", 100), Some(Err(Unsatisfiable)));
        assert_eq!(span("bytes=-0", 100), Some(Err(Unsatisfiable)));
        assert_eq!(ByteRange::parse("bytes=0-1,5-6"), None);
        assert_eq!(ByteRange::parse("items=0-1"), None);
        assert_eq!(span("bytes=9-2", 100), Some(Err(Unsatisfiable)));
        assert_eq!(span("bytes=500-0", 1000), Some(Err(Unsatisfiable)));
        assert_eq!(ByteRange::parse("bytes=+1-2"), None);
        assert_eq!(ByteRange::parse("bytes=1-+2"), None);
        assert_eq!(ByteRange::parse("bytes=-"), None);
        assert_eq!(ByteRange::parse("bytes="), None);
    }

    /// A last byte of `u64::MAX` once panicked in debug builds (the end was
    /// `last + 1`) and in release builds wrapped to an empty span.
    #[test]
    fn a_last_byte_past_the_end_is_clamped_without_overflow() {
        assert_eq!(span("bytes=5-18446744073709551615", 1000), Some(Ok(Some((5, 1000)))));
        assert_eq!(span("bytes=0-18446744073709551615", 1000), Some(Ok(Some((0, 1000)))));
        assert_eq!(span("bytes=0-18446744073709551614", 1), Some(Ok(Some((0, 1)))));
        assert_eq!(span("bytes=0-99999999999999999999999999", 7), Some(Ok(Some((0, 7)))));
        assert_eq!(span("bytes=99999999999999999999999999-", 7), Some(Err(Unsatisfiable)));
        assert_eq!(span("bytes=-18446744073709551615", 7), Some(Ok(Some((0, 7)))));
        assert_eq!(span("bytes=18446744073709551614-18446744073709551615", u64::MAX), Some(Ok(Some((u64::MAX - 1, u64::MAX)))));
    }

    #[test]
    fn an_empty_blob_satisfies_only_a_suffix_and_is_sent_whole() {
        assert_eq!(span("bytes=-1", 0), Some(Ok(None)));
        assert_eq!(span("bytes=0-", 0), Some(Err(Unsatisfiable)));
        assert_eq!(span("bytes=0-0", 0), Some(Err(Unsatisfiable)));
        assert_eq!(span("bytes=-0", 0), Some(Err(Unsatisfiable)));
    }

    /// u64s with the edges (0, 1, the top) drawn often.
    fn edgy() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0),
            Just(1),
            Just(u64::MAX - 1),
            Just(u64::MAX),
            0..4096u64,
            (u64::MAX - 4096)..=u64::MAX,
            any::<u64>(),
        ]
    }

    /// A resolved span is a non-empty part of the blob whose length is its
    /// width: what the handler's Content-Range and Content-Length assume.
    fn assert_span_within(span: (u64, u64), size: u64) -> Result<(), TestCaseError> {
        let (start, end) = span;
        prop_assert!(start < end && end <= size, "span {start}..{end} of {size}");
        prop_assert_eq!(end.checked_sub(start), Some(end - start));
        Ok(())
    }

    proptest! {
        #[test]
        fn parsing_any_text_never_panics(header in any::<String>()) {
            if let Some(r) = ByteRange::parse(&header) {
                let _ = r.resolve(0);
                let _ = r.resolve(u64::MAX);
            }
        }

        #[test]
        fn parsing_range_like_text_never_panics(a in "[0-9+ -]{0,25}", b in "[0-9+ -]{0,25}", size in edgy()) {
            if let Some(r) = ByteRange::parse(&format!("bytes={a}-{b}")) {
                if let Ok(Some(span)) = r.resolve(size) {
                    assert_span_within(span, size)?;
                }
            }
        }

        #[test]
        fn first_last_ranges_are_clamped_to_the_last_byte(first in edgy(), last in edgy(), size in edgy()) {
            let parsed = ByteRange::parse(&format!("bytes={first}-{last}"));
            if last < first {
                prop_assert_eq!(parsed, Some(ByteRange::Backwards));
                prop_assert_eq!(parsed.map(|r| r.resolve(size)), Some(Err(Unsatisfiable)));
                return Ok(());
            }
            prop_assert_eq!(parsed, Some(ByteRange::From { first, last: Some(last) }));
            match parsed.map(|r| r.resolve(size)) {
                Some(Ok(Some(span))) => {
                    assert_span_within(span, size)?;
                    prop_assert_eq!(span.0, first);
                    // The requested bytes, or up to the blob's last one.
                    prop_assert_eq!(span.1 - span.0, (last - first).min(size - 1 - first) + 1);
                }
                Some(Err(Unsatisfiable)) => prop_assert!(first >= size),
                other => prop_assert!(false, "{other:?}"),
            }
        }

        #[test]
        fn open_ranges_run_to_the_end(first in edgy(), size in edgy()) {
            match span(&format!("bytes={first}-"), size) {
                Some(Ok(Some(s))) => {
                    assert_span_within(s, size)?;
                    prop_assert_eq!(s, (first, size));
                }
                Some(Err(Unsatisfiable)) => prop_assert!(first >= size),
                other => prop_assert!(false, "{other:?}"),
            }
        }

        #[test]
        fn suffixes_take_the_last_bytes_or_all(n in edgy(), size in edgy()) {
            match span(&format!("bytes=-{n}"), size) {
                Some(Ok(Some(s))) => {
                    assert_span_within(s, size)?;
                    prop_assert_eq!(s, (size - n.min(size), size));
                    prop_assert_eq!(s.1 - s.0, n.min(size));
                }
                Some(Ok(None)) => prop_assert!(size == 0 && n > 0),
                Some(Err(Unsatisfiable)) => prop_assert_eq!(n, 0),
                None => prop_assert!(false, "bytes=-{n} did not parse"),
            }
        }
    }
}
