//! Hex, as keys' hashes and receipt signatures are written.

/// Lower-case hex of `bytes`.
pub(crate) fn encode(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The bytes `text` spells in hex, if it does and they are at most `max_bytes`.
pub(crate) fn decode(text: &str, max_bytes: usize) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 2 * max_bytes {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_odd_long_or_foreign_text() {
        assert_eq!(encode(&[0, 15, 255]), "000fff");
        assert_eq!(decode("000fFF", 3), Some(vec![0, 15, 255]));
        assert_eq!(decode("000ff", 3), None);
        assert_eq!(decode("000fff00", 3), None);
        assert_eq!(decode("zz", 3), None);
    }
}
