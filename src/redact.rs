//! Personal data out of what nobody asked to see: provider error texts quote the address or
//! number they refused (Twilio's 21211 names the number, SMTP replies name the mailbox), and
//! those texts are logged and stored as reasons. An e-mail address keeps only its domain and a
//! number only its last two digits: enough to tell cases apart, not to reach anyone.

/// `text` with e-mail addresses and phone-number-like digit runs masked.
pub fn personal_data(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars() {
        if is_word_char(c) {
            word.push(c);
        } else {
            out.push_str(&mask_word(&word));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(&mask_word(&word));
    out
}

/// Characters that can be part of an address or a number as providers quote them.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '@' | '.' | '+' | '_' | '-' | '%')
}

fn mask_word(word: &str) -> String {
    if let Some((local, domain)) = word.rsplit_once('@') {
        if !local.is_empty() && domain.contains('.') {
            return format!("***@{domain}");
        }
    }
    let digits = word.chars().filter(char::is_ascii_digit).count();
    let numberish = word
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    if numberish && digits >= 7 {
        let mut left = digits;
        return word
            .chars()
            .map(|c| {
                if c.is_ascii_digit() {
                    left -= 1;
                    if left >= 2 {
                        return '*';
                    }
                }
                c
            })
            .collect();
    }
    word.to_string()
}

#[cfg(test)]
mod tests {
    use super::personal_data;

    #[test]
    fn addresses_and_numbers_are_masked_and_the_rest_kept() {
        assert_eq!(
            personal_data("The 'To' number +34600123456 is not a valid phone number (21211)"),
            "The 'To' number +*********56 is not a valid phone number (21211)"
        );
        assert_eq!(
            personal_data("550 5.1.1 <ana.lopez@shop.example>: Recipient address rejected"),
            "550 5.1.1 <***@shop.example>: Recipient address rejected"
        );
        assert_eq!(
            personal_data("provider answered 503"),
            "provider answered 503"
        );
        assert_eq!(
            personal_data("timed out after 2000 ms"),
            "timed out after 2000 ms"
        );
        assert_eq!(
            personal_data("/v1/customers/ana@x.es/loyalty"),
            "/v1/customers/***@x.es/loyalty"
        );
    }
}
