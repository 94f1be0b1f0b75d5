//! `PATCH /workspaces/{id}` (REFERENCE.md §2.4; DECISIONS.md §2.4): every recognised key, who
//! may change what, validation messages, sibling-name conflicts and the all-or-nothing patch.

use axum::http::{Method, StatusCode};
use berth_domain::WorkspaceId;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, app, err, pg_app};

/// A valid value for an admin-only key, given the test tree.
type ValueFor = fn(&Ids) -> Value;

/// The keys only the admin credential may change (DECISIONS.md §2.4), with a valid value each.
const ADMIN_ONLY: &[(&str, ValueFor)] = &[
    ("tier", |_| json!(1)),
    ("runtime", |_| json!("kimi")),
    ("parent_id", |ids| json!(ids.q.to_string())),
    ("workspace_dir", |_| json!("/home/agent/project")),
    ("hibernation_idle_minutes", |_| json!(15)),
];

const NAME_TAKEN: &str = "workspace name already in use; please pick a different name";

/// Two roots `p` and `q`, and `w` under `p`, all external (nothing to provision).
struct Ids {
    p: WorkspaceId,
    q: WorkspaceId,
    w: WorkspaceId,
    w_token: String,
}

async fn tree(app: &TestApp) -> Ids {
    let (p, _) = app
        .external(json!({"name": "p", "runtime": "external"}))
        .await;
    let (q, _) = app
        .external(json!({"name": "q", "runtime": "external"}))
        .await;
    let (w, w_token) = app
        .external(json!({"name": "w", "runtime": "external", "parent_id": p.to_string()}))
        .await;
    Ids { p, q, w, w_token }
}

/// A 400 with exactly `message`, and `id`'s list entry unchanged.
async fn assert_patch_rejected(app: &TestApp, id: WorkspaceId, body: Value, message: &str) {
    let before = app.listed(id).await;
    let resp = app.patch(id, Some(ADMIN_TOKEN), &body).await;
    assert_eq!(
        resp.status,
        StatusCode::BAD_REQUEST,
        "{body}: {}",
        resp.text
    );
    assert_eq!(resp.json, err(message), "{body}");
    assert_eq!(app.listed(id).await, before, "{body} changed the workspace");
}

async fn admin_changes_every_key(app: TestApp) {
    let ids = tree(&app).await;
    let w = ids.w;
    let updated = json!({"status": "updated"});
    let events_before = app.events_of(w).await;

    // name
    assert_eq!(app.patch_ok(w, json!({"name": "w2"})).await, updated);
    assert_eq!(app.listed(w).await["name"], "w2");
    assert_eq!(
        app.get(&format!("/workspaces/{w}")).await.json["name"],
        "w2"
    );

    // role, set and cleared
    assert_eq!(app.patch_ok(w, json!({"role": "writer"})).await, updated);
    assert_eq!(app.listed(w).await["role"], "writer");
    assert_eq!(
        app.get(&format!("/workspaces/{w}")).await.json["role"],
        "writer"
    );
    assert_eq!(app.patch_ok(w, json!({"role": null})).await, updated);
    assert_eq!(app.listed(w).await["role"], Value::Null);

    // tier 1–4
    for tier in 1..=4 {
        assert_eq!(app.patch_ok(w, json!({"tier": tier})).await, updated);
        assert_eq!(app.listed(w).await["tier"], tier);
        assert_eq!(
            app.get(&format!("/workspaces/{w}")).await.json["tier"],
            tier
        );
    }

    // runtime: built in, declared by a template, unknown
    assert_eq!(app.patch_ok(w, json!({"runtime": "kimi"})).await, updated);
    assert_eq!(app.listed(w).await["runtime"], "kimi");
    assert_eq!(app.patch_ok(w, json!({"runtime": "echo"})).await, updated);
    assert_eq!(app.listed(w).await["runtime"], "echo");
    assert_patch_rejected(
        &app,
        w,
        json!({"runtime": "no-such-runtime"}),
        "unknown runtime \"no-such-runtime\" (known: claude-code, hermes, openclaw, codex, \
         external, kimi, kimi-cli, mock, or a template's runtime)",
    )
    .await;
    assert_eq!(
        app.patch_ok(w, json!({"runtime": "external"})).await,
        updated
    );

    // parent_id: another parent, none, back
    assert_eq!(
        app.patch_ok(w, json!({"parent_id": ids.q.to_string()}))
            .await,
        updated
    );
    assert_eq!(app.listed(w).await["parent_id"], ids.q.to_string());
    assert_eq!(
        app.get(&format!("/workspaces/{w}")).await.json["parent_id"],
        ids.q.to_string()
    );
    assert_eq!(app.patch_ok(w, json!({"parent_id": null})).await, updated);
    assert_eq!(app.listed(w).await["parent_id"], Value::Null);
    assert_eq!(
        app.patch_ok(w, json!({"parent_id": ids.p.to_string()}))
            .await,
        updated
    );
    assert_eq!(app.listed(w).await["parent_id"], ids.p.to_string());

    // parent_id: unknown, malformed, self, a descendant (any depth)
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_patch_rejected(
        &app,
        w,
        json!({"parent_id": unknown}),
        "parent workspace not found",
    )
    .await;
    assert_patch_rejected(&app, w, json!({"parent_id": "nope"}), "invalid parent_id").await;
    assert_patch_rejected(
        &app,
        w,
        json!({"parent_id": w.to_string()}),
        "parent_id would create a cycle",
    )
    .await;
    let (g, _) = app
        .external(json!({"name": "g", "runtime": "external", "parent_id": w.to_string()}))
        .await;
    for descendant in [w, g] {
        assert_patch_rejected(
            &app,
            ids.p,
            json!({"parent_id": descendant.to_string()}),
            "parent_id would create a cycle",
        )
        .await;
    }
    // A removed parent is no parent.
    let (gone, _) = app
        .external(json!({"name": "gone", "runtime": "external"}))
        .await;
    assert_eq!(app.delete(gone, "").await.status, StatusCode::OK);
    assert_patch_rejected(
        &app,
        w,
        json!({"parent_id": gone.to_string()}),
        "parent workspace not found",
    )
    .await;

    // workspace_dir: valid (needs a restart), invalid, cleared
    let restart = json!({"status": "updated", "needs_restart": true});
    assert_eq!(
        app.patch_ok(w, json!({"workspace_dir": "/home/agent/project"}))
            .await,
        restart
    );
    assert_eq!(
        app.row(w).await.workspace_dir.as_deref(),
        Some("/home/agent/project")
    );
    assert_eq!(app.listed(w).await["workspace_dir"], "/home/agent/project");
    let got = app.get(&format!("/workspaces/{w}")).await.json;
    assert!(got.get("workspace_dir").is_none(), "GET hides it: {got}");
    for bad in ["relative/dir", "/etc/agent", "/home/../etc", "/usr"] {
        assert_patch_rejected(
            &app,
            w,
            json!({"workspace_dir": bad}),
            "invalid workspace directory",
        )
        .await;
    }
    assert_eq!(
        app.patch_ok(w, json!({"workspace_dir": null})).await,
        restart
    );
    assert_eq!(app.row(w).await.workspace_dir, None);

    // hibernation_idle_minutes: set, cleared, refused
    assert_eq!(
        app.patch_ok(w, json!({"hibernation_idle_minutes": 30}))
            .await,
        updated
    );
    assert_eq!(app.db.hibernation_idle_minutes(w).await, Some(30));
    assert_eq!(
        app.patch_ok(w, json!({"hibernation_idle_minutes": null}))
            .await,
        updated
    );
    assert_eq!(app.db.hibernation_idle_minutes(w).await, None);
    for bad in [json!(0), json!(-5), json!("10"), json!(1.5)] {
        assert_patch_rejected(
            &app,
            w,
            json!({"hibernation_idle_minutes": bad}),
            "hibernation_idle_minutes must be a positive integer or null",
        )
        .await;
    }

    // x + y together; one alone is ignored
    assert_eq!(
        app.patch_ok(w, json!({"x": 120.5, "y": -40.0})).await,
        updated
    );
    let listed = app.listed(w).await;
    assert_eq!(
        (listed["x"].as_f64(), listed["y"].as_f64()),
        (Some(120.5), Some(-40.0))
    );
    assert_eq!(app.patch_ok(w, json!({"x": 1.0})).await, updated);
    let listed = app.listed(w).await;
    assert_eq!(
        (listed["x"].as_f64(), listed["y"].as_f64()),
        (Some(120.5), Some(-40.0))
    );

    // collapsed
    assert_eq!(app.patch_ok(w, json!({"collapsed": true})).await, updated);
    assert_eq!(app.listed(w).await["collapsed"], true);
    assert_eq!(
        app.get(&format!("/workspaces/{w}")).await.json["collapsed"],
        true
    );
    assert_eq!(app.patch_ok(w, json!({"collapsed": false})).await, updated);
    assert_eq!(app.listed(w).await["collapsed"], false);

    // Everything at once.
    let all = json!({
        "name": "w3", "role": "lead", "tier": 2, "runtime": "kimi-cli",
        "parent_id": ids.q.to_string(), "workspace_dir": "/srv/w3",
        "hibernation_idle_minutes": 5, "x": 7.0, "y": 8.0, "collapsed": true,
    });
    assert_eq!(app.patch_ok(w, all).await, restart);
    let listed = app.listed(w).await;
    assert_eq!(listed["name"], "w3");
    assert_eq!(listed["role"], "lead");
    assert_eq!(listed["tier"], 2);
    assert_eq!(listed["runtime"], "kimi-cli");
    assert_eq!(listed["parent_id"], ids.q.to_string());
    assert_eq!(listed["workspace_dir"], "/srv/w3");
    assert_eq!(
        (listed["x"].as_f64(), listed["y"].as_f64()),
        (Some(7.0), Some(8.0))
    );
    assert_eq!(listed["collapsed"], true);
    assert_eq!(app.db.hibernation_idle_minutes(w).await, Some(5));

    // An empty object changes nothing and is fine.
    let before = app.listed(w).await;
    assert_eq!(app.patch_ok(w, json!({})).await, updated);
    assert_eq!(app.listed(w).await, before);

    // PATCH records no event (REFERENCE.md §2.4 step 7).
    assert_eq!(app.events_of(w).await, events_before);

    // The workspace's own token changes it too.
    let resp = app
        .patch(w, Some(&ids.w_token), &json!({"name": "w4"}))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(app.listed(w).await["name"], "w4");
}

#[tokio::test]
async fn admin_changes_every_key_sqlite() {
    admin_changes_every_key(app().await).await;
}

#[tokio::test]
async fn admin_changes_every_key_postgres() {
    admin_changes_every_key(pg_app().await).await;
}

async fn workspace_token_changes_only_name_role_layout(app: TestApp) {
    let ids = tree(&app).await;
    let w = ids.w;
    let token = app.admin_mint(w).await;

    for body in [
        json!({"name": "renamed"}),
        json!({"role": "scribe"}),
        json!({"x": 3.0, "y": 4.0}),
        json!({"collapsed": true}),
        json!({"name": "renamed2", "role": null, "x": 5.0, "y": 6.0, "collapsed": false}),
    ] {
        let resp = app.patch(w, Some(&token), &body).await;
        assert_eq!(resp.status, StatusCode::OK, "{body}: {}", resp.text);
        assert_eq!(resp.json, json!({"status": "updated"}), "{body}");
    }
    let listed = app.listed(w).await;
    assert_eq!(listed["name"], "renamed2");
    assert_eq!(listed["role"], Value::Null);
    assert_eq!(
        (listed["x"].as_f64(), listed["y"].as_f64()),
        (Some(5.0), Some(6.0))
    );
    assert_eq!(listed["collapsed"], false);

    // Each admin-only key is refused, alone and next to allowed keys, and nothing changes.
    let before = app.listed(w).await;
    let minutes_before = app.db.hibernation_idle_minutes(w).await;
    for (key, value) in ADMIN_ONLY {
        let expected = err(&format!(
            "{key} can only be changed with the admin credential"
        ));
        let mut alone = serde_json::Map::new();
        alone.insert((*key).to_owned(), value(&ids));
        let mut mixed = alone.clone();
        mixed.insert("name".into(), json!("sneaky"));
        mixed.insert("x".into(), json!(99.0));
        mixed.insert("y".into(), json!(99.0));
        for body in [Value::Object(alone), Value::Object(mixed)] {
            let resp = app.patch(w, Some(&token), &body).await;
            assert_eq!(resp.status, StatusCode::FORBIDDEN, "{body}: {}", resp.text);
            assert_eq!(resp.json, expected, "{body}");
        }
        // Even a null (clearing) is an admin-only change.
        let resp = app.patch(w, Some(&token), &json!({ *key: null })).await;
        assert_eq!(
            resp.status,
            StatusCode::FORBIDDEN,
            "{key}: null: {}",
            resp.text
        );
        assert_eq!(resp.json, expected);
    }
    assert_eq!(app.listed(w).await, before);
    assert_eq!(app.db.hibernation_idle_minutes(w).await, minutes_before);
    assert_eq!(app.row(w).await.workspace_dir, None);

    // The same keys pass with the admin bearer.
    for (key, value) in ADMIN_ONLY {
        let resp = app
            .patch(w, Some(ADMIN_TOKEN), &json!({ *key: value(&ids) }))
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{key}: {}", resp.text);
    }
    let listed = app.listed(w).await;
    assert_eq!(listed["tier"], 1);
    assert_eq!(listed["runtime"], "kimi");
    assert_eq!(listed["parent_id"], ids.q.to_string());
}

#[tokio::test]
async fn workspace_token_changes_only_name_role_layout_sqlite() {
    workspace_token_changes_only_name_role_layout(app().await).await;
}

#[tokio::test]
async fn workspace_token_changes_only_name_role_layout_postgres() {
    workspace_token_changes_only_name_role_layout(pg_app().await).await;
}

#[tokio::test]
async fn a_token_of_another_workspace_or_none_is_401() {
    let app = app().await;
    let ids = tree(&app).await;
    let (_, other_token) = app
        .external(json!({"name": "other", "runtime": "external"}))
        .await;
    let before = app.listed(ids.w).await;
    for (bearer, message) in [
        (Some(other_token.as_str()), "invalid workspace auth token"),
        (Some("not-a-token"), "invalid workspace auth token"),
        (None, "missing workspace auth token"),
    ] {
        let resp = app.patch(ids.w, bearer, &json!({"name": "hijacked"})).await;
        assert_eq!(
            resp.status,
            StatusCode::UNAUTHORIZED,
            "{bearer:?}: {}",
            resp.text
        );
        assert_eq!(resp.json, err(message));
    }
    // A token of the parent is not a token of the child either.
    let p_token = app.admin_mint(ids.p).await;
    let resp = app
        .patch(ids.w, Some(&p_token), &json!({"name": "x"}))
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.listed(ids.w).await, before);
}

#[tokio::test]
async fn bodies_of_the_wrong_shape_are_400() {
    let app = app().await;
    let ids = tree(&app).await;
    let w = ids.w;
    let before = app.listed(w).await;
    for raw in [
        "[]",
        "[{\"name\":\"x\"}]",
        "\"name\"",
        "42",
        "null",
        "not json",
        "",
        "{\"name\":",
    ] {
        let req = axum::http::Request::builder()
            .method(Method::PATCH)
            .uri(format!("/workspaces/{w}"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(raw))
            .expect("request");
        let resp = app.send(req).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{raw:?}: {}",
            resp.text
        );
        assert_eq!(resp.json, err("invalid request body"), "{raw:?}");
    }

    for (body, message) in [
        (json!({"name": 5}), "name must be a string"),
        (json!({"name": null}), "name must be a string"),
        (json!({"role": 5}), "role must be a string or null"),
        (json!({"role": ["a"]}), "role must be a string or null"),
        (json!({"runtime": true}), "runtime must be a string"),
        (json!({"tier": "2"}), "tier must be between 1 and 4"),
        (json!({"tier": 0}), "tier must be between 1 and 4"),
        (json!({"tier": 5}), "tier must be between 1 and 4"),
        (json!({"tier": -1}), "tier must be between 1 and 4"),
        (json!({"tier": 2.5}), "tier must be between 1 and 4"),
        (json!({"tier": null}), "tier must be between 1 and 4"),
        (
            json!({"parent_id": 7}),
            "parent_id must be a string or null",
        ),
        (
            json!({"workspace_dir": 7}),
            "workspace_dir must be a string or null",
        ),
        (json!({"x": "1", "y": 2}), "x must be a number"),
        (json!({"x": 1, "y": "2"}), "y must be a number"),
        (json!({"x": null, "y": 2}), "x must be a number"),
        (json!({"collapsed": "yes"}), "collapsed must be a boolean"),
        (json!({"collapsed": 1}), "collapsed must be a boolean"),
    ] {
        assert_patch_rejected(&app, w, body, message).await;
    }
    // A bad field next to good ones applies none of them.
    assert_patch_rejected(
        &app,
        w,
        json!({"name": "fine", "tier": 1, "collapsed": "yes"}),
        "collapsed must be a boolean",
    )
    .await;
    assert_eq!(app.listed(w).await, before);
}

#[tokio::test]
async fn name_and_role_rules_name_the_field() {
    let app = app().await;
    let ids = tree(&app).await;
    let w = ids.w;
    let longest = "é".repeat(127) + "a"; // 255 bytes
    let too_long = "é".repeat(128); // 256 bytes, 128 characters
    for (body, message) in [
        (
            json!({"name": "a\nb"}),
            "name must not contain newline characters",
        ),
        (
            json!({"name": "a\rb"}),
            "name must not contain newline characters",
        ),
        (
            json!({"name": too_long}),
            "name must be at most 255 characters",
        ),
        (
            json!({"name": "a".repeat(256)}),
            "name must be at most 255 characters",
        ),
        (json!({"name": ""}), "name must not be empty"),
        (
            json!({"name": "{braces}"}),
            "name contains invalid characters",
        ),
        (
            json!({"role": "a\nb"}),
            "role must not contain newline characters",
        ),
        (
            json!({"role": "x".repeat(1001)}),
            "role must be at most 1000 characters",
        ),
        (json!({"role": "a|b"}), "role contains invalid characters"),
        (
            json!({"runtime": "a\nb"}),
            "runtime must not contain newline characters",
        ),
    ] {
        assert_patch_rejected(&app, w, body, message).await;
    }
    assert_eq!(
        app.patch_ok(w, json!({"name": longest.clone()})).await,
        json!({"status": "updated"})
    );
    assert_eq!(app.listed(w).await["name"], longest.as_str());
}

async fn sibling_name_is_409_and_nothing_applies(app: TestApp) {
    let ids = tree(&app).await;
    let (w2, _) = app
        .external(json!({"name": "w2", "runtime": "external", "parent_id": ids.p.to_string()}))
        .await;
    let conflict = err(NAME_TAKEN);

    // Roots are siblings of one another.
    let before_q = app.listed(ids.q).await;
    let resp = app
        .patch(
            ids.q,
            Some(ADMIN_TOKEN),
            &json!({"name": "p", "tier": 1, "role": "r", "x": 9.0, "y": 9.0, "collapsed": true,
                    "hibernation_idle_minutes": 3, "workspace_dir": "/srv/q"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert_eq!(resp.json, conflict);
    assert_eq!(app.listed(ids.q).await, before_q);
    assert_eq!(app.listed(ids.q).await["tier"], 3);
    assert_eq!(app.db.hibernation_idle_minutes(ids.q).await, None);
    assert_eq!(app.row(ids.q).await.workspace_dir, None);

    // Children of one parent.
    let before_w2 = app.listed(w2).await;
    let resp = app
        .patch(w2, Some(ADMIN_TOKEN), &json!({"tier": 4, "name": "w"}))
        .await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert_eq!(resp.json, conflict);
    assert_eq!(app.listed(w2).await, before_w2);
    assert_eq!(app.listed(w2).await["tier"], 3);

    // The same with the workspace's own token.
    let token = app.admin_mint(w2).await;
    let resp = app
        .patch(w2, Some(&token), &json!({"name": "w", "collapsed": true}))
        .await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert_eq!(app.listed(w2).await, before_w2);

    // Moving next to a namesake is a conflict too.
    let (other_w, _) = app
        .external(json!({"name": "w", "runtime": "external", "parent_id": ids.q.to_string()}))
        .await;
    let before = app.listed(other_w).await;
    let resp = app
        .patch(
            other_w,
            Some(ADMIN_TOKEN),
            &json!({"parent_id": ids.p.to_string(), "tier": 2}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert_eq!(resp.json, conflict);
    assert_eq!(app.listed(other_w).await, before);

    // Names only clash among live siblings: another parent's child and a removed sibling do not.
    assert_eq!(
        app.patch_ok(w2, json!({"name": "q"})).await,
        json!({"status": "updated"})
    );
    assert_eq!(app.delete(ids.w, "").await.status, StatusCode::OK);
    assert_eq!(
        app.patch_ok(w2, json!({"name": "w", "tier": 2})).await,
        json!({"status": "updated"})
    );
    let listed = app.listed(w2).await;
    assert_eq!(
        (listed["name"].as_str(), listed["tier"].as_i64()),
        (Some("w"), Some(2))
    );
    // Keeping one's own name is no conflict.
    assert_eq!(
        app.patch_ok(w2, json!({"name": "w"})).await,
        json!({"status": "updated"})
    );
}

#[tokio::test]
async fn sibling_name_is_409_and_nothing_applies_sqlite() {
    sibling_name_is_409_and_nothing_applies(app().await).await;
}

#[tokio::test]
async fn sibling_name_is_409_and_nothing_applies_postgres() {
    sibling_name_is_409_and_nothing_applies(pg_app().await).await;
}

async fn removed_and_unknown_are_404(app: TestApp) {
    let ids = tree(&app).await;
    assert_eq!(app.delete(ids.w, "").await.status, StatusCode::OK);
    let unknown = uuid::Uuid::new_v4();
    for id in [ids.w.to_string(), unknown.to_string()] {
        let resp = app
            .patch(&id, Some(ADMIN_TOKEN), &json!({"name": "zombie"}))
            .await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{id}: {}", resp.text);
        assert_eq!(resp.json, err("workspace not found"));
    }
    // The removed row kept its name.
    assert_eq!(app.row(ids.w).await.name, "w");
    // A removed workspace's token no longer works at all.
    let resp = app
        .patch(ids.w, Some(&ids.w_token), &json!({"name": "zombie"}))
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
}

#[tokio::test]
async fn removed_and_unknown_are_404_sqlite() {
    removed_and_unknown_are_404(app().await).await;
}

#[tokio::test]
async fn removed_and_unknown_are_404_postgres() {
    removed_and_unknown_are_404(pg_app().await).await;
}

/// REFERENCE.md §2.4 step 1 (the wire contract DECISIONS.md §1 keeps).
#[tokio::test]
async fn a_malformed_id_is_400_invalid_workspace_id() {
    let app = app().await;
    let resp = app
        .patch("not-a-uuid", Some(ADMIN_TOKEN), &json!({"name": "x"}))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
    assert_eq!(resp.json, err("invalid workspace ID"));
}
