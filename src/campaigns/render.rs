//! One customer's message on one channel, as fan-out and retry both publish it.

use crate::model::{Campaign, Channel, Customer, CustomerId, Delivery, Message};

use super::rules::Rules;

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
