//! Contract 8.3: every message id fits an AMQP short string and is unique per
//! (order, status), whatever the order id's length. Downstream consumers
//! deduplicate on it, so two different transitions sharing one would lose a
//! message (a paid order, say). The lifecycle messages (contract 8.6) are
//! unique per (order, part, kind) the same way, and never meet a status id.

use fulfillment_core::{MAX_MESSAGE_ID_BYTES, OrderMessage, OrderStatus};
use proptest::prelude::*;

fn status() -> impl Strategy<Value = OrderStatus> {
    prop::sample::select(OrderStatus::ALL.to_vec())
}

/// Order ids built to collide if anything were cut: a shared stem of any
/// length (around the verbatim limit and past the short-string limit), then a
/// short, possibly empty, distinguishing tail. Multi-byte characters move the
/// cut points off ASCII boundaries.
fn order_id() -> impl Strategy<Value = String> {
    let stem = prop_oneof![
        Just("o"),
        Just("é"),
        Just("€"),
        Just("/"),
        Just("~"),
        Just("0")
    ];
    (stem, 0usize..=600, "[a-z€/~]{0,3}").prop_map(|(unit, n, tail)| {
        let mut id = unit.repeat(n);
        id.push_str(&tail);
        id
    })
}

/// What a lifecycle message id is made of: an event id, an amount or a
/// dispute id, possibly long or holding a `/`.
fn part() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("evt_1".to_owned()),
        Just("1500".to_owned()),
        Just("paid".to_owned()),
        "[a-z0-9_/]{0,12}",
        (0usize..=300).prop_map(|n| "p".repeat(n)),
    ]
}

fn kind() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "payment_attempt_failed",
        "refunded",
        "dispute_open",
        "dispute_won",
        "dispute_lost",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn lifecycle_ids_fit_and_never_collide(
        a in order_id(), pa in part(), ka in kind(),
        b in order_id(), pb in part(), kb in kind(),
        s in status(),
    ) {
        let ida = OrderMessage::note_id(&a, &pa, ka);
        let idb = OrderMessage::note_id(&b, &pb, kb);
        prop_assert!(ida.len() <= MAX_MESSAGE_ID_BYTES, "{} bytes", ida.len());
        prop_assert_eq!(ida == idb, (&a, &pa, ka) == (&b, &pb, kb), "{} / {}", ida, idb);
        prop_assert_ne!(&ida, &OrderMessage::message_id(&b, s));
        prop_assert_ne!(&ida, &OrderMessage::message_id(&a, s));
        prop_assert_eq!(ida, OrderMessage::note_id(&a, &pa, ka));
    }

    #[test]
    fn message_ids_fit_and_never_collide(
        a in order_id(), sa in status(), b in order_id(), sb in status()
    ) {
        let ida = OrderMessage::message_id(&a, sa);
        let idb = OrderMessage::message_id(&b, sb);
        prop_assert!(ida.len() <= MAX_MESSAGE_ID_BYTES, "{} bytes", ida.len());
        prop_assert!(idb.len() <= MAX_MESSAGE_ID_BYTES, "{} bytes", idb.len());
        prop_assert_eq!(ida == idb, a == b && sa == sb);
        // Stable: the same transition always gets the same id (republish).
        prop_assert_eq!(ida, OrderMessage::message_id(&a, sa));
    }
}

#[test]
fn the_observed_collision_is_gone() {
    // Issue 9, item 2: two orders sharing their first 300 characters, and one
    // 300-character order's two statuses, shared one cut AMQP message id.
    let shared = "m".repeat(300);
    let (a, b) = (format!("{shared}-a"), format!("{shared}-b"));
    let ids = [
        OrderMessage::message_id(&a, OrderStatus::Paid),
        OrderMessage::message_id(&b, OrderStatus::Paid),
        OrderMessage::message_id(&shared, OrderStatus::AwaitingPayment),
        OrderMessage::message_id(&shared, OrderStatus::Paid),
    ];
    for (i, x) in ids.iter().enumerate() {
        assert!(x.len() <= MAX_MESSAGE_ID_BYTES);
        for y in &ids[i + 1..] {
            assert_ne!(x, y);
        }
    }
}
