//! The spec vocabulary's parsers (`oci/`): digests, repository names, tags
//! and references. None panics, each keeps exactly the text it was given
//! (names and digests go into storage keys, so nothing is normalised), a
//! reference is a digest exactly when it has a colon, and no valid name
//! has an empty, `.` or `..` component.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let [digest, name, tag, reference] = wharf::fuzz::names(s);
    for parsed in [&digest, &name, &tag, &reference].into_iter().flatten() {
        assert_eq!(parsed, s, "parsed {s:?} displays as {parsed:?}");
    }
    let expected = if s.contains(':') { &digest } else { &tag };
    assert_eq!(&reference, expected, "{s:?} as a reference");
    if name.is_some() {
        assert!(s.len() <= 255 && !s.split('/').any(|c| c.is_empty() || c == "." || c == ".."), "name {s:?}");
    }
});
