//! Which URLs Herald may call with the shop's events (server-side request forgery): `https`
//! only, to public addresses only, unless configuration allows loopback (tests, a sidecar)
//! or named private networks. A host name is checked at every connection, on the addresses
//! it resolves to then ([`Guard`], reqwest's resolver), so a name that later resolves to a
//! private address is refused too; redirects are never followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Where endpoints may point; from `HERALD_WEBHOOK_ALLOW_LOOPBACK` and
/// `HERALD_WEBHOOK_ALLOW_NETWORKS`.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// `http://` to a loopback address is allowed (tests, a local relay).
    pub allow_loopback: bool,
    /// Private networks endpoints may be in (a relay inside the shop's network).
    pub allow_networks: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a URL: {0}")]
    NotUrl(String),
    #[error("only https:// endpoints are called (http:// only to loopback, where allowed)")]
    NotHttps,
    #[error("credentials in the URL are not accepted: use the signing secret")]
    Credentials,
    #[error("{0} is a private, loopback or reserved address, and not allowed here")]
    Private(IpAddr),
}

/// Flags shared by herald-ingest (which checks URLs when they are registered) and
/// herald-events (which checks every connection).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AddressArgs {
    /// Allow webhook endpoints on loopback addresses, over plain http (tests, a local relay).
    #[arg(long, env = "HERALD_WEBHOOK_ALLOW_LOOPBACK")]
    pub webhook_allow_loopback: bool,

    /// Private networks webhook endpoints may be in (CIDRs, comma-separated); none by default.
    #[arg(long, env = "HERALD_WEBHOOK_ALLOW_NETWORKS", value_delimiter = ',')]
    pub webhook_allow_networks: Vec<IpNet>,
}

impl AddressArgs {
    pub fn policy(&self) -> AddressPolicy {
        AddressPolicy {
            allow_loopback: self.webhook_allow_loopback,
            allow_networks: self.webhook_allow_networks.clone(),
        }
    }
}

/// Loopback, private, link-local, shared, documentation, multicast and unspecified
/// addresses: none is a shop's public endpoint.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

impl AddressPolicy {
    /// Whether a connection to `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        is_public(ip) || self.allow_networks.iter().any(|n| n.contains(&ip))
    }

    /// Checks a URL as it is registered: its scheme, and its host when that is an address.
    pub fn check_url(&self, raw: &str) -> Result<reqwest::Url, Refused> {
        let url = reqwest::Url::parse(raw).map_err(|e| Refused::NotUrl(e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Credentials);
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(name)) if name.eq_ignore_ascii_case("localhost") => {
                Some(IpAddr::from([127, 0, 0, 1]))
            }
            Some(url::Host::Domain(_)) => None,
            None => return Err(Refused::NotUrl("no host".into())),
        };
        match url.scheme() {
            "https" => {}
            "http" if self.allow_loopback && ip.is_some_and(|ip| ip.is_loopback()) => {}
            _ => return Err(Refused::NotHttps),
        }
        if let Some(ip) = ip.filter(|ip| !self.allows(*ip)) {
            return Err(Refused::Private(ip));
        }
        Ok(url)
    }
}

/// reqwest's resolver for webhook calls: resolves as usual, then keeps only the addresses
/// the policy allows (none left: the call fails, naming the address).
#[derive(Clone)]
pub struct Guard(pub Arc<AddressPolicy>);

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| policy.allows(a.ip()))
                .collect();
            if allowed.is_empty() {
                let why = found.first().map_or("no address".to_string(), |a| {
                    Refused::Private(a.ip()).to_string()
                });
                return Err(why.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_to_public_addresses_unless_configured() {
        let strict = AddressPolicy::default();
        assert!(strict.check_url("https://crm.shop.example/hooks").is_ok());
        assert!(strict.check_url("https://93.184.216.34/x").is_ok());
        assert_eq!(
            strict.check_url("http://crm.shop.example/hooks"),
            Err(Refused::NotHttps)
        );
        for private in [
            "https://127.0.0.1/x",
            "https://localhost/x",
            "https://10.1.2.3/x",
            "https://172.16.0.1/x",
            "https://192.168.1.1/x",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://[fe80::1]/x",
            "https://[::ffff:10.0.0.1]/x",
        ] {
            assert!(
                matches!(strict.check_url(private), Err(Refused::Private(_))),
                "{private} allowed"
            );
        }
        assert_eq!(
            strict.check_url("https://u:p@crm.shop.example/"),
            Err(Refused::Credentials)
        );
        let tests = AddressPolicy {
            allow_loopback: true,
            allow_networks: vec!["10.8.0.0/16".parse().unwrap()],
        };
        assert!(tests.check_url("http://127.0.0.1:9000/x").is_ok());
        assert!(tests.check_url("https://10.8.1.1/x").is_ok());
        assert!(matches!(
            tests.check_url("https://10.9.1.1/x"),
            Err(Refused::Private(_))
        ));
        assert_eq!(tests.check_url("http://10.8.1.1/x"), Err(Refused::NotHttps));
    }
}
