//! The signatures providers put on the status webhooks they send, each its own scheme:
//!
//! - Twilio, `X-Twilio-Signature`: base64 of HMAC-SHA1, keyed with the account's auth token,
//!   over the full URL Twilio called followed by every POST parameter's name and value,
//!   sorted by name.
//! - Meta (WhatsApp Cloud API), `X-Hub-Signature-256`: `sha256=` and the hex HMAC-SHA256 of
//!   the raw body, keyed with the app secret.
//!
//! Neither scheme signs a time, so a replay cannot be told by its age: what a status applies
//! is idempotent (a second `delivered` for the same message changes nothing).

use base64::Engine as _;
use ring::hmac;

use super::hex;

/// Twilio's signature of a form POST to `url` with `params`.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    let tag = hmac::sign(&key, &twilio_signed_text(url, params));
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

fn twilio_signed_text(url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut text = url.as_bytes().to_vec();
    for (name, value) in sorted {
        text.extend_from_slice(name.as_bytes());
        text.extend_from_slice(value.as_bytes());
    }
    text
}

/// Whether `signature` is Twilio's for this call (constant time).
pub fn twilio_verify(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let Ok(tag) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    hmac::verify(&key, &twilio_signed_text(url, params), &tag).is_ok()
}

/// Meta's `X-Hub-Signature-256` of `body`.
pub fn meta_signature(app_secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, app_secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// Whether `header` is Meta's signature of `body` (constant time).
pub fn meta_verify(app_secret: &str, body: &[u8], header: &str) -> bool {
    let Some(tag) = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h, 32))
    else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, app_secret.as_bytes());
    hmac::verify(&key, body, &tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The vector of Twilio's own request-validator tests: this URL, these parameters and
    /// this auth token sign to this value.
    #[test]
    fn twilio_signature_matches_twilios_test_vector() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        // Out of order on purpose: the parameters are sorted before signing.
        let p = params(&[
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
        ]);
        let token = "12345";
        assert_eq!(
            twilio_signature(token, url, &p),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(twilio_verify(
            token,
            url,
            &p,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!twilio_verify(
            "other",
            url,
            &p,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        let mut changed = p.clone();
        changed[3].1 = "9999".into();
        assert!(!twilio_verify(
            token,
            url,
            &changed,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!twilio_verify(
            token,
            "https://example.com/other",
            &p,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn meta_signature_is_the_hex_hmac_of_the_raw_body() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let sig = meta_signature("app-secret", body);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64, "{sig}");
        assert!(meta_verify("app-secret", body, &sig));
        assert!(!meta_verify("another", body, &sig));
        assert!(!meta_verify("app-secret", br#"{"object":"x"}"#, &sig));
        assert!(!meta_verify("app-secret", body, "sha1=abc"));
    }
}
