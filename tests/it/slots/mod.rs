//! The once-slot's state machine, driven script by script against the real Redis: late
//! receipts while a customer is on the way to the next channel, and the uncertain send.

use std::time::Duration;

use herald::model::{
    CampaignId, Channel, CustomerId, Delivery, Message, ReceiptStatus, UncertainSend,
};
use herald::store::{
    OnceClaim, ReceiptOutcome, ReceiptUpdate, RepublishWait, SentOutcome, SlotClaim, SlotMark,
};

const WAIT: RepublishWait = RepublishWait {
    first: Duration::from_secs(60),
    longest: Duration::from_secs(1800),
};

use crate::harness::{redis_url, TestStores as Store};

mod batches;

async fn store() -> Store {
    let ns = format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    Store::connect(&redis_url(), &ns).await.unwrap()
}

fn delivery(campaign: &str, customer: &str, channel: Channel, attempt: u32) -> Delivery {
    Delivery {
        campaign: CampaignId::parse(campaign).unwrap(),
        customer: CustomerId::parse(customer).unwrap(),
        attempt,
        message: Message {
            to: "x".into(),
            message: "hi".into(),
            channel,
        },
        // Due at once, so that retry's claim finds it overdue.
        timeout_ms: 0,
        fanned_out_ms: 0,
        on_uncertain: UncertainSend::Resend,
        email: None,
        whatsapp: None,
    }
}

async fn status(store: &Store, d: &Delivery) -> String {
    let slot = store.slots.slot(&d.campaign, &d.customer).await.unwrap();
    slot.get("st").cloned().unwrap_or_default()
}

/// `owner` claims `d` and marks it `sending`, as a dispatcher does right before the provider
/// call; the tests then let `owner` die there.
async fn claimed_and_sending(store: &Store, d: &Delivery, owner: &str, lease: Duration) {
    store.slots.claim_once(d, owner, lease, None).await.unwrap();
    assert!(store.slots.renew_once(d, owner, lease).await.unwrap());
}

/// Sends `d` and lets its time-out pass; `herald-retry` (token `retry-1`) claims it.
async fn sent_then_overdue(store: &Store, d: &Delivery) -> herald::store::Overdue {
    assert_eq!(
        store
            .slots
            .claim_once(d, "o1", Duration::from_secs(30), None)
            .await
            .unwrap(),
        OnceClaim::Claimed
    );
    assert!(store
        .slots
        .renew_once(d, "o1", Duration::from_secs(30))
        .await
        .unwrap());
    store
        .slots
        .mark_sent(d, "o1", "p1", "sim", false)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut overdue = store
        .slots
        .claim_overdue(&d.campaign, "retry-1", 10, Duration::from_secs(30), WAIT)
        .await
        .unwrap();
    overdue.retain(|o| o.customer == d.customer);
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert_eq!(status(store, d).await, "retrying");
    overdue.remove(0)
}

/// Applies receipts; every one must get an answer.
async fn applied(store: &Store, receipts: &[ReceiptUpdate]) -> Vec<ReceiptOutcome> {
    let answers = store.slots.apply_receipts(receipts).await;
    answers.into_iter().map(Result::unwrap).collect()
}

fn receipt(d: &Delivery, s: ReceiptStatus) -> ReceiptUpdate {
    ReceiptUpdate {
        campaign: d.campaign.clone(),
        customer: d.customer.clone(),
        channel: d.message.channel,
        status: s,
        reason: "late".to_string(),
        // What `sent` below records.
        provider_id: Some("p1".to_string()),
    }
}

/// While retry holds a silent e-mail (`retrying`, not yet moved on), its receipt still
/// counts and the move to SMS is then refused. Once it is queued on SMS, late e-mail
/// receipts, a delivery or a failure, are counted late and change nothing.
#[tokio::test]
async fn receipts_while_retrying_still_count_and_after_the_move_change_nothing() {
    let store = store().await;
    let watch = Duration::from_secs(60);

    let caught = delivery("late", "caught", Channel::Email, 0);
    let overdue = sent_then_overdue(&store, &caught).await;
    let outcome = applied(&store, &[receipt(&caught, ReceiptStatus::Delivered)]).await;
    assert!(
        matches!(outcome[..], [ReceiptOutcome::Delivered(_)]),
        "{outcome:?}"
    );
    let moved = store
        .slots
        .advance(
            &caught.campaign,
            &overdue,
            "retry-1",
            Channel::Sms,
            0,
            watch,
        )
        .await
        .unwrap();
    assert!(!moved, "a delivered customer is not moved to SMS");
    assert_eq!(status(&store, &caught).await, "delivered");

    let moved_on = delivery("late", "moved", Channel::Email, 0);
    let overdue = sent_then_overdue(&store, &moved_on).await;
    let moved = store
        .slots
        .advance(
            &moved_on.campaign,
            &overdue,
            "retry-1",
            Channel::Sms,
            0,
            watch,
        )
        .await
        .unwrap();
    assert!(moved);
    for s in [ReceiptStatus::Delivered, ReceiptStatus::Failed] {
        let outcome = applied(&store, &[receipt(&moved_on, s)]).await;
        assert_eq!(
            outcome,
            vec![ReceiptOutcome::Late],
            "{s:?} while queued on SMS"
        );
    }
    let slot = store
        .slots
        .slot(&moved_on.campaign, &moved_on.customer)
        .await
        .unwrap();
    assert_eq!(
        (slot["st"].as_str(), slot["ch"].as_str(), slot["a"].as_str()),
        ("queued", "sms", "1")
    );
    let counts = store
        .campaigns
        .campaign_counts(&moved_on.campaign)
        .await
        .unwrap();
    assert_eq!(counts.get("late_receipts"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("delivered"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("fallbacks"), Some(&1), "{counts:?}");
}

/// The uncertain window: a slot claimed but not yet `sending` is simply claimed again once
/// its owner's lease ends; one left `sending` is sent again under `resend` and ends
/// `uncertain` under `skip`; a receipt that came in the meantime settles it instead.
#[tokio::test]
async fn a_dead_owners_slot_is_claimed_resent_or_left_uncertain_by_the_policy() {
    let store = store().await;
    let lease = Duration::from_millis(50);
    let later = || tokio::time::sleep(Duration::from_millis(80));

    // Died after the claim, before the call: nothing can have gone out.
    let before = delivery("unc", "before", Channel::Email, 0);
    store
        .slots
        .claim_once(&before, "dead", lease, None)
        .await
        .unwrap();
    later().await;
    assert_eq!(
        store
            .slots
            .claim_once(&before, "next", lease, None)
            .await
            .unwrap(),
        OnceClaim::Claimed
    );

    // Died inside the call, policy resend: sent again, counted on the slot.
    let resend = delivery("unc", "resend", Channel::Email, 0);
    claimed_and_sending(&store, &resend, "dead", lease).await;
    assert_eq!(status(&store, &resend).await, "sending");
    assert!(
        matches!(
            store
                .slots
                .claim_once(&resend, "next", lease, None)
                .await
                .unwrap(),
            OnceClaim::Held { .. }
        ),
        "a live owner's send is never taken over"
    );
    later().await;
    assert_eq!(
        store
            .slots
            .claim_once(&resend, "next", lease, None)
            .await
            .unwrap(),
        OnceClaim::Resend
    );
    let slot = store
        .slots
        .slot(&resend.campaign, &resend.customer)
        .await
        .unwrap();
    assert_eq!((slot["rs"].as_str(), slot["po"].as_str()), ("1", "dead"));

    // Died inside the call, policy skip: uncertain, never sent again.
    let mut skip = delivery("unc", "skip", Channel::Email, 0);
    skip.on_uncertain = UncertainSend::Skip;
    claimed_and_sending(&store, &skip, "dead", lease).await;
    later().await;
    assert_eq!(
        store
            .slots
            .claim_once(&skip, "next", lease, None)
            .await
            .unwrap(),
        OnceClaim::Uncertain
    );
    assert_eq!(status(&store, &skip).await, "uncertain");
    assert!(matches!(
        store
            .slots
            .claim_once(&skip, "third", lease, None)
            .await
            .unwrap(),
        OnceClaim::Duplicate(_)
    ));

    // Died inside the call, but the provider's receipt came: delivered, not uncertain.
    let mut proven = delivery("unc", "proven", Channel::Email, 0);
    proven.on_uncertain = UncertainSend::Skip;
    claimed_and_sending(&store, &proven, "dead", lease).await;
    let early = receipt(&proven, ReceiptStatus::Delivered);
    assert_eq!(applied(&store, &[early]).await, vec![ReceiptOutcome::Early]);
    later().await;
    assert!(matches!(
        store
            .slots
            .claim_once(&proven, "next", lease, None)
            .await
            .unwrap(),
        OnceClaim::Duplicate(_)
    ));
    assert_eq!(status(&store, &proven).await, "delivered");

    // A graceful hand-back after an unanswered call is uncertain too; one before any call is not.
    let handed = delivery("unc", "handed", Channel::Email, 0);
    claimed_and_sending(&store, &handed, "old", lease).await;
    assert!(store
        .slots
        .release_once(&handed, "old", true)
        .await
        .unwrap());
    assert_eq!(
        store
            .slots
            .claim_once(&handed, "next", lease, None)
            .await
            .unwrap(),
        OnceClaim::Resend
    );
    let clean = delivery("unc", "clean", Channel::Email, 0);
    claimed_and_sending(&store, &clean, "old", lease).await;
    assert!(store
        .slots
        .release_once(&clean, "old", false)
        .await
        .unwrap());
    assert_eq!(
        store
            .slots
            .claim_once(&clean, "next", lease, None)
            .await
            .unwrap(),
        OnceClaim::Claimed
    );

    let counts = store
        .campaigns
        .campaign_counts(&skip.campaign)
        .await
        .unwrap();
    assert_eq!(counts.get("uncertain"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("resent"), Some(&2), "{counts:?}");
}

/// Issue 17: when the provider can take the call at once, the claim itself marks the slot
/// `sending` (the renewal before the first call, a script per notification, is skipped).
/// An owner that dies right after such a claim leaves the send uncertain, exactly as one that
/// died inside the call; its own renewals still hold the slot.
#[tokio::test]
async fn a_claim_to_send_at_once_is_sending_from_the_start() {
    const NOW: bool = true;
    let store = store().await;
    let lease = Duration::from_millis(50);
    let later = || tokio::time::sleep(Duration::from_millis(80));

    let mut skip = delivery("now", "skip", Channel::Email, 0);
    skip.on_uncertain = UncertainSend::Skip;
    assert_eq!(
        store
            .slots
            .claim_slot(&skip, "dead", lease, None, NOW)
            .await
            .unwrap(),
        OnceClaim::Claimed
    );
    assert_eq!(status(&store, &skip).await, "sending");
    assert!(store.slots.renew_once(&skip, "dead", lease).await.unwrap());
    assert!(matches!(
        store
            .slots
            .claim_once(&skip, "next", lease, None)
            .await
            .unwrap(),
        OnceClaim::Held { .. }
    ));
    later().await;
    assert_eq!(
        store
            .slots
            .claim_once(&skip, "next", lease, None)
            .await
            .unwrap(),
        OnceClaim::Uncertain
    );

    // Under `resend` the next owner, sending at once too, sends again and the slot says so.
    let resend = delivery("now", "resend", Channel::Email, 0);
    store
        .slots
        .claim_slot(&resend, "dead", lease, None, NOW)
        .await
        .unwrap();
    later().await;
    assert_eq!(
        store
            .slots
            .claim_slot(&resend, "next", lease, None, NOW)
            .await
            .unwrap(),
        OnceClaim::Resend
    );
    assert_eq!(status(&store, &resend).await, "sending");
    let counts = store
        .campaigns
        .campaign_counts(&skip.campaign)
        .await
        .unwrap();
    assert_eq!(
        (counts.get("uncertain"), counts.get("resent")),
        (Some(&1), Some(&1)),
        "{counts:?}"
    );
}

/// A provider whose acceptance is the confirmation (SMTP, FCM): the slot is delivered by the
/// same script that records the send. Before, a second call confirmed it, and a dispatcher
/// killed between the two left the customer pending until the time-out, then sent them on to
/// the next channel: a second message (CI caught it in the e-mail crash test).
#[tokio::test]
async fn an_acceptance_that_confirms_is_delivered_with_no_pending_wait() {
    let store = store().await;
    let d = delivery("confirmed", "c1", Channel::Email, 0);
    claimed_and_sending(&store, &d, "o1", Duration::from_secs(30)).await;
    let recorded = store
        .slots
        .mark_sent(&d, "o1", "<id@shop>", "smtp", true)
        .await
        .unwrap();
    assert_eq!(recorded, SentOutcome::Delivered);
    assert_eq!(status(&store, &d).await, "delivered");
    // The delivery's time-out is 0: were it pending, retry would find it overdue now.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let overdue = store
        .slots
        .claim_overdue(&d.campaign, "retry-1", 10, Duration::from_secs(30), WAIT)
        .await
        .unwrap();
    assert!(overdue.is_empty(), "{overdue:?}");
}

/// Providers post a webhook again when they heard no answer, and ingest answers 503 when one
/// shard of a post failed: a receipt the slot already reflects is a repeat. Before, it was
/// counted a late receipt (as if it had come after the customer moved on).
#[tokio::test]
async fn a_receipt_posted_again_is_a_repeat_not_a_late_receipt() {
    let store = store().await;
    let delivered = delivery("repeats", "ana", Channel::Email, 0);
    let failed = delivery("repeats", "bob", Channel::Email, 0);
    for d in [&delivered, &failed] {
        assert_eq!(
            store
                .slots
                .claim_slot(d, "o1", Duration::from_secs(30), None, true)
                .await
                .unwrap(),
            OnceClaim::Claimed
        );
        assert_eq!(
            store
                .slots
                .mark_sent(d, "o1", "p1", "sim", false)
                .await
                .unwrap(),
            SentOutcome::AwaitingReceipt
        );
    }
    let post = [
        receipt(&delivered, ReceiptStatus::Delivered),
        receipt(&failed, ReceiptStatus::Failed),
    ];
    let first = applied(&store, &post).await;
    assert!(
        matches!(first[0], ReceiptOutcome::Delivered(_)),
        "{first:?}"
    );
    assert_eq!(first[1], ReceiptOutcome::Undelivered);
    let again = applied(&store, &post).await;
    assert_eq!(again, [ReceiptOutcome::Repeated, ReceiptOutcome::Repeated]);
    let counts = store
        .campaigns
        .campaign_counts(&delivered.campaign)
        .await
        .unwrap();
    let count = |f: &str| counts.get(f).copied().unwrap_or(0);
    assert_eq!(
        (
            count("late_receipts"),
            count("delivered"),
            count("undelivered:email")
        ),
        (0, 1, 1),
        "{counts:?}"
    );
}

/// Writes `value` as a plain string at `key`, on one Redis or on the cluster the tests use.
async fn overwrite_with_string(key: &str, value: &str) {
    let _: () = crate::harness::redis_query(redis::cmd("SET").arg(key).arg(value)).await;
}

/// A slot whose key holds something else (corrupted, or written by hand) makes the script
/// that carries it fail. Before, every claim batched with it failed too and was retried, and
/// a retry could be batched with it again; now only that one fails, as corrupt (its message
/// is dead-lettered with the reason instead of being retried for ever). A script that fails
/// keeps what it wrote before failing, so `ana`'s claim was made by the failed call: its
/// retry must find it its own (before, it was taken for a dead owner's uncertain send:
/// counted resent, or with policy `skip` left uncertain and never sent).
#[tokio::test]
async fn a_corrupt_slot_fails_alone_not_the_claims_batched_with_it() {
    let ns = format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let store = Store::connect(&redis_url(), &ns).await.unwrap();
    let lease = Duration::from_secs(30);
    let ds: Vec<Delivery> = ["ana", "bad", "bob"]
        .iter()
        .map(|c| delivery("poisoned", c, Channel::Email, 0))
        .collect();
    overwrite_with_string(&format!("{ns}:once:{{poisoned}}:bad"), "not a once-slot").await;
    let claims = ds
        .iter()
        .map(|d| SlotClaim::of(d, "o1", lease, None, true))
        .collect();
    let answers = store.slots.claim_slots(claims).await;
    assert!(matches!(answers[0], Ok(OnceClaim::Claimed)), "{answers:?}");
    assert!(
        matches!(&answers[1], Err(herald::store::StoreError::Corrupt { key, what })
            if key.ends_with(":bad") && what.contains("WRONGTYPE") && !what.contains("unavailable")),
        "{answers:?}"
    );
    assert!(matches!(answers[2], Ok(OnceClaim::Claimed)), "{answers:?}");
    let counts = store
        .campaigns
        .campaign_counts(&ds[0].campaign)
        .await
        .unwrap();
    assert_eq!(counts.get("resent"), None, "{counts:?}");
}

/// A claim whose answer was lost (the call timed out after Redis ran it) is tried again by
/// the same handling: it finds its own claim, not an uncertain send of a dead owner.
#[tokio::test]
async fn a_claim_made_again_by_its_own_handling_is_still_claimed() {
    let store = store().await;
    let lease = Duration::from_secs(30);
    let mut d = delivery("own-claim", "ana", Channel::Email, 0);
    d.on_uncertain = UncertainSend::Skip;
    for _ in 0..2 {
        assert_eq!(
            store
                .slots
                .claim_slot(&d, "o1", lease, None, true)
                .await
                .unwrap(),
            OnceClaim::Claimed
        );
    }
    assert_eq!(status(&store, &d).await, "sending");
    // A claim that did not mark the slot `sending`, tried again by a call that does: the
    // provider call follows with no renewal, so the slot must say `sending` from now on.
    let other = delivery("own-claim", "bob", Channel::Email, 0);
    for send_now in [false, true] {
        assert_eq!(
            store
                .slots
                .claim_slot(&other, "o2", lease, None, send_now)
                .await
                .unwrap(),
            OnceClaim::Claimed
        );
    }
    assert_eq!(status(&store, &other).await, "sending");
    let counts = store.campaigns.campaign_counts(&d.campaign).await.unwrap();
    assert_eq!(
        (counts.get("resent"), counts.get("uncertain")),
        (None, None),
        "{counts:?}"
    );
}

/// An acceptance recorded again (its first call's answer was lost) is the same acceptance,
/// not a send after a lost lease: before, it answered `LostLease`, and the dispatcher
/// counted `sent_after_lost_lease` and warned that another owner might send again.
#[tokio::test]
async fn an_acceptance_recorded_again_is_not_a_lost_lease() {
    let store = store().await;
    let lease = Duration::from_secs(30);
    let waits = delivery("marks-again", "ana", Channel::Email, 0);
    let confirms = delivery("marks-again", "bob", Channel::Email, 0);
    for d in [&waits, &confirms] {
        store
            .slots
            .claim_slot(d, "o1", lease, None, true)
            .await
            .unwrap();
    }
    for _ in 0..2 {
        let outcomes: Vec<SentOutcome> = store
            .slots
            .mark_sent_many(vec![
                SlotMark::of(&waits, "o1", "p-1", "sim", false),
                SlotMark::of(&confirms, "o1", "p-2", "smtp", true),
            ])
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            outcomes,
            [SentOutcome::AwaitingReceipt, SentOutcome::Delivered]
        );
    }
    // Another message's acceptance is still refused.
    let other = store
        .slots
        .mark_sent(&waits, "o1", "p-other", "sim", false)
        .await
        .unwrap();
    assert_eq!(other, SentOutcome::LostLease);
    let counts = store
        .campaigns
        .campaign_counts(&waits.campaign)
        .await
        .unwrap();
    assert_eq!(counts.get("sent:email"), Some(&2), "{counts:?}");
}
