//! Limits on a request's head that wharf checks itself, before routing: a
//! URI longer than [`MAX_URI_LEN`] or headers larger than
//! [`MAX_HEADER_BYTES`] are refused with an OCI error body (414 and 431,
//! chosen in `error.rs`). Both sit below what hyper accepts, so a client
//! over them gets an answer it can read; heads past hyper's own limits
//! (a URI over 64 KiB, more than 100 header fields or a head over about
//! 400 KiB on HTTP/1, a header list over 64 KiB on HTTP/2) are refused by
//! hyper with a bare status and no body, and never reach wharf.

use http::Request;

/// The longest path and query accepted. Registry URIs are a name of at
/// most 255 characters, a reference and a short query; the reference
/// registry's upload locations carry a few hundred bytes of state.
pub(crate) const MAX_URI_LEN: usize = 8 << 10;
/// The most header bytes (names and values) accepted. Tokens wharf
/// issues are well under a kilobyte.
pub(crate) const MAX_HEADER_BYTES: usize = 32 << 10;

#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("the request URI is {len} bytes long, over the {MAX_URI_LEN} accepted")]
    UriTooLong { len: usize },
    #[error("the request headers are {len} bytes, over the {MAX_HEADER_BYTES} accepted")]
    HeadersTooLarge { len: usize },
}

/// Refuses a head over the limits. A loop over the few headers a client
/// sends, so every request pays next to nothing for it.
pub(crate) fn check<B>(req: &Request<B>) -> Result<(), HeadError> {
    let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if len > MAX_URI_LEN {
        return Err(HeadError::UriTooLong { len });
    }
    let len: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if len > MAX_HEADER_BYTES {
        return Err(HeadError::HeadersTooLarge { len });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, String)]) -> Request<()> {
        let mut req = Request::builder().uri(uri);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        req.body(()).unwrap()
    }

    #[test]
    fn heads_up_to_the_limits_pass_and_longer_ones_are_refused() {
        let path = |len: usize| format!("/v2/{}", "a".repeat(len - 4));
        assert!(check(&request(&path(MAX_URI_LEN), &[])).is_ok());
        assert!(matches!(
            check(&request(&path(MAX_URI_LEN + 1), &[])),
            Err(HeadError::UriTooLong { len }) if len == MAX_URI_LEN + 1
        ));
        // The query counts; an absolute URI's scheme and host (HTTP/2) do not.
        let query = format!("/v2/?{}", "q".repeat(MAX_URI_LEN));
        assert!(matches!(check(&request(&query, &[])), Err(HeadError::UriTooLong { .. })));
        assert!(check(&request(&format!("http://{}.test/v2/", "h".repeat(100)), &[])).is_ok());

        // "x-big" is 5 bytes.
        let fits = [("x-big", "v".repeat(MAX_HEADER_BYTES - 5))];
        assert!(check(&request("/v2/", &fits)).is_ok());
        let over = [("x-big", "v".repeat(MAX_HEADER_BYTES - 5)), ("a", String::new())];
        assert!(matches!(
            check(&request("/v2/", &over)),
            Err(HeadError::HeadersTooLarge { len }) if len == MAX_HEADER_BYTES + 1
        ));
    }
}
