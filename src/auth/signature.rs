//! Signed receipts. A provider signs what it posts to `POST /v1/receipts` with a secret shared
//! with Herald:
//!
//! `Herald-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`
//!
//! (the scheme Stripe's webhooks made familiar). The time stamp inside the signed text bounds
//! a replay to [`MAX_AGE`]; the comparison is constant-time (`ring::hmac::verify`). Several
//! secrets may be configured (one per provider, or old and new while rotating): a receipt is
//! accepted if any of them verifies it.

use std::time::Duration;

use ring::hmac;

use super::secrets::{self, WeakSecret};

/// The header a signed receipt carries.
pub const HEADER: &str = "herald-signature";

/// How old (or how far in the future) a signature's time stamp may be.
pub const MAX_AGE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing Herald-Signature header (t=<unix seconds>,v1=<hex HMAC-SHA256>)")]
    Missing,
    #[error("Herald-Signature must be t=<unix seconds>,v1=<hex HMAC-SHA256>")]
    Malformed,
    #[error("the signature's time stamp is more than 5 minutes from now")]
    Stale,
    #[error("the signature does not match the body")]
    Mismatch,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error("HERALD_RECEIPT_SECRETS is a comma-separated list of provider=secret")]
    Syntax,
    #[error(transparent)]
    Weak(#[from] WeakSecret),
}

/// The receipt secrets, by provider name.
#[derive(Clone)]
pub struct ReceiptSecrets {
    keys: Vec<(String, hmac::Key)>,
}

impl std::fmt::Debug for ReceiptSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "ReceiptSecrets({names:?}, ***)")
    }
}

impl ReceiptSecrets {
    /// `provider=secret,provider2=secret2`; a bare `secret` is the provider `default`.
    pub fn parse(spec: &str) -> Result<ReceiptSecrets, SecretsError> {
        let mut keys = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, secret) = match part.split_once('=') {
                Some((name, secret)) if !name.trim().is_empty() => (name.trim(), secret),
                Some(_) => return Err(SecretsError::Syntax),
                None => ("default", part),
            };
            secrets::check("HERALD_RECEIPT_SECRETS", secret)?;
            keys.push((
                name.to_string(),
                hmac::Key::new(hmac::HMAC_SHA256, secret.trim().as_bytes()),
            ));
        }
        if keys.is_empty() {
            return Err(SecretsError::Weak(WeakSecret::Empty(
                "HERALD_RECEIPT_SECRETS",
            )));
        }
        Ok(ReceiptSecrets { keys })
    }

    /// The name of the provider whose secret signed `body`, if one did, recently.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now_secs: u64,
    ) -> Result<&str, SignatureError> {
        let (t, signature) = parse_header(header.ok_or(SignatureError::Missing)?)?;
        if now_secs.abs_diff(t) > MAX_AGE.as_secs() {
            return Err(SignatureError::Stale);
        }
        let signed = signed_text(t, body);
        self.keys
            .iter()
            .find(|(_, key)| hmac::verify(key, &signed, &signature).is_ok())
            .map(|(name, _)| name.as_str())
            .ok_or(SignatureError::Mismatch)
    }
}

fn signed_text(t: u64, body: &[u8]) -> Vec<u8> {
    let mut text = format!("{t}.").into_bytes();
    text.extend_from_slice(body);
    text
}

fn parse_header(header: &str) -> Result<(u64, Vec<u8>), SignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            // An HMAC-SHA256 is 32 bytes; a longer value is nobody's signature.
            Some(("v1", value)) => v1 = super::hex::decode(value, 64),
            _ => {}
        }
    }
    t.zip(v1).ok_or(SignatureError::Malformed)
}

/// The `Herald-Signature` value for `body` signed with `secret` at `t` (what a provider sends).
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.trim().as_bytes());
    let tag = hmac::sign(&key, &signed_text(t, body));
    format!("t={t},v1={}", super::hex::encode(tag.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn only_a_fresh_signature_of_this_body_with_a_known_secret_verifies() {
        let secrets = ReceiptSecrets::parse(&format!("sim={SECRET}")).unwrap();
        let body = br#"{"key":"c:1:email","status":"delivered"}"#;
        let now = 1_800_000_000;
        let header = sign(SECRET, now, body);
        assert_eq!(secrets.verify(Some(&header), body, now + 10), Ok("sim"));
        assert_eq!(
            secrets.verify(Some(&header), b"{}", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            secrets.verify(Some(&header), body, now + 301),
            Err(SignatureError::Stale)
        );
        let other = sign(&"f".repeat(32), now, body);
        assert_eq!(
            secrets.verify(Some(&other), body, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            secrets.verify(None, body, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            secrets.verify(Some("v1=zz"), body, now),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn weak_or_malformed_secret_lists_are_refused() {
        assert!(ReceiptSecrets::parse("").is_err());
        assert!(ReceiptSecrets::parse("sim=short").is_err());
        assert!(ReceiptSecrets::parse(&format!("={SECRET}")).is_err());
        let two = ReceiptSecrets::parse(&format!("a={SECRET}, b={}", "e".repeat(40))).unwrap();
        assert_eq!(two.keys.len(), 2);
    }
}
