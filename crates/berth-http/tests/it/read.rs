//! `GET /workspaces` and `GET /workspaces/{id}` (REFERENCE.md §2.2–2.3): the projection, the keys
//! Get strips, 400/404/410, and berth's cursor paging.

use axum::http::StatusCode;
use berth_domain::status::Transition;
use berth_store::StatusChange;
use serde_json::{Value, json};

use crate::helpers::{app, keys, pg_app};

/// The keys Get strips from the List projection.
const STRIPPED: &[&str] = &[
    "budget_limit",
    "monthly_spend",
    "current_task",
    "last_sample_error",
    "workspace_dir",
];

#[tokio::test]
async fn list_is_an_empty_array_at_first() {
    let app = app().await;
    let resp = app.get("/workspaces").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.text, "[]");
    assert_eq!(resp.header("x-next-cursor"), None);
}

/// The exact List and Get bodies of one workspace.
async fn projection_is_exact(app: crate::helpers::TestApp) {
    let id = app
        .create_id(json!({
            "name": "proj", "role": "tester", "runtime": "external",
            "url": "http://agent.example.com/a2a", "canvas": {"x": 1.5, "y": -2.0},
            "budget_limit": 500, "max_concurrent_tasks": 3, "workspace_dir": "/home/u/p",
        }))
        .await;
    let listed = json!({
        "id": id.to_string(),
        "name": "proj",
        "role": "tester",
        "tier": 3,
        "status": "online",
        "agent_card": null,
        "url": "http://agent.example.com/a2a",
        "parent_id": null,
        "active_tasks": 0,
        "max_concurrent_tasks": 3,
        "last_error_rate": 0.0,
        "last_sample_error": "",
        "failure_code": null,
        "uptime_seconds": 0,
        "current_task": "",
        "runtime": "external",
        "workspace_dir": "/home/u/p",
        "x": 1.5,
        "y": -2.0,
        "collapsed": false,
        "budget_limit": 500,
        "monthly_spend": 0,
        "broadcast_enabled": false,
        "talk_to_user_enabled": true,
        "compute": {},
    });
    assert_eq!(app.list().await, vec![listed.clone()]);

    let mut expected = listed.as_object().expect("object").clone();
    for key in STRIPPED {
        expected.remove(*key);
    }
    expected.insert("last_outbound_at".into(), Value::Null);
    let get = app.get_anon(&format!("/workspaces/{id}")).await;
    assert_eq!(get.status, StatusCode::OK, "{}", get.text);
    assert_eq!(get.json, Value::Object(expected));
    // `last_outbound_at` is present (null), not absent.
    assert!(
        get.json
            .as_object()
            .expect("object")
            .contains_key("last_outbound_at")
    );
    for key in STRIPPED {
        assert!(!keys(&get.json).contains(&(*key).to_owned()), "{key}");
    }
}

#[tokio::test]
async fn projection_is_exact_sqlite() {
    projection_is_exact(app().await).await;
}

#[tokio::test]
async fn projection_is_exact_postgres() {
    projection_is_exact(pg_app().await).await;
}

#[tokio::test]
async fn get_validates_the_id() {
    let app = app().await;
    for bad in ["not-a-uuid", "123", "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4"] {
        let resp = app.get_anon(&format!("/workspaces/{bad}")).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(resp.json, json!({"error": "invalid workspace ID"}));
    }
    let resp = app
        .get_anon(&format!("/workspaces/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, json!({"error": "workspace not found"}));
}

#[tokio::test]
async fn get_accepts_every_uuid_form() {
    let app = app().await;
    let id = app
        .create_id(json!({"name": "forms", "runtime": "external"}))
        .await;
    let uuid = *id.as_uuid();
    for form in [
        uuid.hyphenated().to_string().to_uppercase(),
        uuid.simple().to_string(),
        uuid.urn().to_string(),
        format!("%7B{}%7D", uuid.hyphenated()),
    ] {
        let resp = app.get_anon(&format!("/workspaces/{form}")).await;
        assert_eq!(resp.status, StatusCode::OK, "{form}: {}", resp.text);
        assert_eq!(resp.json["id"], id.to_string(), "{form}");
    }
}

#[tokio::test]
async fn removed_workspaces_are_gone_unless_asked_for() {
    let app = app().await;
    let id = app
        .create_id(json!({"name": "gone", "runtime": "external"}))
        .await;
    let keep = app
        .create_id(json!({"name": "kept", "runtime": "external"}))
        .await;
    let change = StatusChange::new(Transition::Removed);
    assert!(app.store.transition(id, change).await.expect("remove"));
    let row = app
        .store
        .get_workspace(id)
        .await
        .expect("get")
        .expect("row");

    for uri in [
        format!("/workspaces/{id}"),
        format!("/workspaces/{id}?include_removed=1"),
        format!("/workspaces/{id}?include_removed=TRUE"),
    ] {
        let resp = app.get_anon(&uri).await;
        assert_eq!(resp.status, StatusCode::GONE, "{uri}");
        assert_eq!(
            resp.json,
            json!({
                "error": "workspace removed",
                "id": id.to_string(),
                "hint": "Regenerate workspace + token from the canvas → Tokens tab",
                "removed_at": serde_json::to_value(row.updated_at).expect("timestamp"),
            }),
            "{uri}"
        );
    }
    let resp = app
        .get_anon(&format!("/workspaces/{id}?include_removed=true"))
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json["status"], "removed");
    assert_eq!(resp.json["id"], id.to_string());

    let list = app.list().await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], keep.to_string());
}

async fn list_pages_with_a_cursor(app: crate::helpers::TestApp) {
    let mut created = Vec::new();
    for i in 0..5 {
        let id = app
            .create_id(json!({"name": format!("p{i}"), "runtime": "external"}))
            .await;
        created.push(id.to_string());
    }
    let all: Vec<Value> = app.list().await.iter().map(|w| w["id"].clone()).collect();
    assert_eq!(all.len(), 5);

    let mut paged = Vec::new();
    let mut uri = "/workspaces?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let resp = app.get(&uri).await;
        assert_eq!(resp.status, StatusCode::OK, "{uri}: {}", resp.text);
        let page = resp.json.as_array().expect("array").clone();
        pages += 1;
        match resp.header("x-next-cursor") {
            Some(cursor) => {
                assert_eq!(page.len(), 2, "a non-final page is full");
                uri = format!("/workspaces?limit=2&cursor={cursor}");
            }
            None => {
                paged.extend(page.iter().map(|w| w["id"].clone()));
                break;
            }
        }
        paged.extend(page.iter().map(|w| w["id"].clone()));
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, all, "pages concatenate to the full list");
    let mut sorted_created = created.clone();
    sorted_created.sort();
    let mut sorted_paged: Vec<String> = paged
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect();
    sorted_paged.sort();
    assert_eq!(sorted_paged, sorted_created);

    // A limit as large as the list has no next page.
    let resp = app.get("/workspaces?limit=5").await;
    assert_eq!(resp.json.as_array().expect("array").len(), 5);
    assert_eq!(resp.header("x-next-cursor"), None);
    // An empty cursor is the first page.
    let resp = app.get("/workspaces?cursor=").await;
    assert_eq!(resp.json.as_array().expect("array").len(), 5);
}

#[tokio::test]
async fn list_pages_with_a_cursor_sqlite() {
    list_pages_with_a_cursor(app().await).await;
}

#[tokio::test]
async fn list_pages_with_a_cursor_postgres() {
    list_pages_with_a_cursor(pg_app().await).await;
}

#[tokio::test]
async fn bad_paging_parameters_are_refused() {
    let app = app().await;
    for limit in ["0", "-1", "abc", "1001", "1.5", ""] {
        let resp = app.get(&format!("/workspaces?limit={limit}")).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "limit={limit}");
        assert_eq!(
            resp.json,
            json!({"error": "limit must be an integer from 1 to 1000"})
        );
    }
    for cursor in ["zz", "abc", "00", "6869"] {
        let resp = app.get(&format!("/workspaces?cursor={cursor}")).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "cursor={cursor}");
        assert_eq!(resp.json, json!({"error": "invalid cursor"}));
    }
    let resp = app.get("/workspaces?limit=1000").await;
    assert_eq!(resp.status, StatusCode::OK);
}

/// BUG (fails today): axum's own Query and Path rejections answer `text/plain`, bypassing
/// `ApiError`; DECISIONS.md §5 wants a JSON error for every bad input, and the reference answers
/// an undecodable id like any other invalid one.
#[tokio::test]
async fn malformed_query_strings_and_ids_get_json_errors() {
    let app = app().await;
    let resp = app.get_anon("/workspaces/%FF").await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json,
        json!({"error": "invalid workspace ID"}),
        "got {:?}",
        resp.text
    );
    let resp = app.get("/workspaces?limit=1&limit=2").await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(
        resp.json["error"].is_string(),
        "a JSON error body, got {:?} ({:?})",
        resp.text,
        resp.header("content-type")
    );
}
