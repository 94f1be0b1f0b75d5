//! The event log routes (`GET /events[/{id}]`, REFERENCE.md §8.3 plus `?after=`/`?limit=`) and
//! the retention sweep.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, app, keys, sorted};

fn seqs(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn events_newest_first_with_paging_and_admin_only() {
    let app = app().await;
    let (a, token) = app.container("alpha").await;
    let (b, _) = app.container("beta").await;
    for n in 0..3 {
        app.post(
            &format!("/workspaces/{a}/secrets"),
            Some(&token),
            &json!({"key": format!("K{n}"), "value": "v"}),
        )
        .await;
    }
    let all = app.get("/events").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    let list = all.json.as_array().unwrap();
    assert!(list.len() >= 5);
    assert_eq!(
        keys(&list[0]),
        sorted(&[
            "created_at",
            "event_type",
            "id",
            "payload",
            "seq",
            "workspace_id"
        ])
    );
    let s = seqs(&all.json);
    assert!(s.windows(2).all(|w| w[0] > w[1]), "newest first: {s:?}");
    assert_eq!(list[0]["event_type"], "secret.set");
    assert_eq!(list[0]["payload"]["key"], "K2");
    assert_eq!(list[0]["workspace_id"], a.to_string());

    let two = app.get("/events?limit=2").await;
    assert_eq!(seqs(&two.json), s[..2].to_vec());
    // `after` pages forward, oldest first.
    let oldest = *s.last().unwrap();
    let forward = app.get(&format!("/events?after={oldest}&limit=2")).await;
    let f = seqs(&forward.json);
    assert_eq!(f.len(), 2);
    assert!(f[0] > oldest && f[1] > f[0]);
    let rest = app.get(&format!("/events?after={}", f[1])).await;
    assert_eq!(seqs(&rest.json).len(), s.len() - 3);

    let of_b = app.get(&format!("/events/{b}")).await;
    assert!(
        of_b.json
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["workspace_id"] == b.to_string())
    );
    assert!(!of_b.json.as_array().unwrap().is_empty());
    let of_a = app.get(&format!("/events/{a}?limit=3")).await;
    assert_eq!(
        of_a.json
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["payload"]["key"].clone())
            .collect::<Vec<_>>(),
        vec![json!("K2"), json!("K1"), json!("K0")]
    );

    for (uri, error) in [
        ("/events?limit=0", "invalid limit"),
        ("/events?limit=1001", "invalid limit"),
        ("/events?limit=abc", "invalid limit"),
        ("/events?after=-1", "invalid after"),
        ("/events?after=x", "invalid after"),
        ("/events/not-a-uuid", "invalid workspace ID"),
    ] {
        let resp = app.get(uri).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(resp.json, json!({"error": error}), "{uri}");
    }
    assert_eq!(app.get("/events?limit=1000").await.status, StatusCode::OK);
    for uri in ["/events".to_owned(), format!("/events/{a}")] {
        let anon = app.call(Method::GET, &uri, None).await;
        assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
        assert_eq!(anon.json, json!({"error": "admin auth required"}));
        let ws = app.call(Method::GET, &uri, Some(&token)).await;
        assert_eq!(ws.status, StatusCode::UNAUTHORIZED);
        assert_eq!(ws.json, json!({"error": "invalid admin auth token"}));
    }
    assert_eq!(
        app.call(Method::GET, "/events", Some(ADMIN_TOKEN))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn retention_prunes_old_events_at_most_hourly() {
    let app = app().await;
    app.container("alpha").await;
    let total = app.db.count("structure_events").await;
    assert!(total > 0);
    // Default retention (30 days): nothing is old enough.
    let default = berth_core::EventConfig::default();
    assert_eq!(default.retention, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(app.service.prune_events_if_due().await.unwrap(), Some(0));
    assert_eq!(
        app.service.prune_events_if_due().await.unwrap(),
        None,
        "not due again within the hour"
    );
    // A zero retention prunes everything recorded so far.
    let strict = berth_core::WorkspaceService::new(
        app.store.clone(),
        Arc::new(berth_provision::NoBackend),
        Arc::new(crate::helpers::TableResolver::default()),
        berth_core::TemplateCatalog::load(std::path::Path::new("/nonexistent")),
        berth_core::CoreConfig::default(),
    )
    .with_event_config(berth_core::EventConfig {
        retention: Duration::ZERO,
        ..default
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let pruned = strict.prune_events_if_due().await.unwrap();
    assert_eq!(pruned, Some(u64::try_from(total).unwrap()));
    assert_eq!(app.db.count("structure_events").await, 0);
    assert_eq!(app.get("/events").await.json, json!([]));
}
