//! The start-up check on the secrets Herald itself verifies (the JWT secret, receipt secrets):
//! a deployment that copied an example or left a secret short refuses to start, saying how to
//! make a real one, rather than running with a secret anyone who read the repository knows.

/// Shortest secret accepted, in bytes: 256 bits as hex is 64, raw is 32.
pub const MIN_SECRET_BYTES: usize = 32;

/// Words that only appear in placeholders and examples.
const EXAMPLE_MARKERS: [&str; 6] = [
    "change-me",
    "changeme",
    "example",
    "replace-me",
    "your-secret",
    "xxxxxxxx",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WeakSecret {
    #[error("{0} is empty: make one with `openssl rand -hex 32`")]
    Empty(&'static str),
    #[error("{name} is {len} bytes: at least {MIN_SECRET_BYTES} are needed; make one with `openssl rand -hex 32`")]
    Short { name: &'static str, len: usize },
    #[error("{0} is an example value from the documentation: make a real one with `openssl rand -hex 32`")]
    Example(&'static str),
}

/// Refuses an empty, short or example secret named `name` (the name is what the message shows;
/// the value never is).
pub fn check(name: &'static str, value: &str) -> Result<(), WeakSecret> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(WeakSecret::Empty(name));
    }
    let lower = trimmed.to_ascii_lowercase();
    if EXAMPLE_MARKERS.iter().any(|m| lower.contains(m)) {
        return Err(WeakSecret::Example(name));
    }
    if trimmed.len() < MIN_SECRET_BYTES {
        return Err(WeakSecret::Short {
            name,
            len: trimmed.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_short_and_example_secrets_are_refused_without_showing_them() {
        assert_eq!(check("S", " "), Err(WeakSecret::Empty("S")));
        assert_eq!(
            check("S", "short-secret"),
            Err(WeakSecret::Short { name: "S", len: 12 })
        );
        let example = "change-me-to-a-long-random-secret";
        let refused = check("HERALD_JWT_SECRET", example).unwrap_err();
        assert_eq!(refused, WeakSecret::Example("HERALD_JWT_SECRET"));
        assert!(!refused.to_string().contains(example));
        assert!(refused.to_string().contains("openssl rand -hex 32"));
        assert!(check("S", &"ab12".repeat(16)).is_ok());
    }
}
