//! The activity log on both backends: writes with their event, the `since_id` cursor over rows
//! that share a timestamp, filters, ordering, missing workspaces and retention.

use berth_domain::WorkspaceId;
use berth_domain::event::EventType;
use berth_store::{ActivityQuery, ActivitySource, Error, EventFilter, NewActivity, NewEvent};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::harness::{Backend, both, create_workspace};

both!(
    rows_round_trip_with_their_event,
    cursor_never_skips_rows_sharing_a_timestamp,
    filters_and_limits_apply,
    unknown_workspace_or_cursor_is_not_found,
    a_removed_workspace_takes_no_activity,
    retention_deletes_only_old_rows,
);

fn entry(ws: WorkspaceId, kind: &str, at: DateTime<Utc>) -> NewActivity {
    NewActivity {
        id: Uuid::new_v4(),
        workspace_id: ws,
        activity_type: kind.to_owned(),
        source_id: None,
        target_id: None,
        method: None,
        summary: None,
        request_body: None,
        response_body: None,
        tool_trace: None,
        duration_ms: None,
        status: "ok".into(),
        error_detail: None,
        created_at: at,
    }
}

fn all() -> ActivityQuery {
    ActivityQuery {
        limit: 100,
        ..ActivityQuery::default()
    }
}

async fn rows_round_trip_with_their_event(b: Backend) {
    let s = b.store();
    let ws = create_workspace(&b, "alpha").await;
    let peer = Uuid::new_v4();
    let mut e = entry(ws, "a2a_receive", berth_store::now());
    e.source_id = Some(peer);
    e.target_id = Some(ws.into());
    e.method = Some("message/send".into());
    e.summary = Some("message/send → alpha".into());
    e.request_body = Some(json!({"jsonrpc": "2.0", "big": 9_007_199_254_740_993_u64}));
    e.response_body = Some(json!({"result": {"ok": true}}));
    e.tool_trace = Some(json!([{"tool": "x"}]));
    e.duration_ms = Some(42);
    e.status = "error".into();
    e.error_detail = Some("boom".into());
    let event = NewEvent {
        event_type: EventType::ActivityLogged,
        payload: json!({"id": e.id.to_string()}),
    };
    let stored = s.log_activity(e.clone(), vec![event]).await.unwrap();
    assert!(stored.seq > 0);

    let rows = s.activity(ws, all()).await.unwrap();
    assert_eq!(rows, vec![stored.clone()]);
    let r = &rows[0];
    assert_eq!(r.id, e.id);
    assert_eq!(r.workspace_id, ws);
    assert_eq!(r.source_id, Some(peer));
    assert_eq!(r.request_body, e.request_body);
    assert_eq!(r.response_body, e.response_body);
    assert_eq!(r.tool_trace, e.tool_trace);
    assert_eq!(r.duration_ms, Some(42));
    assert_eq!(r.status, "error");
    assert_eq!(r.error_detail.as_deref(), Some("boom"));
    assert_eq!(r.created_at, e.created_at);

    let events = s
        .events(EventFilter {
            workspace_id: Some(ws),
            ..EventFilter::default()
        })
        .await
        .unwrap();
    let logged: Vec<_> = events
        .iter()
        .filter(|ev| ev.event_type == "ACTIVITY_LOGGED")
        .collect();
    assert_eq!(logged.len(), 1, "{events:?}");
    assert_eq!(logged[0].payload, json!({"id": e.id.to_string()}));
}

async fn cursor_never_skips_rows_sharing_a_timestamp(b: Backend) {
    let s = b.store();
    let ws = create_workspace(&b, "alpha").await;
    let at = berth_store::now();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let e = entry(ws, "a2a_receive", at);
        ids.push(e.id);
        s.log_activity(e, vec![]).await.unwrap();
    }
    // Page from the first row two at a time: every later row comes back once, in write order.
    let mut seen = vec![ids[0]];
    let mut cursor = ids[0];
    loop {
        let page = s
            .activity(
                ws,
                ActivityQuery {
                    since_id: Some(cursor),
                    limit: 2,
                    ..ActivityQuery::default()
                },
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.windows(2).all(|w| w[0].seq < w[1].seq));
        seen.extend(page.iter().map(|r| r.id));
        cursor = page.last().unwrap().id;
    }
    assert_eq!(seen, ids);
    // Without a cursor: newest first.
    let newest: Vec<Uuid> = s
        .activity(ws, all())
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(newest, ids.iter().rev().copied().collect::<Vec<_>>());
}

async fn filters_and_limits_apply(b: Backend) {
    let s = b.store();
    let ws = create_workspace(&b, "alpha").await;
    let other = create_workspace(&b, "beta").await;
    let peer = Uuid::new_v4();
    let old = berth_store::now() - Duration::hours(2);
    let mut canvas = entry(ws, "a2a_receive", old);
    canvas.target_id = Some(peer);
    s.log_activity(canvas.clone(), vec![]).await.unwrap();
    let mut agent = entry(ws, "agent_log", berth_store::now());
    agent.source_id = Some(ws.into());
    s.log_activity(agent.clone(), vec![]).await.unwrap();
    s.log_activity(entry(other, "agent_log", berth_store::now()), vec![])
        .await
        .unwrap();

    let ids = |rows: Vec<berth_store::ActivityRecord>| -> Vec<Uuid> {
        rows.into_iter().map(|r| r.id).collect()
    };
    let q = |f: fn(&mut ActivityQuery)| {
        let mut q = all();
        f(&mut q);
        q
    };
    assert_eq!(
        ids(s
            .activity(ws, q(|q| q.activity_type = Some("agent_log".into())))
            .await
            .unwrap()),
        vec![agent.id]
    );
    assert_eq!(
        ids(s
            .activity(ws, q(|q| q.source = Some(ActivitySource::Canvas)))
            .await
            .unwrap()),
        vec![canvas.id]
    );
    assert_eq!(
        ids(s
            .activity(ws, q(|q| q.source = Some(ActivitySource::Agent)))
            .await
            .unwrap()),
        vec![agent.id]
    );
    let mut by_peer = all();
    by_peer.peer_id = Some(peer);
    assert_eq!(ids(s.activity(ws, by_peer).await.unwrap()), vec![canvas.id]);
    let mut recent = all();
    recent.since = Some(berth_store::now() - Duration::hours(1));
    assert_eq!(ids(s.activity(ws, recent).await.unwrap()), vec![agent.id]);
    let mut before = all();
    before.before = Some(berth_store::now() - Duration::hours(1));
    assert_eq!(ids(s.activity(ws, before).await.unwrap()), vec![canvas.id]);
    let mut one = all();
    one.limit = 1;
    assert_eq!(ids(s.activity(ws, one).await.unwrap()), vec![agent.id]);
    // A limit past the maximum is clamped, never an error.
    let mut huge = all();
    huge.limit = 1_000_000;
    assert_eq!(s.activity(ws, huge).await.unwrap().len(), 2);
}

/// A removed workspace takes no activity: the insert checks the status in the same statement,
/// so no writer adds a row (or its event) after the removal committed.
async fn a_removed_workspace_takes_no_activity(b: Backend) {
    let s = b.store();
    let ws = create_workspace(&b, "alpha").await;
    s.log_activity(entry(ws, "agent_log", berth_store::now()), vec![])
        .await
        .unwrap();
    assert_eq!(s.remove_workspaces(ws, vec![]).await.unwrap(), 1);
    let events_before = s.events(EventFilter::default()).await.unwrap().len();
    let err = s
        .log_activity(
            entry(ws, "agent_log", berth_store::now()),
            vec![NewEvent {
                event_type: EventType::ActivityLogged,
                payload: json!({}),
            }],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound), "{err:?}");
    assert_eq!(b.count("activity_logs").await, 1);
    assert_eq!(
        s.events(EventFilter::default()).await.unwrap().len(),
        events_before
    );
}

async fn unknown_workspace_or_cursor_is_not_found(b: Backend) {
    let s = b.store();
    let ws = create_workspace(&b, "alpha").await;
    let other = create_workspace(&b, "beta").await;
    let err = s
        .log_activity(
            entry(WorkspaceId::new_v4(), "agent_log", berth_store::now()),
            vec![NewEvent {
                event_type: EventType::ActivityLogged,
                payload: json!({}),
            }],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound), "{err:?}");
    let foreign = entry(other, "agent_log", berth_store::now());
    s.log_activity(foreign.clone(), vec![]).await.unwrap();
    for cursor in [Uuid::new_v4(), foreign.id] {
        let mut q = all();
        q.since_id = Some(cursor);
        let err = s.activity(ws, q).await.unwrap_err();
        assert!(matches!(err, Error::NotFound), "{err:?}");
    }
    // Nothing of the failed write was kept, not even its event.
    let events = s.events(EventFilter::default()).await.unwrap();
    assert!(
        events.iter().all(|e| e.event_type != "ACTIVITY_LOGGED"),
        "{events:?}"
    );
}

async fn retention_deletes_only_old_rows(b: Backend) {
    let s = b.store();
    let ws = create_workspace(&b, "alpha").await;
    let now = berth_store::now();
    for days in [10, 9, 8] {
        s.log_activity(entry(ws, "agent_log", now - Duration::days(days)), vec![])
            .await
            .unwrap();
    }
    let fresh = entry(ws, "agent_log", now);
    s.log_activity(fresh.clone(), vec![]).await.unwrap();
    assert_eq!(s.prune_activity(now - Duration::days(7)).await.unwrap(), 3);
    let left: Vec<Uuid> = s
        .activity(ws, all())
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![fresh.id]);
    assert_eq!(s.prune_activity(now - Duration::days(7)).await.unwrap(), 0);
}
