//! Node-to-node requests are signed with the secret every node of a
//! cluster shares: HMAC-SHA256 over the request's method, path, sending
//! node and time. The secret never crosses the network, and a signature
//! is good for [`MAX_SKEW`] only.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a request's time may be from the receiver's clock.
pub(crate) const MAX_SKEW: u64 = 300;

pub(crate) const NODE_HEADER: &str = "x-wharf-node";
pub(crate) const TIME_HEADER: &str = "x-wharf-time";
/// `Authorization: WharfNode <hex signature>`.
pub(crate) const SCHEME: &str = "WharfNode ";

fn mac(secret: &[u8], method: &str, path: &str, node: &str, time: u64) -> Result<Hmac<Sha256>, SignatureError> {
    // HMAC takes a key of any length: this never fails.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|_| SignatureError::Bad)?;
    mac.update(format!("{method}\n{path}\n{node}\n{time}").as_bytes());
    Ok(mac)
}

/// The signature of a request.
pub(crate) fn sign(secret: &[u8], method: &str, path: &str, node: &str, time: u64) -> String {
    mac(secret, method, path, node, time).map(|m| hex::encode(m.finalize().into_bytes())).unwrap_or_default()
}

/// Why a node-to-node request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignatureError {
    #[error("not signed")]
    Missing,
    #[error("signed {0} s away from this node's clock (at most {MAX_SKEW} s)")]
    Skewed(u64),
    #[error("bad signature")]
    Bad,
}

/// Checks a request's signature (`signature` in hex) at time `now`.
pub(crate) fn verify(
    secret: &[u8],
    method: &str,
    path: &str,
    node: &str,
    time: u64,
    signature: &str,
    now: u64,
) -> Result<(), SignatureError> {
    let skew = now.abs_diff(time);
    if skew > MAX_SKEW {
        return Err(SignatureError::Skewed(skew));
    }
    let given = hex::decode(signature).map_err(|_| SignatureError::Bad)?;
    // Compared in constant time.
    mac(secret, method, path, node, time)?.verify_slice(&given).map_err(|_| SignatureError::Bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_for_its_request_and_secret_only_and_not_for_long() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let sig = sign(secret, "GET", "/cluster/v1/fills/sha256:aa", "a", 1000);
        assert_eq!(verify(secret, "GET", "/cluster/v1/fills/sha256:aa", "a", 1000, &sig, 1100), Ok(()));
        assert_eq!(verify(secret, "GET", "/cluster/v1/fills/sha256:aa", "a", 1000, &sig, 1000 + MAX_SKEW + 1), Err(SignatureError::Skewed(MAX_SKEW + 1)));
        for (path, node, time) in [("/cluster/v1/fills/sha256:bb", "a", 1000), ("/cluster/v1/fills/sha256:aa", "b", 1000), ("/cluster/v1/fills/sha256:aa", "a", 1001)] {
            assert_eq!(verify(secret, "GET", path, node, time, &sig, 1000), Err(SignatureError::Bad), "{path} {node} {time}");
        }
        assert_eq!(verify(b"another secret of 32 bytes......", "GET", "/cluster/v1/fills/sha256:aa", "a", 1000, &sig, 1000), Err(SignatureError::Bad));
        assert_eq!(verify(secret, "GET", "/cluster/v1/fills/sha256:aa", "a", 1000, "zz", 1000), Err(SignatureError::Bad));
    }
}
