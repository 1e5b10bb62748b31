//! The token in a promotional e-mail's one-click unsubscribe link (RFC 8058): it names the
//! campaign and the customer and is signed with HMAC-SHA256, so nobody can unsubscribe
//! someone else by guessing, and following it needs no login.

use ring::hmac;

use super::hex;
use crate::model::{CampaignId, CustomerId};
use crate::secret::Secret;

/// Bytes of an HMAC-SHA256 tag.
const MAC_BYTES: usize = 32;

/// Signs and checks unsubscribe tokens with one secret (`HERALD_UNSUBSCRIBE_SECRET`).
#[derive(Clone)]
pub struct UnsubscribeTokens {
    key: hmac::Key,
}

impl UnsubscribeTokens {
    /// Refuses a secret that is empty, short or an example.
    pub fn new(secret: &Secret) -> Result<Self, super::secrets::WeakSecret> {
        super::secrets::check("HERALD_UNSUBSCRIBE_SECRET", secret.expose())?;
        Ok(UnsubscribeTokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.expose().trim().as_bytes()),
        })
    }

    /// `hex(campaign:customer)-hex(mac)`: only URL-safe characters.
    pub fn token(&self, campaign: &CampaignId, customer: &CustomerId) -> String {
        let payload = format!("{campaign}:{customer}");
        let tag = hmac::sign(&self.key, &signed(&payload));
        format!(
            "{}-{}",
            hex::encode(payload.as_bytes()),
            hex::encode(tag.as_ref())
        )
    }

    /// The campaign and customer a genuine token names; `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<(CampaignId, CustomerId)> {
        let (payload, mac) = token.split_once('-')?;
        let payload = String::from_utf8(hex::decode(payload, 2 * 64 + 1)?).ok()?;
        let mac = hex::decode(mac, MAC_BYTES)?;
        // In constant time, so the tag cannot be found a byte at a time.
        hmac::verify(&self.key, &signed(&payload), &mac).ok()?;
        let (campaign, customer) = payload.split_once(':')?;
        Some((CampaignId::parse(campaign)?, CustomerId::parse(customer)?))
    }
}

impl UnsubscribeTokens {
    /// The token of a customer's preference page link: `hex(customer)-hex(mac)`, signed for
    /// that purpose only, so an unsubscribe token never opens the page (nor the reverse).
    pub fn preferences_token(&self, customer: &CustomerId) -> String {
        let tag = hmac::sign(&self.key, &signed_page(customer.as_str()));
        format!(
            "{}-{}",
            hex::encode(customer.as_str().as_bytes()),
            hex::encode(tag.as_ref())
        )
    }

    /// The customer a genuine preference-page token names.
    pub fn verify_preferences(&self, token: &str) -> Option<CustomerId> {
        let (payload, mac) = token.split_once('-')?;
        let payload = String::from_utf8(hex::decode(payload, 64)?).ok()?;
        let mac = hex::decode(mac, MAC_BYTES)?;
        hmac::verify(&self.key, &signed_page(&payload), &mac).ok()?;
        CustomerId::parse(&payload)
    }
}

/// What is signed: a purpose prefix, so a MAC made for something else never passes here.
fn signed(payload: &str) -> Vec<u8> {
    format!("herald-unsubscribe-v1:{payload}").into_bytes()
}

fn signed_page(customer: &str) -> Vec<u8> {
    format!("herald-preferences-v1:{customer}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(secret: &str) -> UnsubscribeTokens {
        UnsubscribeTokens::new(&Secret::from(secret)).unwrap()
    }

    #[test]
    fn a_token_names_its_campaign_and_customer_and_nothing_else_passes() {
        let t = tokens("0123456789abcdef0123456789abcdef-one");
        let (c, u) = (
            CampaignId::parse("spring").unwrap(),
            CustomerId::parse("c-7").unwrap(),
        );
        let token = t.token(&c, &u);
        assert_eq!(t.verify(&token), Some((c.clone(), u.clone())));
        // Another secret, another customer under the same MAC, a cut MAC, junk.
        assert_eq!(
            tokens("0123456789abcdef0123456789abcdef-two").verify(&token),
            None
        );
        let other = t.token(&c, &CustomerId::parse("c-8").unwrap());
        let forged = format!(
            "{}-{}",
            other.split_once('-').unwrap().0,
            token.split_once('-').unwrap().1
        );
        assert_eq!(t.verify(&forged), None);
        assert_eq!(t.verify(&token[..token.len() - 2]), None);
        for junk in ["", "-", "zz-zz", "abc"] {
            assert_eq!(t.verify(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_page_token_opens_only_its_customers_page() {
        let t = tokens("0123456789abcdef0123456789abcdef-one");
        let u = CustomerId::parse("c-7").unwrap();
        let page = t.preferences_token(&u);
        assert_eq!(t.verify_preferences(&page), Some(u.clone()));
        assert_eq!(
            t.verify(&page),
            None,
            "a page token is no unsubscribe token"
        );
        let unsubscribe = t.token(&CampaignId::parse("spring").unwrap(), &u);
        assert_eq!(t.verify_preferences(&unsubscribe), None);
        let other = t.preferences_token(&CustomerId::parse("c-8").unwrap());
        let forged = format!(
            "{}-{}",
            other.split_once('-').unwrap().0,
            page.split_once('-').unwrap().1
        );
        assert_eq!(t.verify_preferences(&forged), None);
        assert_eq!(
            tokens("0123456789abcdef0123456789abcdef-two").verify_preferences(&page),
            None
        );
    }
}
