//! Lower-case hex text for ids and hashes.

/// Hex text of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of hex text, if it is all pairs of hex digits.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len() / 2).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()).collect()
}

/// Bytes of hex text, if it is exactly `N` bytes' worth of hex digits.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    decode(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_rejects() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(super::encode(&bytes), "0001abff");
        assert_eq!(super::decode_array::<4>("0001abff"), Some(bytes));
        assert_eq!(super::decode_array::<4>("0001abf"), None);
        assert_eq!(super::decode_array::<4>("0001abfg"), None);
        assert_eq!(super::decode_array::<2>("é1"), None);
    }
}
