//! Dead letters: what cannot be handled goes to a dead-letter topic, untouched, with the
//! reason and where it came from in headers, so a consumer never stops for one message.

use std::time::Duration;

use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureProducer;

use super::{publish, KafkaError};

/// Header names on a dead letter; `herald dlq` tooling reads them.
pub mod dlq_headers {
    pub const REASON: &str = "herald-dlq-reason";
    pub const SOURCE_TOPIC: &str = "herald-source-topic";
    pub const SOURCE_PARTITION: &str = "herald-source-partition";
    pub const SOURCE_OFFSET: &str = "herald-source-offset";
}

/// Copies a message that cannot be handled to the dead-letter topic, untouched, with why.
pub async fn dead_letter(
    producer: &FutureProducer,
    dlq_topic: &str,
    msg: &OwnedMessage,
    reason: &str,
) -> Result<(), KafkaError> {
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: dlq_headers::REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: dlq_headers::SOURCE_TOPIC,
            value: Some(msg.topic()),
        })
        .insert(Header {
            key: dlq_headers::SOURCE_PARTITION,
            value: Some(&partition),
        })
        .insert(Header {
            key: dlq_headers::SOURCE_OFFSET,
            value: Some(&offset),
        });
    if let Some(original) = msg.headers() {
        for h in original.iter() {
            headers = headers.insert(h);
        }
    }
    let key = msg.key().map(String::from_utf8_lossy).unwrap_or_default();
    publish(
        producer,
        dlq_topic,
        &key,
        msg.payload().unwrap_or_default(),
        Some(headers),
    )
    .await
}

/// [`dead_letter`], retried every second while the broker refuses it: `true` once it is
/// published, `false` if `cancel` came first (the message must then stay uncommitted).
pub async fn dead_letter_patiently(
    producer: &FutureProducer,
    dlq_topic: &str,
    msg: &OwnedMessage,
    reason: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> bool {
    loop {
        match dead_letter(producer, dlq_topic, msg, reason).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::error!(error = %e, "cannot publish to the dead-letter topic; retrying");
                if !crate::shutdown::sleep_unless_cancelled(Duration::from_secs(1), cancel).await {
                    return false;
                }
            }
        }
    }
}

/// Header naming the program that dead-lettered a record it made itself (no source message).
pub const DLQ_ORIGIN_HEADER: &str = "herald-origin";

/// Dead-letters work that never was a Kafka message of its own (a customer fan-out could
/// not reach, a fallback chain that ran out), with the reason and who gave up on it.
pub async fn dead_letter_record<T: serde::Serialize>(
    producer: &FutureProducer,
    dlq_topic: &str,
    key: &str,
    record: &T,
    reason: &str,
    origin: &str,
) -> Result<(), KafkaError> {
    let payload = serde_json::to_vec(record)?;
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: dlq_headers::REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: DLQ_ORIGIN_HEADER,
            value: Some(origin),
        });
    publish(producer, dlq_topic, key, &payload, Some(headers)).await
}
