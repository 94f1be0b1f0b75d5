//! Discovery, peers and check-access (REFERENCE-2.md §1): the hierarchy access rule, caller
//! authentication and availability.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use berth_domain::WorkspaceId;
use berth_domain::status::Transition;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Setup, TestApp, app, err, keys, sorted};

/// ```text
/// root ─ alpha ─ alpha-one
///      └ beta  ─ beta-one
/// other-root
/// ```
/// `root`, `beta`, `beta-one` and `other-root` are online with a public URL; `alpha` and
/// `alpha-one` await their agents. Every workspace has a token.
struct Tree {
    root: (WorkspaceId, String),
    alpha: (WorkspaceId, String),
    alpha_one: (WorkspaceId, String),
    beta: (WorkspaceId, String),
    beta_one: (WorkspaceId, String),
    other_root: (WorkspaceId, String),
}

fn url_of(name: &str) -> String {
    format!("http://agent.example.com/{name}")
}

async fn online(app: &TestApp, name: &str, parent: Option<WorkspaceId>) -> (WorkspaceId, String) {
    let mut body = json!({"name": name, "runtime": "external", "url": url_of(name)});
    if let Some(p) = parent {
        body["parent_id"] = json!(p.to_string());
    }
    let id = app.create_id(body).await;
    assert_eq!(app.status_of(id).await, "online");
    (id, app.admin_mint(id).await)
}

async fn awaiting(
    app: &TestApp,
    name: &str,
    role: &str,
    parent: WorkspaceId,
) -> (WorkspaceId, String) {
    app.external(
        json!({"name": name, "role": role, "runtime": "external", "parent_id": parent.to_string()}),
    )
    .await
}

async fn tree(app: &TestApp) -> Tree {
    let root = online(app, "root", None).await;
    let alpha = awaiting(app, "alpha", "planner", root.0).await;
    let beta = online(app, "beta", Some(root.0)).await;
    let alpha_one = awaiting(app, "alpha-one", "Reviewer", alpha.0).await;
    let beta_one = online(app, "beta-one", Some(beta.0)).await;
    let other_root = online(app, "other-root", None).await;
    Tree {
        root,
        alpha,
        alpha_one,
        beta,
        beta_one,
        other_root,
    }
}

fn discover_request(
    caller: Option<&str>,
    target: impl std::fmt::Display,
    bearer: Option<&str>,
) -> Request<Body> {
    let mut b = Request::builder().uri(format!("/registry/discover/{target}"));
    if let Some(c) = caller {
        b = b.header("X-Workspace-ID", c);
    }
    if let Some(t) = bearer {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::empty()).expect("request")
}

/// `caller` discovers `target` with its own token.
async fn discover(
    app: &TestApp,
    caller: &(WorkspaceId, String),
    target: WorkspaceId,
) -> crate::helpers::Resp {
    app.send(discover_request(
        Some(&caller.0.to_string()),
        target,
        Some(&caller.1),
    ))
    .await
}

#[tokio::test]
async fn discovery_needs_the_caller_header_and_its_token() {
    let app = app().await;
    let t = tree(&app).await;
    let target = t.beta.0;
    let resp = app
        .send(discover_request(None, target, Some(&t.alpha.1)))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("X-Workspace-ID header is required"));
    let resp = app
        .send(discover_request(Some("  "), target, Some(&t.alpha.1)))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("X-Workspace-ID header is required"));
    let resp = app
        .send(discover_request(Some("nope"), target, Some(&t.alpha.1)))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("invalid X-Workspace-ID"));

    let caller = t.alpha.0.to_string();
    let resp = app
        .send(discover_request(Some(&caller), target, None))
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("missing workspace auth token"));
    // A wrong token, the admin's, and a token of another workspace (claiming to be alpha).
    for bearer in ["nope", ADMIN_TOKEN, t.beta.1.as_str()] {
        let resp = app
            .send(discover_request(Some(&caller), target, Some(bearer)))
            .await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{bearer}");
        assert_eq!(resp.json, err("invalid workspace auth token"));
    }
}

#[tokio::test]
async fn discovery_follows_the_access_rule() {
    let app = app().await;
    let t = tree(&app).await;
    let found = |id: WorkspaceId, name: &str| json!({"id": id.to_string(), "url": url_of(name), "name": name});

    // Siblings.
    let resp = discover(&app, &t.alpha, t.beta.0).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, found(t.beta.0, "beta"));
    // Child → parent, and a deeper descendant → ancestor.
    let resp = discover(&app, &t.alpha, t.root.0).await;
    assert_eq!(resp.json, found(t.root.0, "root"));
    let resp = discover(&app, &t.alpha_one, t.root.0).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    // Parent → child.
    let resp = discover(&app, &t.beta, t.beta_one.0).await;
    assert_eq!(resp.json, found(t.beta_one.0, "beta-one"));
    // Roots are siblings.
    let resp = discover(&app, &t.other_root, t.root.0).await;
    assert_eq!(resp.json, found(t.root.0, "root"));
    // Itself.
    let resp = discover(&app, &t.beta, t.beta.0).await;
    assert_eq!(resp.json, found(t.beta.0, "beta"));

    let denied = json!({"error": "not authorized to discover this workspace"});
    for (caller, target, what) in [
        (&t.alpha_one, t.beta_one.0, "cousins"),
        (&t.beta_one, t.alpha.0, "nephew → uncle"),
        (&t.alpha, t.beta_one.0, "uncle → nephew"),
        (&t.other_root, t.beta.0, "unrelated"),
        (&t.beta, WorkspaceId::new_v4(), "unknown target"),
    ] {
        let resp = discover(&app, caller, target).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{what}");
        assert_eq!(resp.json, denied, "{what}");
    }
    let resp = app
        .send(discover_request(
            Some(&t.beta.0.to_string()),
            "nope",
            Some(&t.beta.1),
        ))
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
}

#[tokio::test]
async fn discovery_needs_a_reachable_target() {
    let app = app().await;
    let t = tree(&app).await;
    // Awaiting its agent.
    let resp = discover(&app, &t.root, t.alpha.0).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.json,
        json!({"error": "workspace not available", "status": "awaiting_agent"})
    );
    // Online through a poll-mode register, but with no URL.
    let resp = app
        .register(t.alpha.0, Some(&t.alpha.1), Some("poll"))
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let resp = discover(&app, &t.root, t.alpha.0).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.json,
        json!({"error": "workspace not available", "status": "online"})
    );
    // Degraded is still reachable.
    app.heartbeat_ok(t.beta.0, &t.beta.1, json!({"error_rate": 0.9}))
        .await;
    assert_eq!(app.status_of(t.beta.0).await, "degraded");
    let resp = discover(&app, &t.root, t.beta.0).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    // Offline, paused and removed are not.
    app.force(t.beta.0, &[Transition::WentOffline]).await;
    let resp = discover(&app, &t.root, t.beta.0).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.json,
        json!({"error": "workspace not available", "status": "offline"})
    );
    app.force(t.beta.0, &[Transition::Paused]).await;
    let resp = discover(&app, &t.root, t.beta.0).await;
    assert_eq!(
        resp.json,
        json!({"error": "workspace not available", "status": "paused"})
    );
    app.force(t.other_root.0, &[Transition::Removed]).await;
    let resp = discover(&app, &t.root, t.other_root.0).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.json,
        json!({"error": "workspace not available", "status": "removed"})
    );
}

#[tokio::test]
async fn dev_mode_discovery_needs_no_token() {
    let app = Setup {
        dev: true,
        ..Setup::default()
    }
    .start()
    .await;
    let t = tree(&app).await;
    let resp = app
        .send(discover_request(
            Some(&t.alpha.0.to_string()),
            t.beta.0,
            None,
        ))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["name"], "beta");
    // The rule still applies.
    let resp = app
        .send(discover_request(
            Some(&t.alpha_one.0.to_string()),
            t.beta_one.0,
            None,
        ))
        .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
}

/// The peer ids `id` sees with `q`.
async fn peer_ids(app: &TestApp, who: &(WorkspaceId, String), q: &str) -> Vec<String> {
    let uri = if q.is_empty() {
        format!("/registry/{}/peers", who.0)
    } else {
        format!("/registry/{}/peers?q={q}", who.0)
    };
    let resp = app.call(Method::GET, &uri, Some(&who.1)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    resp.json
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn peers_are_siblings_children_and_parent() {
    let app = app().await;
    let t = tree(&app).await;
    let s = |w: &(WorkspaceId, String)| w.0.to_string();

    assert_eq!(
        peer_ids(&app, &t.alpha, "").await,
        vec![s(&t.beta), s(&t.alpha_one), s(&t.root)]
    );
    assert_eq!(
        peer_ids(&app, &t.root, "").await,
        vec![s(&t.other_root), s(&t.alpha), s(&t.beta)]
    );
    assert_eq!(peer_ids(&app, &t.alpha_one, "").await, vec![s(&t.alpha)]);

    // The projection of one peer.
    let resp = app
        .call(
            Method::GET,
            &format!("/registry/{}/peers?q=beta-one", t.beta.0),
            Some(&t.beta.1),
        )
        .await;
    assert_eq!(
        resp.json,
        json!([{
            "id": s(&t.beta_one), "name": "beta-one", "role": null, "tier": 3, "status": "online",
            "agent_card": null, "url": url_of("beta-one"), "parent_id": s(&t.beta), "active_tasks": 0,
        }])
    );
    let peer = &resp.json[0];
    assert_eq!(
        keys(peer),
        sorted(&[
            "active_tasks",
            "agent_card",
            "id",
            "name",
            "parent_id",
            "role",
            "status",
            "tier",
            "url"
        ])
    );

    // `q` matches name or role, case-insensitively.
    assert_eq!(peer_ids(&app, &t.alpha, "BETA").await, vec![s(&t.beta)]);
    assert_eq!(
        peer_ids(&app, &t.alpha, "review").await,
        vec![s(&t.alpha_one)]
    );
    assert_eq!(
        peer_ids(&app, &t.beta_one, "PLAN").await,
        Vec::<String>::new()
    );
    assert!(peer_ids(&app, &t.alpha, "zzz").await.is_empty());

    // Removed rows are not peers.
    app.force(t.beta.0, &[Transition::Removed]).await;
    assert_eq!(
        peer_ids(&app, &t.alpha, "").await,
        vec![s(&t.alpha_one), s(&t.root)]
    );
    assert_eq!(
        peer_ids(&app, &t.root, "").await,
        vec![s(&t.other_root), s(&t.alpha)]
    );
}

#[tokio::test]
async fn peers_need_the_workspaces_own_token() {
    let app = app().await;
    let t = tree(&app).await;
    let uri = format!("/registry/{}/peers", t.alpha.0);
    let resp = app.call(Method::GET, &uri, None).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("missing workspace auth token"));
    for bearer in ["nope", t.beta.1.as_str()] {
        let resp = app.call(Method::GET, &uri, Some(bearer)).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
        assert_eq!(resp.json, err("invalid workspace auth token"));
    }
    let resp = app
        .call(Method::GET, "/registry/nope/peers", Some(&t.beta.1))
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
}

async fn check_access(
    app: &TestApp,
    bearer: Option<&str>,
    caller: &str,
    target: &str,
) -> crate::helpers::Resp {
    app.post(
        "/registry/check-access",
        bearer,
        &json!({"caller_id": caller, "target_id": target}),
    )
    .await
}

#[tokio::test]
async fn check_access_answers_the_rule_to_the_admin_or_the_caller() {
    let app = app().await;
    let t = tree(&app).await;
    let s = |w: &(WorkspaceId, String)| w.0.to_string();
    for (caller, target, allowed) in [
        (&t.alpha, &t.beta, true),
        (&t.alpha, &t.root, true),
        (&t.root, &t.alpha, true),
        (&t.alpha_one, &t.root, true),
        (&t.root, &t.other_root, true),
        (&t.alpha_one, &t.beta_one, false),
        (&t.other_root, &t.beta, false),
    ] {
        for bearer in [ADMIN_TOKEN, caller.1.as_str()] {
            let resp = check_access(&app, Some(bearer), &s(caller), &s(target)).await;
            assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
            assert_eq!(resp.json, json!({"allowed": allowed}));
        }
    }
    let unknown = WorkspaceId::new_v4().to_string();
    let resp = check_access(&app, Some(ADMIN_TOKEN), &s(&t.alpha), &unknown).await;
    assert_eq!(resp.json, json!({"allowed": false}));

    let resp = check_access(&app, None, &s(&t.alpha), &s(&t.beta)).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("missing workspace auth token"));
    // Someone else's token: asking on alpha's behalf is refused.
    for bearer in ["nope", t.beta.1.as_str()] {
        let resp = check_access(&app, Some(bearer), &s(&t.alpha), &s(&t.beta)).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
        assert_eq!(resp.json, err("invalid workspace auth token"));
    }
    // Bad bodies.
    for body in [
        json!({"caller_id": s(&t.alpha)}),
        json!({"caller_id": "", "target_id": "x"}),
        json!([]),
    ] {
        let resp = app
            .post("/registry/check-access", Some(ADMIN_TOKEN), &body)
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(resp.json, err("invalid request body"));
    }
    // Ids that are not UUIDs: only "same id" is allowed, and only for the admin.
    let resp = check_access(&app, Some(ADMIN_TOKEN), "x", "x").await;
    assert_eq!(resp.json, json!({"allowed": true}));
    let resp = check_access(&app, Some(ADMIN_TOKEN), "x", "y").await;
    assert_eq!(resp.json, json!({"allowed": false}));
    let resp = check_access(&app, Some(&t.alpha.1), "x", "x").await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
}
