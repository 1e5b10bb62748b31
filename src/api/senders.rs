//! Who a campaign may send e-mail as. A key with `campaigns:write` could otherwise set any
//! `email.from` and send through the shop's relay as anyone (security review, finding 10).

use lettre::message::Mailbox;

/// The domains and addresses a campaign's `email.from` may use
/// (`HERALD_EMAIL_SENDER_DOMAINS`). Empty: a campaign may not name a sender, and the
/// dispatcher's own (`HERALD_EMAIL_FROM`) is used.
#[derive(Debug, Clone, Default)]
pub struct SenderPolicy {
    /// Lower-cased; an entry with `@` is one address, any other a whole domain.
    allowed: Vec<String>,
}

/// Why a sender was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SenderRefused {
    #[error("from must be an address, or a name and an address as Name <a@b.example>")]
    NotAMailbox,
    #[error("no sender may be named here: the dispatcher's own is used (HERALD_EMAIL_SENDER_DOMAINS is unset)")]
    NoneAllowed,
    #[error("{0} is not an allowed sender (HERALD_EMAIL_SENDER_DOMAINS)")]
    NotAllowed(String),
}

impl SenderPolicy {
    pub fn new(entries: &[String]) -> SenderPolicy {
        let allowed = entries
            .iter()
            .map(|e| e.trim().trim_start_matches('@').to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        SenderPolicy { allowed }
    }

    /// The sender as given, when it is a mailbox on an allowed domain or an allowed address.
    pub fn check(&self, from: &str) -> Result<(), SenderRefused> {
        let mailbox: Mailbox = from.parse().map_err(|_| SenderRefused::NotAMailbox)?;
        if self.allowed.is_empty() {
            return Err(SenderRefused::NoneAllowed);
        }
        let address = mailbox.email.to_string().to_ascii_lowercase();
        let domain = mailbox.email.domain().to_ascii_lowercase();
        let allowed = self.allowed.iter().any(|entry| {
            if entry.contains('@') {
                *entry == address
            } else {
                *entry == domain
            }
        });
        if allowed {
            Ok(())
        } else {
            Err(SenderRefused::NotAllowed(address))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> SenderPolicy {
        SenderPolicy::new(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_sender_on_an_allowed_domain_passes_and_any_other_is_refused() {
        let p = policy(&["shop.test", "news@other.test"]);
        assert_eq!(p.check("Tienda <ofertas@Shop.test>"), Ok(()));
        assert_eq!(p.check("news@other.test"), Ok(()));
        assert_eq!(
            p.check("ceo@other.test"),
            Err(SenderRefused::NotAllowed("ceo@other.test".into()))
        );
        assert_eq!(
            p.check("Bank <security@bank.test>"),
            Err(SenderRefused::NotAllowed("security@bank.test".into()))
        );
        assert!(p.check("evil@shop.test.bank.test").is_err());
        assert_eq!(p.check("not an address"), Err(SenderRefused::NotAMailbox));
    }

    #[test]
    fn without_a_list_no_sender_may_be_named() {
        assert_eq!(
            policy(&[]).check("ofertas@shop.test"),
            Err(SenderRefused::NoneAllowed)
        );
    }
}
