//! Registry bearer tokens: compact JWS (ES256) with the claims of the
//! Docker token specification (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`,
//! `jti`, `access`). Signing and checking only; which access to grant is
//! decided in `mod.rs`, keys live in `keys.rs`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::keys::KeyRing;

/// The `iss` of every token wharf signs, and the only one it accepts.
pub(crate) const ISSUER: &str = "wharf";
/// Tolerance for a `nbf` slightly in the future (clocks of several nodes).
const NBF_LEEWAY_SECS: u64 = 30;
/// A token longer than this is refused before any decoding.
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// One entry of the `access` claim: `repository` + name + actions, or
/// `registry` + `catalog`/`admin` + `*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Access {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) actions: Vec<String>,
}

impl Access {
    /// True if this entry grants `action` on `kind:name`.
    pub(crate) fn grants(&self, kind: &str, name: &str, action: &str) -> bool {
        self.kind == kind && self.name == name && self.actions.iter().any(|a| a == action || a == "*")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub(crate) iss: String,
    /// The user name; empty for an anonymous token.
    pub(crate) sub: String,
    pub(crate) aud: Audience,
    pub(crate) exp: u64,
    pub(crate) nbf: u64,
    pub(crate) iat: u64,
    pub(crate) jti: String,
    #[serde(default)]
    pub(crate) access: Vec<Access>,
}

/// `aud` may be one string or a list of them (RFC 7519 section 4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn includes(&self, service: &str) -> bool {
        match self {
            Audience::One(a) => a == service,
            Audience::Many(all) => all.iter().any(|a| a == service),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    kid: Option<String>,
}

/// Why a token was refused. The text goes to the client, which already
/// holds the token, so it may say precisely what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is not signed with ES256 by a key this registry knows")]
    BadSignature,
    #[error("the token was issued by {0:?}, not by this registry")]
    WrongIssuer(String),
    #[error("the token is for another service")]
    WrongAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's user {0:?} is no longer configured")]
    UnknownSubject(String),
    #[error("cannot sign a token: {0}")]
    Signing(String),
}

/// A fresh `jti`: 16 random bytes, hex.
pub(crate) fn new_jti() -> Result<String, TokenError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| TokenError::Signing("the system random source failed".into()))?;
    Ok(hex::encode(bytes))
}

/// The compact serialisation of `claims`, signed with the current key.
pub(crate) fn sign(keys: &KeyRing, claims: &Claims) -> Result<String, TokenError> {
    let kid = keys.current_kid();
    let header = Header { alg: "ES256".into(), typ: Some("JWT".into()), kid: Some(kid.clone()) };
    let input = format!(
        "{}.{}",
        encode_json(&header)?,
        encode_json(claims)?
    );
    let (signed_by, signature) = keys.sign(input.as_bytes()).map_err(|e| TokenError::Signing(e.to_string()))?;
    if signed_by != kid {
        // A rotation between reading the kid and signing: the header would
        // name the wrong key. Rare; the caller may simply try again.
        return Err(TokenError::Signing("the signing key changed while signing".into()));
    }
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// Checks signature, issuer, audience (`service`), expiry and not-before
/// at `now`, and returns the claims.
pub(crate) fn verify(keys: &KeyRing, token: &str, service: &str, now: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let header: Header = decode_json(h)?;
    if header.alg != "ES256" {
        return Err(TokenError::BadSignature);
    }
    let kid = header.kid.ok_or(TokenError::BadSignature)?;
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed)?;
    let signed = &token[..h.len() + 1 + c.len()];
    if !keys.verify(&kid, signed.as_bytes(), &signature, now) {
        return Err(TokenError::BadSignature);
    }
    // Only signed claims are parsed.
    let claims: Claims = decode_json(c)?;
    if claims.iss != ISSUER {
        return Err(TokenError::WrongIssuer(claims.iss));
    }
    if !claims.aud.includes(service) {
        return Err(TokenError::WrongAudience);
    }
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    if claims.nbf > now + NBF_LEEWAY_SECS {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

/// A base64url JSON part. JSON is UTF-8 (RFC 8259), and checked as such
/// here: serde_json reading bytes skips a field it does not know without
/// checking that its strings are UTF-8.
fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| TokenError::Malformed)?;
    serde_json::from_str(text).map_err(|_| TokenError::Malformed)
}

fn encode_json<T: Serialize>(value: &T) -> Result<String, TokenError> {
    let bytes = serde_json::to_vec(value).map_err(|e| TokenError::Signing(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (tempfile::TempDir, KeyRing) {
        let tmp = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(&tmp.path().join("auth"), 1000).unwrap();
        (tmp, ring)
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "alice".into(),
            aud: Audience::One("wharf".into()),
            exp,
            nbf: 1000,
            iat: 1000,
            jti: new_jti().unwrap(),
            access: vec![Access { kind: "repository".into(), name: "team/app".into(), actions: vec!["pull".into()] }],
        }
    }

    #[test]
    fn a_signed_token_verifies_with_its_claims() {
        let (_tmp, keys) = ring();
        let c = claims(1300);
        let token = sign(&keys, &c).unwrap();
        assert_eq!(verify(&keys, &token, "wharf", 1100), Ok(c.clone()));
        assert!(c.access[0].grants("repository", "team/app", "pull"));
        assert!(!c.access[0].grants("repository", "team/app", "push"));
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], keys.current_kid());
    }

    #[test]
    fn expired_and_early_tokens_are_refused() {
        let (_tmp, keys) = ring();
        let token = sign(&keys, &claims(1300)).unwrap();
        assert_eq!(verify(&keys, &token, "wharf", 1300), Err(TokenError::Expired));
        let mut early = claims(5000);
        early.nbf = 2000;
        let token = sign(&keys, &early).unwrap();
        assert_eq!(verify(&keys, &token, "wharf", 1100), Err(TokenError::NotYetValid));
        assert!(verify(&keys, &token, "wharf", 1990).is_ok(), "within the leeway");
    }

    #[test]
    fn a_token_for_another_audience_or_issuer_is_refused() {
        let (_tmp, keys) = ring();
        let token = sign(&keys, &claims(1300)).unwrap();
        assert_eq!(verify(&keys, &token, "other-registry", 1100), Err(TokenError::WrongAudience));
        let mut many = claims(1300);
        many.aud = Audience::Many(vec!["x".into(), "wharf".into()]);
        assert!(verify(&keys, &sign(&keys, &many).unwrap(), "wharf", 1100).is_ok());
        let mut foreign = claims(1300);
        foreign.iss = "someone-else".into();
        let token = sign(&keys, &foreign).unwrap();
        assert!(matches!(verify(&keys, &token, "wharf", 1100), Err(TokenError::WrongIssuer(_))));
    }

    #[test]
    fn a_forged_token_fails_the_signature_check() {
        let (_tmp, keys) = ring();
        let token = sign(&keys, &claims(1300)).unwrap();
        // Flip one byte of the signature.
        let mut sig = URL_SAFE_NO_PAD.decode(token.rsplit('.').next().unwrap()).unwrap();
        sig[10] ^= 0x01;
        let head = token.rsplit_once('.').unwrap().0;
        let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(verify(&keys, &forged, "wharf", 1100), Err(TokenError::BadSignature));
        // Claims edited to grant more, old signature kept.
        let mut more = claims(1300);
        more.access[0].actions.push("push".into());
        let parts: Vec<&str> = token.split('.').collect();
        let edited = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(serde_json::to_vec(&more).unwrap()), parts[2]);
        assert_eq!(verify(&keys, &edited, "wharf", 1100), Err(TokenError::BadSignature));
        // Another key's signature.
        let (_other_tmp, other) = ring();
        assert_eq!(verify(&other, &token, "wharf", 1100), Err(TokenError::BadSignature));
        // alg "none" is never accepted.
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"x"}"#), parts[1]);
        assert_eq!(verify(&keys, &none, "wharf", 1100), Err(TokenError::BadSignature));
        assert_eq!(verify(&keys, "not-a-token", "wharf", 1100), Err(TokenError::Malformed));
    }

    /// Found by the `token` fuzz target: signed claims with a byte that is
    /// not UTF-8 in a field wharf does not read (`\xae` under `accdss`)
    /// verified, though they are no JSON.
    #[test]
    fn signed_claims_that_are_not_utf8_are_malformed() {
        let (_tmp, keys) = ring();
        let signed = |header: &[u8], claims: &[u8]| {
            let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
            let (_, signature) = keys.sign(input.as_bytes()).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
        };
        let header = format!(r#"{{"alg":"ES256","kid":"{}"}}"#, keys.current_kid());
        let good = serde_json::to_vec(&claims(1300)).unwrap();
        assert!(verify(&keys, &signed(header.as_bytes(), &good), "wharf", 1100).is_ok());
        let mut bad = good.clone();
        bad.pop();
        bad.extend_from_slice(b",\"accdss\":\"repoqitor\xae\"}");
        assert_eq!(verify(&keys, &signed(header.as_bytes(), &bad), "wharf", 1100), Err(TokenError::Malformed));
        // The header is read before the signature is checked: the same there.
        let mut header = header.into_bytes();
        header.pop();
        header.extend_from_slice(b",\"x\":\"\xff\"}");
        assert_eq!(verify(&keys, &signed(&header, &good), "wharf", 1100), Err(TokenError::Malformed));
    }

    #[test]
    fn tokens_of_a_rotated_key_verify_until_it_expires() {
        let (_tmp, keys) = ring();
        let token = sign(&keys, &claims(1300)).unwrap();
        keys.rotate(std::time::Duration::from_secs(300), 1100).unwrap();
        assert!(verify(&keys, &token, "wharf", 1200).is_ok());
        let newer = sign(&keys, &claims(1300)).unwrap();
        assert!(verify(&keys, &newer, "wharf", 1200).is_ok());
    }
}
