//! Where a provider's credentials may travel: over TLS, or in clear only to this machine or to
//! hosts an operator listed (`HERALD_PLAINTEXT_HOSTS`, e.g. compose's simulated provider on
//! its private network). An `smtp://user:pass@relay:587` without `?tls=required` would send the
//! login in clear, or let an attacker on the path strip the STARTTLS offer; an `http://` API
//! URL would carry its key in a header anyone on the path can read.

use std::net::IpAddr;

/// Refuses `url` when `carries_key` (the adapter sends a key or token with each call) or the
/// URL holds a login, unless the connection is encrypted or the host is loopback or listed.
pub fn check(url: &str, carries_key: bool, plaintext_hosts: &[String]) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "not a URL".to_string())?;
    let host = parsed.host_str().unwrap_or_default();
    let has_login = !parsed.username().is_empty() || parsed.password().is_some();
    let encrypted = match parsed.scheme() {
        "https" | "smtps" => true,
        "smtp" => parsed
            .query_pairs()
            .any(|(k, v)| k == "tls" && v == "required"),
        _ => false,
    };
    if encrypted || !(carries_key || has_login) || is_local(host) || listed(host, plaintext_hosts) {
        return Ok(());
    }
    let fix = match parsed.scheme() {
        "smtp" => "use smtps:// or add ?tls=required",
        _ => "use https://",
    };
    Err(format!(
        "{}://{host} would carry credentials in clear: {fix} (or list the host in HERALD_PLAINTEXT_HOSTS if its network is private)",
        parsed.scheme()
    ))
}

fn is_local(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn listed(host: &str, plaintext_hosts: &[String]) -> bool {
    plaintext_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn credentials_travel_only_encrypted_or_to_this_machine() {
        let none: &[String] = &[];
        assert!(check("smtp://user:pw@relay.example:587", false, none).is_err());
        assert!(check(
            "smtp://user:pw@relay.example:587?tls=opportunistic",
            false,
            none
        )
        .is_err());
        assert!(check("smtp://user:pw@relay.example:587?tls=required", false, none).is_ok());
        assert!(check("smtps://user:pw@relay.example:465", false, none).is_ok());
        assert!(
            check("smtp://relay.example:25", false, none).is_ok(),
            "no login"
        );
        assert!(check("smtp://user:pw@127.0.0.1:2525", false, none).is_ok());
        assert!(check("http://provider.example/", true, none).is_err());
        assert!(check("https://provider.example/", true, none).is_ok());
        assert!(check("http://127.0.0.1:3001", true, none).is_ok());
        assert!(check("http://[::1]:3001", true, none).is_ok());
        assert!(check("http://localhost:3001", true, none).is_ok());
        let listed = ["provider".to_string()];
        assert!(check("http://provider:3001", true, &listed).is_ok());
        let refused = check("smtp://u:secret@relay.example", false, none).unwrap_err();
        assert!(!refused.contains("secret"), "{refused}");
        assert!(refused.contains("tls=required"), "{refused}");
    }
}
