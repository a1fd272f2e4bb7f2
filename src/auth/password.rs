//! Password hashes: argon2id in PHC string form (`$argon2id$v=19$m=...`),
//! as `wharf user hash-password` prints them and `[[auth.user]]` holds
//! them. Verifying is deliberately slow (tens of milliseconds), so callers
//! run it on the blocking pool and cache successes. Pure apart from the
//! random salt.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};

/// Hashes `password` with argon2id and the crate's default parameters
/// (19 MiB, 2 passes, 1 lane: OWASP's recommended minimum) and a fresh
/// 16-byte salt.
pub(crate) fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    SystemRandom::new().fill(&mut salt).map_err(|_| "the system random source failed".to_owned())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("cannot encode the salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Checks that `phc` is an argon2id PHC string whose parameters argon2
/// accepts; the message says what is wrong.
pub(crate) fn check(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc)
        .map_err(|e| format!("not a PHC string like \"$argon2id$v=19$m=19456,t=2,p=1$...\" ({e}); make one with `wharf user hash-password`"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!("the hash is {}, not argon2id; make one with `wharf user hash-password`", parsed.algorithm));
    }
    argon2::Params::try_from(&parsed).map_err(|e| format!("argon2 parameters: {e}"))?;
    if parsed.hash.is_none() {
        return Err("the PHC string has no hash part".into());
    }
    Ok(())
}

/// True if `password` matches `phc`. A malformed `phc` matches nothing
/// (config validation refuses those before they get here).
pub(crate) fn verify(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Spends the time of one verification without a real hash, so a request
/// naming an unknown user takes as long as one with a wrong password.
pub(crate) fn verify_nothing(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("wharf-dummy-password").unwrap_or_default());
    let _ = verify(dummy, password);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        check(&phc).unwrap();
        assert!(verify(&phc, "correct horse"));
        assert!(!verify(&phc, "correct horsf"));
        assert!(!verify(&phc, ""));
        // A fresh salt each time.
        assert_ne!(phc, hash("correct horse").unwrap());
    }

    #[test]
    fn malformed_or_foreign_hashes_are_refused_with_a_reason() {
        assert!(check("hunter2").unwrap_err().contains("PHC"));
        let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c29tZXNhbHQ$2Z0v7hJjS8XKcJtJQnx7tA";
        assert!(check(argon2i).unwrap_err().contains("not argon2id"), "{:?}", check(argon2i));
        assert!(!verify("hunter2", "hunter2"));
    }
}
