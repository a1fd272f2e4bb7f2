//! Random bytes from the kernel, for ids (upload sessions, exports, a
//! build's scratch files).

/// `N` random bytes.
pub(crate) fn bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    let mut filled = 0;
    while filled < N {
        filled += rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(b)
}

/// 128 random bits as 32 hex digits.
pub(crate) fn hex_id() -> Result<String, String> {
    bytes::<16>().map(hex::encode).map_err(|e| format!("no randomness for an id: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_32_hex_digits_and_differ() {
        let (a, b) = (super::hex_id().unwrap(), super::hex_id().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
