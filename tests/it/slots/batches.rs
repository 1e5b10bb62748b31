//! Claims and acceptances batched into one script call are each answered as if alone, in
//! order and counted once.

use super::*;

/// A dispatcher's claims go to Redis in batches: claims of two campaigns in one batch are
/// each answered as if made alone, in order, and a second claim of a slot in the same batch
/// (a redelivered copy) finds the first one's lease, as it would in a call of its own.
#[tokio::test]
async fn claims_sent_together_are_answered_each_as_if_alone() {
    let store = store().await;
    let lease = Duration::from_secs(30);
    let spring = delivery("batch-spring", "ana", Channel::Email, 0);
    let other = delivery("batch-spring", "bob", Channel::Email, 0);
    let autumn = delivery("batch-autumn", "ana", Channel::Email, 0);
    let mut fallback = delivery("batch-autumn", "eve", Channel::Sms, 1);
    fallback.timeout_ms = 60_000;
    let claim = |d: &Delivery, owner: &str| SlotClaim::of(d, owner, lease, None, true);
    let answers = store
        .slots
        .claim_slots(vec![
            claim(&spring, "o1"),
            claim(&autumn, "o2"),
            claim(&other, "o3"),
            claim(&spring, "o4"),
            claim(&fallback, "o5"),
        ])
        .await;
    let answers: Vec<OnceClaim> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        answers[..3],
        [OnceClaim::Claimed, OnceClaim::Claimed, OnceClaim::Claimed]
    );
    assert!(
        matches!(answers[3], OnceClaim::Held { .. }),
        "the copy in the same batch must not be claimed too: {:?}",
        answers[3]
    );
    // A fallback attempt whose slot is gone (expired) is not sent.
    assert_eq!(answers[4], OnceClaim::Duplicate("expired".into()));
    for (d, owner) in [(&spring, "o1"), (&autumn, "o2"), (&other, "o3")] {
        let slot = store.slots.slot(&d.campaign, &d.customer).await.unwrap();
        assert_eq!(
            (slot["st"].as_str(), slot["own"].as_str()),
            ("sending", owner)
        );
    }
}

/// Acceptances recorded together: each slot gets its own outcome, and a mark by an owner who
/// lost the lease changes nothing even beside marks that succeed.
#[tokio::test]
async fn acceptances_recorded_together_each_get_their_own_outcome() {
    let store = store().await;
    let lease = Duration::from_secs(30);
    let waits = delivery("marks-a", "ana", Channel::Email, 0);
    let confirms = delivery("marks-b", "bob", Channel::Email, 0);
    let lost = delivery("marks-a", "eve", Channel::Email, 0);
    for (d, owner) in [(&waits, "o1"), (&confirms, "o2"), (&lost, "o3")] {
        assert_eq!(
            store
                .slots
                .claim_slot(d, owner, lease, None, true)
                .await
                .unwrap(),
            OnceClaim::Claimed
        );
    }
    let outcomes = store
        .slots
        .mark_sent_many(vec![
            SlotMark::of(&waits, "o1", "p-1", "sim", false),
            SlotMark::of(&confirms, "o2", "p-2", "smtp", true),
            SlotMark::of(&lost, "not-the-owner", "p-3", "sim", false),
        ])
        .await;
    let outcomes: Vec<SentOutcome> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        outcomes,
        [
            SentOutcome::AwaitingReceipt,
            SentOutcome::Delivered,
            SentOutcome::LostLease
        ]
    );
    assert_eq!(status(&store, &waits).await, "sent");
    assert_eq!(status(&store, &confirms).await, "delivered");
    assert_eq!(status(&store, &lost).await, "sending");
    let slot = store
        .slots
        .slot(&waits.campaign, &waits.customer)
        .await
        .unwrap();
    assert_eq!(
        (slot["pid"].as_str(), slot["prov"].as_str()),
        ("p-1", "sim")
    );
}

/// More claims than one script call carries are split over several calls, and still every
/// claim gets its own answer, in order.
#[tokio::test]
async fn a_batch_larger_than_one_call_is_split_and_answered_in_order() {
    let store = store().await;
    let n = herald::store::SLOTS_PER_CALL * 2 + 44;
    let customers: Vec<Delivery> = (0..n)
        .map(|i| delivery("big-batch", &format!("c{i}"), Channel::Email, 0))
        .collect();
    let claims = customers
        .iter()
        .enumerate()
        .map(|(i, d)| SlotClaim::of(d, &format!("o{i}"), Duration::from_secs(30), None, false))
        .collect();
    let answers = store.slots.claim_slots(claims).await;
    assert_eq!(answers.len(), n);
    assert!(answers
        .into_iter()
        .all(|a| a.unwrap() == OnceClaim::Claimed));
    for i in [0, herald::store::SLOTS_PER_CALL, n - 1] {
        let d = &customers[i];
        let slot = store.slots.slot(&d.campaign, &d.customer).await.unwrap();
        assert_eq!(slot["own"], format!("o{i}"));
    }
}

/// The counts of a batch are summed in the script and written once per field: every slot of
/// the batch must still be counted once, per channel and per provider.
#[tokio::test]
async fn a_batch_counts_each_of_its_slots_once() {
    let store = store().await;
    let lease = Duration::from_secs(30);
    let mut ds: Vec<Delivery> = (0..4)
        .map(|i| delivery("tally", &format!("c{i}"), Channel::Email, 0))
        .collect();
    ds.push(delivery("tally", "c4", Channel::Sms, 0));
    let claims = ds
        .iter()
        .map(|d| SlotClaim::of(d, "o1", lease, None, true))
        .collect();
    assert!(store
        .slots
        .claim_slots(claims)
        .await
        .into_iter()
        .all(|a| a.unwrap() == OnceClaim::Claimed));
    let marks = ds
        .iter()
        .map(|d| {
            let provider = if d.message.channel == Channel::Sms {
                "twilio"
            } else {
                "sim"
            };
            SlotMark::of(d, "o1", "p1", provider, false)
        })
        .collect();
    assert!(store
        .slots
        .mark_sent_many(marks)
        .await
        .into_iter()
        .all(|m| m.unwrap() == SentOutcome::AwaitingReceipt));
    let receipts: Vec<ReceiptUpdate> = ds
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let status = if i == 3 {
                ReceiptStatus::Failed
            } else {
                ReceiptStatus::Delivered
            };
            receipt(d, status)
        })
        .collect();
    applied(&store, &receipts).await;
    let counts = store
        .campaigns
        .campaign_counts(&ds[0].campaign)
        .await
        .unwrap();
    let count = |f: &str| counts.get(f).copied().unwrap_or(0);
    assert_eq!(
        [
            count("sent"),
            count("sent:email"),
            count("sent:sms"),
            count("provider:sim"),
            count("provider:twilio"),
            count("delivered"),
            count("delivered:email"),
            count("delivered:sms"),
            count("undelivered:email"),
        ],
        [5, 4, 1, 4, 1, 4, 3, 1, 1],
        "{counts:?}"
    );
}
