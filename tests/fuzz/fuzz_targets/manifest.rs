//! Manifest bytes as a push handles them (`oci/media.rs`: the depth bound,
//! `inspect`, the image-spec check, `references`): nothing panics or
//! overflows the stack, nothing too deep reaches a parser, the depth bound
//! agrees with an independent count on every JSON document serde_json can
//! read, and what a push would accept is such a document.

#![no_main]

use libfuzzer_sys::fuzz_target;

/// Nesting depth of a parsed value: a scalar is 0.
fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let m = wharf::fuzz::manifest(data);
    if !m.depth_ok {
        assert!(m.media_type.is_none() && !m.references_ok, "too deep, yet parsed: {m:?}");
    }
    // serde_json's own recursion limit (128) keeps this parse bounded.
    let value = serde_json::from_slice::<serde_json::Value>(data);
    if let Ok(v) = &value {
        let d = depth(v);
        assert_eq!(m.depth_ok, d <= wharf::fuzz::MANIFEST_MAX_DEPTH, "depth {d}, bound said {}", m.depth_ok);
    }
    let accepted = m.media_type.is_some() && m.valid == Some(true) && m.references_ok;
    if accepted {
        assert!(value.is_ok(), "a push would store what is no JSON: {:?}", value.err());
    }
});
