//! The registry route table (`api/router.rs`) on any request path: it
//! never panics, a route's kind is a known metrics label, and a routed
//! repository name is valid and taken from the path as sent (nothing
//! decoded, so nothing like `..` can reach storage).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // hyper hands the router a path that is text.
    let Ok(path) = std::str::from_utf8(data) else { return };
    let Ok((kind, name)) = wharf::fuzz::route(path) else { return };
    assert!(wharf::fuzz::route_kinds().contains(&kind), "{path:?}: route kind {kind:?} is no metrics label");
    if let Some(name) = name {
        assert_eq!(wharf::fuzz::names(&name)[1].as_deref(), Some(name.as_str()), "{path:?}: routed name {name:?} is invalid");
        assert!(path.contains(&format!("/{name}/")), "{path:?}: name {name:?} is not in the path");
        assert!(!name.split('/').any(|c| c.is_empty() || c == "." || c == ".."), "{path:?}: name {name:?}");
    }
});
