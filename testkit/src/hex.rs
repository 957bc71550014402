//! Bytes as lowercase hex, the way `csd ... --json` prints them (`output_hex`), and back.

use std::fmt::Write as _;

/// `bytes` as lowercase hex digits, two per byte.
pub fn encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(text, "{b:02x}");
    }
    text
}

/// The bytes of hex digits `text` (either case).
///
/// # Panics
/// If `text` has an odd length or a character that is not a hex digit: the tests feed it what
/// csd printed, which must be hex.
pub fn decode(text: &str) -> Vec<u8> {
    assert!(
        text.len().is_multiple_of(2),
        "odd number of hex digits: {text:?}"
    );
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .unwrap_or_else(|| panic!("not hex digits at {i}: {text:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encoding is lowercase, two digits a byte; decoding takes either case back.
    #[test]
    fn round_trip() {
        assert_eq!(encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(decode("000fA5ff"), [0x00, 0x0f, 0xa5, 0xff]);
        assert_eq!(decode(&encode(b"csd")), b"csd");
        assert_eq!(encode(&[]), "");
    }

    /// Odd lengths and non-digits are refused loudly.
    #[test]
    #[should_panic(expected = "not hex digits")]
    fn decode_refuses_non_digits() {
        decode("0g");
    }
}
