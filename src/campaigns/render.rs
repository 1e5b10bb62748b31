//! One customer's message on one channel, as fan-out and retry both publish it.

use crate::model::{
    Campaign, Channel, Customer, CustomerId, Delivery, EmailParts, Message, TemplateError,
    WhatsappTemplate,
};

use super::rules::Rules;

/// Largest rendered message, in bytes (body, subject and HTML part together). A template
/// of 16 KiB filled with 1 KiB attributes can render past Kafka's 1 MB message limit; such
/// a customer is failed and dead-lettered at fan-out rather than retried for ever (which
/// would stall its partition).
pub const MAX_RENDERED_BYTES: usize = 64 * 1024;

/// Why fan-out fails a customer whose message renders past [`MAX_RENDERED_BYTES`].
pub const TOO_LARGE: &str = "rendered message larger than 64 KiB";

/// Why fan-out fails a customer whose message cannot be rendered (checked at creation, so
/// only a value of this customer's can cause it).
pub const UNRENDERABLE: &str = "template could not be rendered for this customer";

/// Whether a rendered delivery is too big to publish.
pub fn too_large(d: &Delivery) -> bool {
    let email = d.email.as_ref().map_or(0, |e| {
        e.subject.len() + e.html.as_ref().map_or(0, String::len)
    });
    let whatsapp = d
        .whatsapp
        .as_ref()
        .map_or(0, |w| w.parameters.iter().map(String::len).sum());
    d.message.message.len() + email + whatsapp > MAX_RENDERED_BYTES
}

/// Renders one customer's message for one channel: what fan-out and retry both publish.
pub fn render_delivery(
    campaign: &Campaign,
    customer_id: &CustomerId,
    customer: &Customer,
    channel: Channel,
    attempt: u32,
    rules: &Rules,
    fanned_out_ms: u64,
) -> Result<Delivery, TemplateError> {
    let context = customer.template_context(customer_id);
    let (body, email) = campaign.in_language(customer.language.as_ref());
    let email = match (channel, email) {
        (Channel::Email, Some(e)) => Some(EmailParts {
            subject: e.subject.render(&context)?,
            html: e.html.as_ref().map(|h| h.0.render(&context)).transpose()?,
            from: e.from.clone(),
        }),
        (Channel::Email, None) => Some(EmailParts {
            subject: campaign.name.clone(),
            html: None,
            from: None,
        }),
        _ => None,
    };
    let whatsapp = match (channel, &campaign.whatsapp) {
        (Channel::Whatsapp, Some(w)) => Some(WhatsappTemplate {
            name: w.name.clone(),
            // Meta's template languages are the profile's tag (es, en_US) when it has one.
            language: customer
                .language
                .as_ref()
                .or(w.language.as_ref())
                .map_or("en".to_string(), |l| l.as_str().replace('-', "_")),
            parameters: w
                .parameters
                .iter()
                .map(|p| p.render(&context))
                .collect::<Result<_, _>>()?,
        }),
        _ => None,
    };
    Ok(Delivery {
        campaign: campaign.id.clone(),
        customer: customer_id.clone(),
        attempt,
        message: Message {
            to: customer
                .reachable_on(channel)
                .unwrap_or_default()
                .to_string(),
            message: body.render(&context)?,
            channel,
        },
        timeout_ms: rules.confirmation_timeout_ms(campaign, channel),
        on_uncertain: rules.uncertain_send(channel),
        fanned_out_ms,
        email,
        whatsapp,
    })
}
