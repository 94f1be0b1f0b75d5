//! `DELETE /workspaces/{id}` (REFERENCE.md §2.5; DECISIONS.md §2.15): admin only, confirmation
//! for sub-workspaces, cascade in one transaction (status, layout, tokens, events), stop failures,
//! repeated deletes, and `?purge=true` removing every row the workspaces own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{Method, StatusCode};
use berth_domain::WorkspaceId;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Call, Recorder, Setup, TestApp, app, err, pg_app};

const CONFIRM_MESSAGE: &str =
    "This workspace has sub-workspaces. Delete with ?confirm=true to cascade delete.";

/// Tables whose rows belong to one workspace (column `workspace_id`).
const OWNED_TABLES: &[&str] = &[
    "workspace_secrets",
    "workspace_auth_tokens",
    "canvas_layouts",
    "workspace_config",
];

/// `r` with children `c1` (which has a child `g`) and `c2`, plus an unrelated root `s`; all
/// external, each with its connection token.
struct Tree {
    r: (WorkspaceId, String),
    c1: (WorkspaceId, String),
    c2: (WorkspaceId, String),
    g: (WorkspaceId, String),
    s: (WorkspaceId, String),
}

async fn tree(app: &TestApp) -> Tree {
    let ext = |name: &str, parent: Option<WorkspaceId>| {
        let mut body = json!({"name": name, "runtime": "external", "secrets": {"API_KEY": format!("key-of-{name}")}});
        if let Some(p) = parent {
            body["parent_id"] = json!(p.to_string());
        }
        body
    };
    let r = app.external(ext("r", None)).await;
    let c1 = app.external(ext("c1", Some(r.0))).await;
    let c2 = app.external(ext("c2", Some(r.0))).await;
    let g = app.external(ext("g", Some(c1.0))).await;
    let s = app.external(ext("s", None)).await;
    Tree { r, c1, c2, g, s }
}

/// The `WORKSPACE_REMOVED` payloads of `id`.
async fn removed_events(app: &TestApp, id: WorkspaceId) -> Vec<Value> {
    app.events_named(id, "WORKSPACE_REMOVED").await
}

#[tokio::test]
async fn delete_needs_the_admin_bearer() {
    let app = app().await;
    let (id, token) = app
        .external(json!({"name": "a", "runtime": "external"}))
        .await;
    let uri = format!("/workspaces/{id}");
    for (bearer, message) in [
        (None, "admin auth required"),
        (Some(token.as_str()), "invalid admin auth token"),
        (Some("wrong"), "invalid admin auth token"),
    ] {
        let resp = app.call(Method::DELETE, &uri, bearer).await;
        assert_eq!(
            resp.status,
            StatusCode::UNAUTHORIZED,
            "{bearer:?}: {}",
            resp.text
        );
        assert_eq!(resp.json, err(message));
        let resp = app
            .call(
                Method::DELETE,
                &format!("{uri}?confirm=true&purge=true"),
                bearer,
            )
            .await;
        assert_eq!(
            resp.status,
            StatusCode::UNAUTHORIZED,
            "{bearer:?}: {}",
            resp.text
        );
    }
    assert_eq!(app.status_of(id).await, "awaiting_agent");
    assert!(removed_events(&app, id).await.is_empty());
    app.heartbeat_ok(id, &token, json!({})).await;
}

#[tokio::test]
async fn malformed_and_unknown_ids() {
    let app = app().await;
    for bad in ["not-a-uuid", "1234", "00000000-0000-0000-0000-00000000000g"] {
        let resp = app.delete(bad, "").await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{bad}: {}", resp.text);
        assert_eq!(resp.json, err("invalid workspace ID"));
    }
    let unknown = WorkspaceId::new_v4();
    for query in ["", "?confirm=true", "?purge=true"] {
        let resp = app.delete(unknown, query).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{query}: {}", resp.text);
        assert_eq!(resp.json, err("workspace not found"));
    }
    // berth records nothing for an id it never had.
    assert!(app.events_of(unknown).await.is_empty());
}

async fn cascade_delete(app: TestApp) {
    let t = tree(&app).await;
    let all = [&t.r, &t.c1, &t.c2, &t.g];

    // Children and no confirmation: 409 with the direct children only, and nothing changes.
    let mut expected_children = vec![
        json!({"id": t.c1.0.to_string(), "name": "c1"}),
        json!({"id": t.c2.0.to_string(), "name": "c2"}),
    ];
    expected_children.sort_by_key(|c| c["id"].as_str().map(str::to_owned));
    for query in ["", "?confirm=false", "?confirm=1", "?purge=true"] {
        let resp = app.delete(t.r.0, query).await;
        assert_eq!(resp.status, StatusCode::CONFLICT, "{query}: {}", resp.text);
        let mut body = resp.json.clone();
        let children = body["children"].as_array_mut().expect("children");
        children.sort_by_key(|c| c["id"].as_str().map(str::to_owned));
        assert_eq!(
            body,
            json!({
                "status": "confirmation_required",
                "message": CONFIRM_MESSAGE,
                "children": expected_children,
                "children_count": 2,
            }),
            "{query}"
        );
    }
    // A middle node lists its own child.
    let resp = app.delete(t.c1.0, "").await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({
            "status": "confirmation_required",
            "message": CONFIRM_MESSAGE,
            "children": [{"id": t.g.0.to_string(), "name": "g"}],
            "children_count": 1,
        })
    );
    for (id, token) in all {
        assert_eq!(app.status_of(*id).await, "awaiting_agent");
        assert!(removed_events(&app, *id).await.is_empty());
        assert_eq!(
            app.db
                .count_for("canvas_layouts", "workspace_id", *id)
                .await,
            1
        );
        app.heartbeat_ok(*id, token, json!({})).await;
    }

    // Confirmed: the whole subtree goes.
    let resp = app.delete(t.r.0, "?confirm=true").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"status": "removed", "cascade_deleted": 3})
    );
    for (id, token) in all {
        assert_eq!(app.status_of(*id).await, "removed");
        let resp = app.heartbeat(*id, Some(token), json!({})).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{id}: {}", resp.text);
        assert_eq!(resp.json, err("invalid workspace auth token"));
        let resp = app.patch(*id, Some(token), &json!({"name": "back"})).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{id}: {}", resp.text);
        assert_eq!(
            app.db
                .count_for("canvas_layouts", "workspace_id", *id)
                .await,
            0
        );
        // Soft delete keeps the row and its secrets.
        assert_eq!(app.db.count_for("workspaces", "id", *id).await, 1);
        assert_eq!(
            app.db
                .count_for("workspace_secrets", "workspace_id", *id)
                .await,
            1
        );
    }
    assert_eq!(
        removed_events(&app, t.r.0).await,
        [json!({"cascade_deleted": 3})]
    );
    for (id, _) in [&t.c1, &t.c2, &t.g] {
        assert_eq!(removed_events(&app, *id).await, [json!({})], "{id}");
    }
    let resp = app.get(&format!("/workspaces/{}", t.g.0)).await;
    assert_eq!(resp.status, StatusCode::GONE);
    assert_eq!(resp.json["error"], "workspace removed");
    // The unrelated root is untouched, and is all the list shows.
    assert_eq!(app.status_of(t.s.0).await, "awaiting_agent");
    app.heartbeat_ok(t.s.0, &t.s.1, json!({})).await;
    let listed: Vec<Value> = app.list().await.iter().map(|w| w["id"].clone()).collect();
    assert_eq!(listed, [json!(t.s.0.to_string())]);
    assert!(removed_events(&app, t.s.0).await.is_empty());

    // Deleting again is fine and changes nothing more; so is deleting a removed child.
    for id in [t.r.0, t.c1.0] {
        let resp = app.delete(id, "").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(
            resp.json,
            json!({"status": "removed", "cascade_deleted": 0})
        );
    }
    assert_eq!(removed_events(&app, t.r.0).await.len(), 1);
    assert_eq!(removed_events(&app, t.c1.0).await.len(), 1);

    // A removed workspace can still be purged.
    let resp = app.delete(t.g.0, "?purge=true").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "purged", "cascade_deleted": 0}));
    let resp = app.get(&format!("/workspaces/{}", t.g.0)).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, err("workspace not found"));
    assert_eq!(app.db.count_for("workspaces", "id", t.g.0).await, 0);
    assert_eq!(
        app.db
            .count_for("workspace_secrets", "workspace_id", t.g.0)
            .await,
        0
    );
    assert_eq!(
        removed_events(&app, t.g.0).await,
        [json!({})],
        "event log kept"
    );
}

#[tokio::test]
async fn cascade_delete_sqlite() {
    cascade_delete(app().await).await;
}

#[tokio::test]
async fn cascade_delete_postgres() {
    cascade_delete(pg_app().await).await;
}

#[tokio::test]
async fn a_leaf_needs_no_confirmation() {
    let app = app().await;
    let (p, _) = app
        .external(json!({"name": "p", "runtime": "external"}))
        .await;
    let (c, _) = app
        .external(json!({"name": "c", "runtime": "external", "parent_id": p.to_string()}))
        .await;
    let resp = app.delete(c, "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"status": "removed", "cascade_deleted": 0})
    );
    assert_eq!(
        removed_events(&app, c).await,
        [json!({"cascade_deleted": 0})]
    );
    // Only removed children left: the parent goes without confirmation.
    let resp = app.delete(p, "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"status": "removed", "cascade_deleted": 0})
    );
    assert_eq!(app.status_of(p).await, "removed");
}

async fn purge(app: TestApp) {
    // A container root (failed without a backend: it has a workspace_config row and MODEL
    // secrets) with an external child holding a secret and tokens.
    let r = app
        .create_id(json!({"name": "r", "model": "openai/gpt-4o", "secrets": {"API_KEY": "k"}}))
        .await;
    app.service.drain().await;
    assert_eq!(app.status_of(r).await, "failed");
    let r_token = app.admin_mint(r).await;
    let (c, c_token) = app
        .external(
            json!({"name": "c", "runtime": "external", "parent_id": r.to_string(),
                         "secrets": {"API_KEY": "k2"}}),
        )
        .await;
    let (s, s_token) = app
        .external(json!({"name": "s", "runtime": "external", "secrets": {"API_KEY": "k3"}}))
        .await;
    app.patch_ok(c, json!({"x": 1.0, "y": 2.0, "collapsed": true}))
        .await;
    for id in [r, c] {
        for table in OWNED_TABLES {
            if *table == "workspace_config" && id == c {
                continue;
            }
            assert!(
                app.db.count_for(table, "workspace_id", id).await > 0,
                "{table} has no row of {id} before the purge"
            );
        }
    }
    let s_rows: Vec<i64> = {
        let mut v = Vec::new();
        for table in OWNED_TABLES {
            v.push(app.db.count_for(table, "workspace_id", s).await);
        }
        v
    };

    // Purge still asks for confirmation first.
    let resp = app.delete(r, "?purge=true").await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert_eq!(app.status_of(c).await, "awaiting_agent");

    let resp = app.delete(r, "?confirm=true&purge=true").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "purged", "cascade_deleted": 1}));
    for id in [r, c] {
        let resp = app.get(&format!("/workspaces/{id}")).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{id}: {}", resp.text);
        assert_eq!(resp.json, err("workspace not found"));
        let resp = app
            .get(&format!("/workspaces/{id}?include_removed=true"))
            .await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{id}: {}", resp.text);
        assert_eq!(app.db.count_for("workspaces", "id", id).await, 0);
        for table in OWNED_TABLES {
            assert_eq!(
                app.db.count_for(table, "workspace_id", id).await,
                0,
                "{table} rows of {id} survived the purge"
            );
        }
        let resp = app
            .call(
                Method::GET,
                &format!("/workspaces/{id}/state"),
                Some(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND);
        assert_eq!(
            resp.json,
            json!({"workspace_id": id.to_string(), "deleted": true})
        );
    }
    for (id, token) in [(r, &r_token), (c, &c_token)] {
        let resp = app.heartbeat(id, Some(token), json!({})).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    }
    // The event log is kept.
    assert_eq!(
        removed_events(&app, r).await,
        [json!({"cascade_deleted": 1})]
    );
    assert_eq!(removed_events(&app, c).await, [json!({})]);
    assert!(
        app.db
            .count_for("structure_events", "workspace_id", r)
            .await
            >= 2
    );
    // The unrelated workspace keeps everything.
    let mut after = Vec::new();
    for table in OWNED_TABLES {
        after.push(app.db.count_for(table, "workspace_id", s).await);
    }
    assert_eq!(after, s_rows);
    app.heartbeat_ok(s, &s_token, json!({})).await;

    // Gone for good: another delete is a 404.
    let resp = app.delete(r, "?purge=true").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, err("workspace not found"));
}

#[tokio::test]
async fn purge_sqlite() {
    purge(app().await).await;
}

#[tokio::test]
async fn purge_postgres() {
    purge(pg_app().await).await;
}

#[tokio::test]
async fn delete_stops_and_purge_purges_every_backend_resource() {
    let rec = Recorder::new();
    let app = Setup {
        provisioner: rec.clone(),
        ..Setup::default()
    }
    .start()
    .await;
    let p = app
        .create_id(json!({"name": "p", "model": "openai/gpt-4o"}))
        .await;
    let c = app
        .create_id(json!({"name": "c", "model": "openai/gpt-4o", "parent_id": p.to_string()}))
        .await;
    let solo = app
        .create_id(json!({"name": "solo", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    for id in [p, c, solo] {
        assert_eq!(rec.calls_for(id), [Call::Start(id)]);
    }

    // A plain delete stops but does not purge.
    let resp = app.delete(solo, "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(rec.calls_for(solo), [Call::Start(solo), Call::Stop(solo)]);

    // A purge stops every workspace of the subtree (descendants first), then purges each.
    let resp = app.delete(p, "?confirm=true&purge=true").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "purged", "cascade_deleted": 1}));
    assert_eq!(
        rec.calls_for(p),
        [Call::Start(p), Call::Stop(p), Call::Purge(p)]
    );
    assert_eq!(
        rec.calls_for(c),
        [Call::Start(c), Call::Stop(c), Call::Purge(c)]
    );
    let calls = rec.calls();
    let at = |call: Call| calls.iter().position(|x| *x == call).expect("call");
    assert!(at(Call::Stop(c)) < at(Call::Stop(p)), "{calls:?}");
    assert!(
        at(Call::Stop(p)) < at(Call::Purge(c)),
        "stops before purges: {calls:?}"
    );

    // Purging the removed one later reaches the backend too.
    let resp = app.delete(solo, "?purge=true").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "purged", "cascade_deleted": 0}));
    assert_eq!(rec.calls_for(solo).last(), Some(&Call::Purge(solo)));
    assert_eq!(app.db.count_for("workspaces", "id", solo).await, 0);
}

#[tokio::test]
async fn a_failed_stop_is_a_500_but_the_row_stays_removed() {
    let first_stop = Arc::new(AtomicBool::new(true));
    let mut mock = berth_provision::MockProvisioner::new();
    mock.expect_kind()
        .return_const(berth_provision::BackendKind::Process);
    mock.expect_start().returning(|_| {
        Ok(berth_provision::Started {
            url: None,
            instance_id: Some("proc-1".into()),
        })
    });
    let flag = first_stop.clone();
    mock.expect_stop().returning(move |_| {
        if flag.swap(false, Ordering::SeqCst) {
            Err(berth_provision::Error::Backend("daemon unreachable".into()))
        } else {
            Ok(())
        }
    });
    mock.expect_is_running().returning(|_| Ok(true));
    mock.expect_purge().returning(|_| Ok(()));
    let app = Setup {
        provisioner: Arc::new(mock),
        ..Setup::default()
    }
    .start()
    .await;
    let (id, token) = app.container("w").await;

    let resp = app.delete(id, "").await;
    assert_eq!(
        resp.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        resp.text
    );
    assert_eq!(
        resp.json,
        json!({
            "error": format!(
                "workspace marked removed, but 1 stop call(s) failed — please retry: \
                 {id}: provisioning backend error: daemon unreachable"
            ),
            "removed_count": 1,
            "stop_failures": 1,
        })
    );
    assert!(!first_stop.load(Ordering::SeqCst), "stop was called");
    // Marked removed all the same: tokens revoked, event recorded.
    assert_eq!(app.status_of(id).await, "removed");
    let resp = app.heartbeat(id, Some(&token), json!({})).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        removed_events(&app, id).await,
        [json!({"cascade_deleted": 0})]
    );

    // The retry succeeds without a second event, and the purge after it.
    let resp = app.delete(id, "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"status": "removed", "cascade_deleted": 0})
    );
    assert_eq!(removed_events(&app, id).await.len(), 1);
    let resp = app.delete(id, "?purge=true").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "purged", "cascade_deleted": 0}));
    assert_eq!(
        app.get(&format!("/workspaces/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
}
