//! Bearer tokens as the registry checks them (`auth/token.rs`) and the
//! `Authorization` header they come in (`auth/mod.rs`). An unsigned token
//! never verifies; a token signed by wharf's key with any bytes as its
//! claims verifies only if those claims are wharf's, for this service; and
//! nothing panics.
//!
//! Input: a first byte choosing the mode (even: the rest is an
//! `Authorization` header; odd: the rest is claims to sign), then the rest.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wharf::fuzz::Tokens;

fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<(tempfile::TempDir, Tokens)> = OnceLock::new();
    &TOKENS
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let tokens = Tokens::open(&dir.path().join("auth")).expect("signing key");
            (dir, tokens)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        let Ok(header) = std::str::from_utf8(rest) else { return };
        if let Some(token) = wharf::fuzz::bearer(header) {
            assert!(!tokens().verify(token), "a token nobody signed verified: {token:?}");
        }
        return;
    }
    let verified = tokens().verify_signed(rest).expect("signing");
    if verified {
        let claims: serde_json::Value = serde_json::from_slice(rest).expect("verified claims are JSON");
        assert_eq!(claims["iss"], "wharf", "verified claims {claims}");
        let aud = &claims["aud"];
        assert!(aud == "wharf" || aud.as_array().is_some_and(|a| a.iter().any(|x| x == "wharf")), "aud {aud}");
    }
});
