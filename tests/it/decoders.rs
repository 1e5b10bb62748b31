//! Every Kafka consumer's decoder, fed arbitrary bytes and arbitrary JSON: none panics, and
//! each answers either a value (processed) or a non-empty reason (what the dead-letter topic
//! records). Bounded cases, so it runs in the normal suite; `fuzz/` has the same decoders as
//! cargo-fuzz targets for longer runs.

use herald::model::Channel;
use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON, a few levels deep, with the decoders' own field names among the keys so
/// that near-valid messages are tried, not only garbage.
fn json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("id".to_string()),
        Just("campaign".to_string()),
        Just("customer".to_string()),
        Just("type".to_string()),
        Just("to".to_string()),
        Just("message".to_string()),
        Just("event_type".to_string()),
        Just("sale_id".to_string()),
        Just("kind".to_string()),
        Just("timestamp".to_string()),
        "[a-z_]{1,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::from),
        prop_oneof![
            Just("email"),
            Just("sms"),
            Just("sale_completed"),
            Just("click"),
            Just("sent")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Runs every decoder on `payload`; each must answer, and a refusal must say why.
fn every_decoder_answers(payload: Option<&[u8]>) {
    fn check<T>(what: &str, r: Result<T, String>) {
        if let Err(reason) = r {
            assert!(
                !reason.trim().is_empty(),
                "{what}: an empty dead-letter reason"
            );
        }
    }
    for channel in Channel::ALL {
        check(
            "notification",
            herald::dispatch::decode_work(payload, channel),
        );
    }
    check(
        "campaign batch",
        herald::campaigns::fanout::decode_batch(payload),
    );
    check("lifecycle event", herald::metrics::event_of(payload));
    check("sale", herald::events::sales::sale_of(payload));
    check(
        "user event",
        herald::events::activity::user_event_of(payload),
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_processed_or_dead_lettered_with_a_reason(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        every_decoder_answers(Some(&bytes));
    }

    #[test]
    fn arbitrary_json_is_processed_or_dead_lettered_with_a_reason(value in json()) {
        every_decoder_answers(Some(value.to_string().as_bytes()));
    }
}

#[test]
fn an_empty_message_is_dead_lettered_with_a_reason() {
    every_decoder_answers(None);
    assert!(herald::metrics::event_of(None).is_err());
}

/// The regression cases kept from the runs so far: shapes that once came close.
#[test]
fn near_valid_messages_are_refused_with_their_reason() {
    let cases: [&[u8]; 4] = [
        br#"{"campaign": null, "id": "x"}"#,
        br#"{"id": "r1", "to": "a@b", "message": "m", "type": "fax", "published_at_ms": 1}"#,
        br#"{"event_type": "sale_completed", "quantity": -1}"#,
        b"\xff\xfe",
    ];
    for payload in cases {
        let r = herald::dispatch::decode_work(Some(payload), Channel::Email);
        assert!(r.is_err());
        every_decoder_answers(Some(payload));
    }
}
