//! One customer's message on one channel, as fan-out and retry both publish it.

use crate::model::{Campaign, Channel, Customer, CustomerId, Delivery, Message};

use super::rules::Rules;

/// Largest rendered message, in bytes. A template of 16 KiB filled with 1 KiB attributes can
/// render past Kafka's 1 MB message limit; such a customer is failed and dead-lettered at
/// fan-out rather than retried for ever (which would stall its partition).
pub const MAX_RENDERED_BYTES: usize = 64 * 1024;

/// Why fan-out fails a customer whose message renders past [`MAX_RENDERED_BYTES`].
pub const TOO_LARGE: &str = "rendered message larger than 64 KiB";

/// Whether a rendered delivery is too big to publish.
pub fn too_large(d: &Delivery) -> bool {
    d.message.message.len() > MAX_RENDERED_BYTES
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
) -> Delivery {
    Delivery {
        campaign: campaign.id.clone(),
        customer: customer_id.clone(),
        attempt,
        message: Message {
            to: customer
                .reachable_on(channel)
                .unwrap_or_default()
                .to_string(),
            message: campaign
                .template
                .render(|k| customer.placeholder(customer_id, k)),
            channel,
        },
        timeout_ms: rules.confirmation_timeout_ms(campaign, channel),
        on_uncertain: rules.uncertain_send(channel),
        fanned_out_ms,
    }
}
