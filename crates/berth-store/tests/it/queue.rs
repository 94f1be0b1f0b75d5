//! The A2A busy queue and the token-usage ledger on both backends: FIFO delivery one at a time
//! per target, idempotent enqueue, the per-target bound, requeue in place, expiry, stale
//! dispatched rows, drop-stale, `last_outbound_at`, token usage, and the cascade on purge.

use berth_domain::WorkspaceId;
use berth_store::{Enqueued, Error, NewQueueItem, QueueSettle};
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::harness::{Backend, both, create_workspace};

both!(
    items_are_delivered_in_order_one_at_a_time,
    a_pending_idempotency_key_is_not_queued_twice,
    the_bound_refuses_and_writes_nothing,
    a_requeued_item_keeps_its_turn,
    expired_and_stale_items_are_handled,
    drop_stale_marks_old_queued_items,
    unknown_targets_are_not_found,
    outbound_time_and_token_usage_are_recorded,
    purge_takes_the_queue_with_it,
);

fn item(ws: WorkspaceId, n: u32, key: Option<&str>, at: DateTime<Utc>) -> NewQueueItem {
    NewQueueItem {
        id: Uuid::new_v4(),
        workspace_id: ws,
        caller_id: Some(Uuid::new_v4()),
        body: format!(r#"{{"jsonrpc":"2.0","id":{n},"method":"message/send","z":1,"a":2}}"#),
        method: Some("message/send".into()),
        idempotency_key: key.map(str::to_owned),
        expires_at: None,
        enqueued_at: at,
        max_pending: 10,
    }
}

fn settle(status: &str, error: Option<&str>, response: Option<&str>) -> QueueSettle {
    QueueSettle {
        status: status.into(),
        last_error: error.map(str::to_owned),
        response_body: response.map(str::to_owned),
        counts: true,
        at: berth_store::now(),
    }
}

async fn queued(b: &Backend, new: NewQueueItem) -> Uuid {
    match b.store().enqueue_a2a(new).await.expect("enqueue") {
        Enqueued::Queued { id, .. } => id,
        other => panic!("not queued: {other:?}"),
    }
}

async fn items_are_delivered_in_order_one_at_a_time(b: Backend) {
    let ws = create_workspace(&b, "t").await;
    let other = create_workspace(&b, "o").await;
    // Three items sharing one timestamp: the order is the enqueue order.
    let at = berth_store::now();
    let mut ids = Vec::new();
    for n in 0..3 {
        let new = item(ws, n, None, at);
        let body = new.body.clone();
        let id = new.id;
        match b.store().enqueue_a2a(new).await.unwrap() {
            Enqueued::Queued { id: got, depth } => {
                assert_eq!(got, id);
                assert_eq!(depth, i64::from(n) + 1);
            }
            other => panic!("{other:?}"),
        }
        let stored = b.store().a2a_queue_item(id).await.unwrap().unwrap();
        assert_eq!(stored.body, body, "the body is kept byte for byte");
        assert_eq!(stored.status, "queued");
        assert_eq!(stored.priority, berth_store::QUEUE_PRIORITY_TASK);
        ids.push(id);
    }
    let other_id = queued(&b, item(other, 9, None, at)).await;
    let mut targets = b
        .store()
        .a2a_queued_targets(berth_store::now())
        .await
        .unwrap();
    targets.sort();
    let mut want = vec![ws, other];
    want.sort();
    assert_eq!(targets, want);

    let now = berth_store::now();
    let first = b.store().claim_a2a(ws, now).await.unwrap().expect("head");
    assert_eq!(first.id, ids[0]);
    assert_eq!(first.status, "dispatched");
    assert_eq!(first.attempts, 1);
    assert_eq!(first.dispatched_at, Some(now));
    // One delivery per target at a time; another target is independent.
    assert_eq!(b.store().claim_a2a(ws, now).await.unwrap(), None);
    assert_eq!(
        b.store().claim_a2a(other, now).await.unwrap().map(|i| i.id),
        Some(other_id)
    );
    assert!(
        b.store()
            .settle_a2a(first.id, settle("completed", None, Some(r#"{"ok":1}"#)))
            .await
            .unwrap()
    );
    // Settling twice changes nothing.
    assert!(
        !b.store()
            .settle_a2a(first.id, settle("failed", Some("x"), None))
            .await
            .unwrap()
    );
    let done = b.store().a2a_queue_item(first.id).await.unwrap().unwrap();
    assert_eq!(done.status, "completed");
    assert!(done.completed_at.is_some());
    assert_eq!(done.response_body.as_deref(), Some(r#"{"ok":1}"#));
    assert_eq!(done.last_error, None);

    let second = b.store().claim_a2a(ws, now).await.unwrap().expect("next");
    assert_eq!(second.id, ids[1]);
    b.store()
        .settle_a2a(second.id, settle("completed", None, None))
        .await
        .unwrap();
    let third = b.store().claim_a2a(ws, now).await.unwrap().expect("last");
    assert_eq!(third.id, ids[2]);
    b.store()
        .settle_a2a(third.id, settle("failed", Some("agent refused"), None))
        .await
        .unwrap();
    assert_eq!(b.store().claim_a2a(ws, now).await.unwrap(), None);
    let all = b.store().a2a_queue_of(ws).await.unwrap();
    assert_eq!(
        all.iter().map(|i| i.status.as_str()).collect::<Vec<_>>(),
        ["completed", "completed", "failed"]
    );
    assert_eq!(all[2].last_error.as_deref(), Some("agent refused"));
}

async fn a_pending_idempotency_key_is_not_queued_twice(b: Backend) {
    let ws = create_workspace(&b, "t").await;
    let at = berth_store::now();
    let first = queued(&b, item(ws, 1, Some("m-1"), at)).await;
    match b
        .store()
        .enqueue_a2a(item(ws, 2, Some("m-1"), at))
        .await
        .unwrap()
    {
        Enqueued::Duplicate { id, depth } => {
            assert_eq!(id, first);
            assert_eq!(depth, 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.count("a2a_queue").await, 1);
    // While dispatched the key is still pending; once finished it may be queued again.
    let claimed = b.store().claim_a2a(ws, at).await.unwrap().unwrap();
    assert!(matches!(
        b.store().enqueue_a2a(item(ws, 3, Some("m-1"), at)).await.unwrap(),
        Enqueued::Duplicate { id, .. } if id == first
    ));
    b.store()
        .settle_a2a(claimed.id, settle("completed", None, None))
        .await
        .unwrap();
    let again = queued(&b, item(ws, 4, Some("m-1"), at)).await;
    assert_ne!(again, first);
    // The same key on another target is another message.
    let other = create_workspace(&b, "o").await;
    queued(&b, item(other, 5, Some("m-1"), at)).await;
}

async fn the_bound_refuses_and_writes_nothing(b: Backend) {
    let ws = create_workspace(&b, "t").await;
    let at = berth_store::now();
    let bound = |n| NewQueueItem {
        max_pending: 2,
        ..item(ws, n, None, at)
    };
    queued(&b, bound(1)).await;
    queued(&b, bound(2)).await;
    assert_eq!(
        b.store().enqueue_a2a(bound(3)).await.unwrap(),
        Enqueued::Full { pending: 2 }
    );
    // An in-flight item still counts; a finished one does not.
    let claimed = b.store().claim_a2a(ws, at).await.unwrap().unwrap();
    assert_eq!(
        b.store().enqueue_a2a(bound(4)).await.unwrap(),
        Enqueued::Full { pending: 2 }
    );
    b.store()
        .settle_a2a(claimed.id, settle("completed", None, None))
        .await
        .unwrap();
    queued(&b, bound(5)).await;
    assert_eq!(b.count("a2a_queue").await, 3);
}

async fn a_requeued_item_keeps_its_turn(b: Backend) {
    let ws = create_workspace(&b, "t").await;
    let at = berth_store::now();
    let first = queued(&b, item(ws, 1, Some("k1"), at)).await;
    let second = queued(&b, item(ws, 2, None, at)).await;
    let claimed = b.store().claim_a2a(ws, at).await.unwrap().unwrap();
    assert_eq!(claimed.id, first);
    assert!(
        b.store()
            .settle_a2a(first, settle("queued", Some("target busy"), None))
            .await
            .unwrap()
    );
    let back = b.store().a2a_queue_item(first).await.unwrap().unwrap();
    assert_eq!(back.status, "queued");
    assert_eq!(back.dispatched_at, None);
    assert_eq!(back.completed_at, None);
    assert_eq!(back.last_error.as_deref(), Some("target busy"));
    // Its key still points at it, and it is still first.
    assert!(matches!(
        b.store().enqueue_a2a(item(ws, 3, Some("k1"), at)).await.unwrap(),
        Enqueued::Duplicate { id, .. } if id == first
    ));
    let again = b.store().claim_a2a(ws, at).await.unwrap().unwrap();
    assert_eq!(again.id, first);
    assert_eq!(again.attempts, 2);
    b.store()
        .settle_a2a(first, settle("completed", None, None))
        .await
        .unwrap();
    assert_eq!(
        b.store().claim_a2a(ws, at).await.unwrap().map(|i| i.id),
        Some(second)
    );
    // A bounce that does not count takes back the claim's attempt.
    assert!(
        b.store()
            .settle_a2a(
                second,
                QueueSettle {
                    counts: false,
                    ..settle("queued", Some("target busy"), None)
                }
            )
            .await
            .unwrap()
    );
    let bounced = b.store().a2a_queue_item(second).await.unwrap().unwrap();
    assert_eq!((bounced.status.as_str(), bounced.attempts), ("queued", 0));
}

async fn expired_and_stale_items_are_handled(b: Backend) {
    let ws = create_workspace(&b, "t").await;
    let now = berth_store::now();
    let expired = queued(
        &b,
        NewQueueItem {
            expires_at: Some(now - Duration::seconds(1)),
            ..item(ws, 1, None, now)
        },
    )
    .await;
    let live = queued(
        &b,
        NewQueueItem {
            expires_at: Some(now + Duration::hours(1)),
            ..item(ws, 2, None, now)
        },
    )
    .await;
    // An expired item is never claimed.
    let claimed = b.store().claim_a2a(ws, now).await.unwrap().unwrap();
    assert_eq!(claimed.id, live);
    // A dispatched item older than the stale mark goes back; the expired one is dropped.
    let long_ago = now - Duration::days(30);
    let (dropped, requeued, deleted) = b
        .store()
        .a2a_queue_upkeep(now, now + Duration::seconds(1), long_ago)
        .await
        .unwrap();
    assert_eq!((dropped, requeued, deleted), (1, 1, 0));
    let e = b.store().a2a_queue_item(expired).await.unwrap().unwrap();
    assert_eq!(e.status, "dropped");
    assert!(e.completed_at.is_some());
    let l = b.store().a2a_queue_item(live).await.unwrap().unwrap();
    assert_eq!(l.status, "queued");
    assert_eq!(l.dispatched_at, None);
    // A fresh attempt is left alone.
    b.store().claim_a2a(ws, now).await.unwrap().unwrap();
    assert_eq!(
        b.store()
            .a2a_queue_upkeep(now, now - Duration::seconds(1), long_ago)
            .await
            .unwrap(),
        (0, 0, 0)
    );
    assert_eq!(
        b.store()
            .a2a_queue_item(live)
            .await
            .unwrap()
            .unwrap()
            .status,
        "dispatched"
    );
    // Finished items go once they are older than the mark; pending ones never do.
    b.store()
        .settle_a2a(live, settle("completed", None, None))
        .await
        .unwrap();
    let pending = queued(&b, item(ws, 3, None, now)).await;
    let mark = berth_store::now() + Duration::seconds(1);
    assert_eq!(
        b.store()
            .a2a_queue_upkeep(now, now - Duration::seconds(1), mark)
            .await
            .unwrap(),
        (0, 0, 2)
    );
    assert_eq!(b.store().a2a_queue_item(expired).await.unwrap(), None);
    assert_eq!(b.store().a2a_queue_item(live).await.unwrap(), None);
    assert!(b.store().a2a_queue_item(pending).await.unwrap().is_some());
}

async fn drop_stale_marks_old_queued_items(b: Backend) {
    let a = create_workspace(&b, "a").await;
    let c = create_workspace(&b, "c").await;
    let old = berth_store::now() - Duration::hours(2);
    let a_old = queued(&b, item(a, 1, None, old)).await;
    let c_old = queued(&b, item(c, 2, None, old)).await;
    let a_new = queued(&b, item(a, 3, None, berth_store::now())).await;
    let cutoff = berth_store::now() - Duration::hours(1);
    let now = berth_store::now();
    assert_eq!(
        b.store()
            .drop_stale_a2a(cutoff, Some(a), now)
            .await
            .unwrap(),
        1
    );
    let dropped = b.store().a2a_queue_item(a_old).await.unwrap().unwrap();
    assert_eq!(dropped.status, "dropped");
    // The note is set even without an earlier error (the reference's NULL concatenation).
    assert_eq!(
        dropped.last_error.as_deref(),
        Some("dropped: queued too long")
    );
    assert_eq!(
        b.store()
            .a2a_queue_item(a_new)
            .await
            .unwrap()
            .unwrap()
            .status,
        "queued"
    );
    assert_eq!(
        b.store().drop_stale_a2a(cutoff, None, now).await.unwrap(),
        1
    );
    assert_eq!(
        b.store()
            .a2a_queue_item(c_old)
            .await
            .unwrap()
            .unwrap()
            .status,
        "dropped"
    );
}

async fn unknown_targets_are_not_found(b: Backend) {
    let ghost = WorkspaceId::new_v4();
    assert!(matches!(
        b.store()
            .enqueue_a2a(item(ghost, 1, None, berth_store::now()))
            .await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        b.store()
            .add_token_usage(ghost, berth_store::now(), 1, 1, 0.1)
            .await,
        Err(Error::NotFound)
    ));
    assert_eq!(b.count("a2a_queue").await, 0);
    assert_eq!(
        b.store().a2a_queue_item(Uuid::new_v4()).await.unwrap(),
        None
    );
    assert_eq!(
        b.store()
            .claim_a2a(ghost, berth_store::now())
            .await
            .unwrap(),
        None
    );
}

async fn outbound_time_and_token_usage_are_recorded(b: Backend) {
    let ws = create_workspace(&b, "t").await;
    let at = berth_store::now();
    b.store().touch_last_outbound(ws, at).await.unwrap();
    let row = b.store().get_workspace(ws).await.unwrap().unwrap();
    assert_eq!(row.last_outbound_at, Some(at));

    let day = DateTime::parse_from_rfc3339("2026-11-27T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    b.store()
        .add_token_usage(ws, day, 100, 20, 0.5)
        .await
        .unwrap();
    b.store()
        .add_token_usage(ws, day, 1, 2, 0.25)
        .await
        .unwrap();
    b.store()
        .add_token_usage(ws, day + Duration::days(1), 7, 0, 0.125)
        .await
        .unwrap();
    let usage = b.store().token_usage(ws).await.unwrap();
    assert_eq!(usage.len(), 2);
    assert_eq!(usage[0].period_start, day);
    assert_eq!((usage[0].input_tokens, usage[0].output_tokens), (101, 22));
    assert_eq!(usage[0].call_count, 2);
    assert!((usage[0].estimated_cost_usd - 0.75).abs() < 1e-9);
    assert_eq!(usage[1].input_tokens, 7);
    assert_eq!(usage[1].call_count, 1);
}

async fn purge_takes_the_queue_with_it(b: Backend) {
    let ws = create_workspace(&b, "t").await;
    queued(&b, item(ws, 1, None, berth_store::now())).await;
    b.store()
        .add_token_usage(ws, berth_store::now(), 1, 1, 0.0)
        .await
        .unwrap();
    b.store().purge_workspaces(vec![ws]).await.unwrap();
    assert_eq!(b.count("a2a_queue").await, 0);
    assert_eq!(b.count("workspace_token_usage").await, 0);
}
