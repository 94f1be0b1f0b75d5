//! `POST /workspaces/{id}/restart` (REFERENCE.md §2.9, §5.6; DECISIONS.md §2.14): the refusals
//! in their order, no-op runtimes, one real cycle (stop, `provisioning`, start with a fresh
//! token), and coalescing of requests that arrive while a cycle runs.

use axum::http::{Method, StatusCode};
use berth_domain::WorkspaceId;
use berth_domain::status::Transition;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Call, Recorder, TestApp, app, err, recorder_app};

/// Creates a container workspace and waits for its first start.
async fn container(app: &TestApp, name: &str) -> WorkspaceId {
    let id = app
        .create_id(json!({"name": name, "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    id
}

#[tokio::test]
async fn restart_of_an_unknown_workspace_is_404() {
    let (app, rec) = recorder_app(false).await;
    let resp = app.lifecycle(WorkspaceId::new_v4(), "restart").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, err("workspace not found"));
    assert!(rec.calls().is_empty());
}

#[tokio::test]
async fn restart_needs_a_credential_of_that_workspace() {
    let (app, rec) = recorder_app(false).await;
    let a = container(&app, "a").await;
    let b = container(&app, "b").await;
    let b_token = app.admin_mint(b).await;
    let uri = format!("/workspaces/{a}/restart");
    let resp = app.call(Method::POST, &uri, None).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    let resp = app.call(Method::POST, &uri, Some(&b_token)).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("invalid workspace auth token"));
    app.service.drain().await;
    assert_eq!(rec.calls_for(a), [Call::Start(a)]);
}

/// External-like and `mock` workspaces have nothing to restart, backend or not.
async fn noop_runtimes(app: &TestApp, rec: Option<&Recorder>) {
    for runtime in ["external", "kimi", "kimi-cli"] {
        let (id, token) = app
            .external(json!({"name": format!("ext-{runtime}"), "runtime": runtime}))
            .await;
        let events = app.events_of(id).await;
        for bearer in [ADMIN_TOKEN, token.as_str()] {
            let resp = app
                .call(
                    Method::POST,
                    &format!("/workspaces/{id}/restart"),
                    Some(bearer),
                )
                .await;
            assert_eq!(resp.status, StatusCode::OK, "{runtime}: {}", resp.text);
            assert_eq!(
                resp.json,
                json!({
                    "status": "noop",
                    "runtime": runtime,
                    "message": format!(
                        "{runtime} workspaces are operator-driven — restart your local agent; \
                         platform has nothing to restart"
                    ),
                })
            );
        }
        app.service.drain().await;
        assert_eq!(app.status_of(id).await, "awaiting_agent");
        assert_eq!(app.events_of(id).await, events, "{runtime}: no event");
        if let Some(rec) = rec {
            assert!(rec.calls_for(id).is_empty(), "{runtime}");
        }
    }
    let id = app
        .create_id(json!({"name": "m", "runtime": "mock", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    let status = app.status_of(id).await;
    let calls = rec.map(|r| r.calls_for(id));
    let events = app.events_of(id).await;
    let resp = app.lifecycle(id, "restart").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({
            "status": "noop",
            "runtime": "mock",
            "message": "mock workspaces have no container — restart is a no-op",
        })
    );
    app.service.drain().await;
    assert_eq!(app.status_of(id).await, status);
    assert_eq!(rec.map(|r| r.calls_for(id)), calls);
    assert_eq!(app.events_of(id).await, events);
}

#[tokio::test]
async fn restart_of_external_like_and_mock_is_a_noop_without_backend() {
    let app = app().await;
    noop_runtimes(&app, None).await;
}

#[tokio::test]
async fn restart_of_external_like_and_mock_is_a_noop_with_backend() {
    let (app, rec) = recorder_app(false).await;
    noop_runtimes(&app, Some(&rec)).await;
}

#[tokio::test]
async fn restart_without_a_backend_is_503() {
    let app = app().await;
    let id = app
        .create_id(json!({"name": "c", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    assert_eq!(app.status_of(id).await, "failed");
    let before = app.events_of(id).await;
    let resp = app.lifecycle(id, "restart").await;
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        resp.text
    );
    assert_eq!(resp.json, err("provisioner not available"));
    app.service.drain().await;
    assert_eq!(app.status_of(id).await, "failed");
    assert_eq!(app.events_of(id).await, before);
    // Programmatic restarts are a silent no-op without a backend.
    app.service.request_restart(id).await;
    app.service.drain().await;
    assert_eq!(app.service.restarts_in_flight().await, 0);
    assert_eq!(app.events_of(id).await, before);
}

#[tokio::test]
async fn restart_under_a_paused_ancestor_is_409() {
    let (app, rec) = recorder_app(false).await;
    let p = container(&app, "p").await;
    let c = app
        .create_id(json!({"name": "c", "model": "openai/gpt-4o", "parent_id": p.to_string()}))
        .await;
    let g = app
        .create_id(json!({"name": "g", "model": "openai/gpt-4o", "parent_id": c.to_string()}))
        .await;
    app.service.drain().await;

    // The nearest paused ancestor is named.
    app.force(c, &[Transition::Paused]).await;
    let resp = app.lifecycle(g, "restart").await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert_eq!(
        resp.json,
        err("parent workspace \"c\" is paused — resume it first")
    );
    app.force(p, &[Transition::Paused]).await;
    for (id, ancestor) in [(c, "p"), (g, "c")] {
        let resp = app.lifecycle(id, "restart").await;
        assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
        assert_eq!(
            resp.json,
            err(&format!(
                "parent workspace \"{ancestor}\" is paused — resume it first"
            ))
        );
    }
    app.service.drain().await;
    for id in [c, g] {
        assert_eq!(rec.calls_for(id), [Call::Start(id)], "nothing restarted");
    }
    assert_eq!(app.status_of(g).await, "provisioning");

    // Without a backend the paused ancestor is still what is reported.
    let app = crate::helpers::app().await;
    let (p, _) = app
        .external(json!({"name": "p", "runtime": "external"}))
        .await;
    let c = app
        .create_id(json!({"name": "c", "model": "openai/gpt-4o", "parent_id": p.to_string()}))
        .await;
    app.service.drain().await;
    app.force(p, &[Transition::Paused]).await;
    let resp = app.lifecycle(c, "restart").await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert_eq!(
        resp.json,
        err("parent workspace \"p\" is paused — resume it first")
    );
}

#[tokio::test]
async fn restart_of_a_paused_or_hibernated_workspace_is_409() {
    let (app, rec) = recorder_app(false).await;
    let paused = container(&app, "paused").await;
    let resp = app.lifecycle(paused, "pause").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let hibernated = container(&app, "hibernated").await;
    app.force(
        hibernated,
        &[
            Transition::AgentRegistered,
            Transition::HibernateStarted,
            Transition::Hibernated,
        ],
    )
    .await;
    for (id, status) in [(paused, "paused"), (hibernated, "hibernated")] {
        let calls = rec.calls_for(id);
        let resp = app.lifecycle(id, "restart").await;
        assert_eq!(resp.status, StatusCode::CONFLICT, "{status}: {}", resp.text);
        assert_eq!(
            resp.json,
            json!({"error": format!("workspace is {status}"), "status": status})
        );
        app.service.drain().await;
        assert_eq!(app.status_of(id).await, status);
        assert_eq!(rec.calls_for(id), calls, "{status}: no stop or start");
    }
}

/// README: "restarting a removed, paused or hibernated workspace is a 409".
#[tokio::test]
async fn restart_of_a_removed_workspace_is_409() {
    let (app, rec) = recorder_app(false).await;
    let id = container(&app, "gone").await;
    assert_eq!(app.delete(id, "").await.status, StatusCode::OK);
    let calls = rec.calls_for(id);
    let resp = app.lifecycle(id, "restart").await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"error": "workspace is removed", "status": "removed"})
    );
    app.service.drain().await;
    assert_eq!(app.status_of(id).await, "removed");
    assert_eq!(rec.calls_for(id), calls);
}

async fn one_restart_cycle(postgres: bool) {
    let (app, rec) = recorder_app(postgres).await;
    let id = container(&app, "w").await;
    let old_token = rec.auth_token_of_start(id, 0);
    let provisioning_before = app.events_named(id, "WORKSPACE_PROVISIONING").await.len();

    // The workspace restarts itself with the token its start carried.
    let resp = app
        .call(
            Method::POST,
            &format!("/workspaces/{id}/restart"),
            Some(&old_token),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let mut body = resp.json.clone();
    let config_dir = body
        .as_object_mut()
        .and_then(|m| m.remove("config_dir"))
        .expect("config_dir");
    assert!(
        config_dir.as_str().is_some_and(|s| !s.is_empty()),
        "{config_dir}"
    );
    assert_eq!(
        body,
        json!({"status": "provisioning", "reset_session": false})
    );
    app.service.drain().await;

    // Stop, then start.
    assert_eq!(
        rec.calls_for(id),
        [Call::Start(id), Call::Stop(id), Call::Start(id)]
    );
    assert_eq!(app.service.restarts_in_flight().await, 0);
    // `provisioning` again, recorded once with the row's name, tier and runtime.
    assert_eq!(app.status_of(id).await, "provisioning");
    let events = app.events_named(id, "WORKSPACE_PROVISIONING").await;
    assert_eq!(events.len(), provisioning_before + 1, "{events:?}");
    assert_eq!(
        events.last(),
        Some(&json!({"name": "w", "tier": 3, "runtime": "claude-code"}))
    );
    // The new start carries a fresh token; the old one is revoked.
    let new_token = rec.auth_token_of_start(id, 1);
    assert_ne!(new_token, old_token);
    let request = &rec.requests_for(id)[1];
    assert_eq!(request.name, "w");
    assert_eq!(request.runtime, "claude-code");
    assert!(
        request
            .secret_files
            .iter()
            .any(|(name, _)| name == ".platform_inbound_secret")
    );
    let resp = app
        .call(
            Method::GET,
            &format!("/workspaces/{id}/state"),
            Some(&old_token),
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    let resp = app
        .call(
            Method::GET,
            &format!("/workspaces/{id}/state"),
            Some(&new_token),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);

    // An online workspace restarts as well.
    app.force(id, &[Transition::AgentRegistered]).await;
    let resp = app.lifecycle(id, "restart").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    app.service.drain().await;
    assert_eq!(rec.calls_for(id).len(), 5);
    assert_eq!(app.status_of(id).await, "provisioning");
}

#[tokio::test]
async fn one_restart_cycle_sqlite() {
    one_restart_cycle(false).await;
}

#[tokio::test]
async fn one_restart_cycle_postgres() {
    one_restart_cycle(true).await;
}

async fn requests_during_a_cycle_coalesce_into_one(postgres: bool) {
    let (app, rec) = recorder_app(postgres).await;
    let id = container(&app, "w").await;
    let other = container(&app, "other").await;
    assert_eq!(rec.calls_for(id), [Call::Start(id)]);
    let events_before = app.events_named(id, "WORKSPACE_PROVISIONING").await.len();

    // The first cycle starts and blocks inside `start`.
    rec.hold_starts();
    app.service.request_restart(id).await;
    rec.wait_for_starts(3).await;
    assert_eq!(app.service.restarts_in_flight().await, 1);
    assert_eq!(
        rec.calls_for(id),
        [Call::Start(id), Call::Stop(id), Call::Start(id)]
    );

    // Five more requests (programmatic and over HTTP) while it runs.
    for _ in 0..3 {
        app.service.request_restart(id).await;
    }
    for _ in 0..2 {
        let resp = app.lifecycle(id, "restart").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(resp.json["status"], "provisioning");
    }
    assert_eq!(app.service.restarts_in_flight().await, 1);
    // Restarts of another workspace are not coalesced with these.
    app.service.request_restart(other).await;
    assert_eq!(app.service.restarts_in_flight().await, 2);

    rec.release_starts();
    app.service.drain().await;
    assert_eq!(app.service.restarts_in_flight().await, 0);
    // Exactly two cycles: the running one and one for all requests that arrived meanwhile.
    assert_eq!(
        rec.calls_for(id),
        [
            Call::Start(id),
            Call::Stop(id),
            Call::Start(id),
            Call::Stop(id),
            Call::Start(id),
        ]
    );
    assert_eq!(
        rec.calls_for(other),
        [Call::Start(other), Call::Stop(other), Call::Start(other)]
    );
    // Each cycle recorded its own `provisioning` event.
    let cycles = app.events_named(id, "WORKSPACE_PROVISIONING").await;
    assert_eq!(cycles.len(), events_before + 2, "{cycles:?}");

    // A request after the cycles finished is not swallowed.
    app.service.request_restart(id).await;
    app.service.drain().await;
    assert_eq!(rec.calls_for(id).len(), 7);
    assert_eq!(app.service.restarts_in_flight().await, 0);
}

#[tokio::test]
async fn requests_during_a_cycle_coalesce_into_one_sqlite() {
    requests_during_a_cycle_coalesce_into_one(false).await;
}

#[tokio::test]
async fn requests_during_a_cycle_coalesce_into_one_postgres() {
    requests_during_a_cycle_coalesce_into_one(true).await;
}

/// A restart still pending when the workspace is deleted or paused must not start it again.
#[tokio::test]
async fn a_pending_restart_does_not_revive_a_deleted_or_paused_workspace() {
    for action in ["delete", "pause"] {
        let (app, rec) = recorder_app(false).await;
        let id = container(&app, "w").await;
        rec.hold_starts();
        app.service.request_restart(id).await;
        rec.wait_for_starts(2).await;
        app.service.request_restart(id).await;
        let resp = if action == "delete" {
            app.delete(id, "").await
        } else {
            app.lifecycle(id, "pause").await
        };
        assert_eq!(resp.status, StatusCode::OK, "{action}: {}", resp.text);
        rec.release_starts();
        app.service.drain().await;
        assert_eq!(app.service.restarts_in_flight().await, 0);
        // The cycle that was already starting finishes, sees the workspace stopped meanwhile
        // and stops its fresh agent again (no agent outlives the delete or pause); the pending
        // cycle does nothing.
        assert_eq!(
            rec.calls_for(id),
            [
                Call::Start(id),
                Call::Stop(id),
                Call::Start(id),
                Call::Stop(id),
                Call::Stop(id)
            ],
            "{action}"
        );
        let expected = if action == "delete" {
            "removed"
        } else {
            "paused"
        };
        assert_eq!(app.status_of(id).await, expected);
    }
}

#[tokio::test]
async fn secrets_written_through_the_api_reach_the_agents_environment() {
    use secrecy::ExposeSecret as _;
    for postgres in [false, true] {
        let (app, rec) = recorder_app(postgres).await;
        let resp = app
            .post(
                "/admin/secrets",
                Some(ADMIN_TOKEN),
                &json!({"key": "SHARED", "value": "from-global"}),
            )
            .await;
        assert!(resp.status.is_success(), "{}", resp.text);
        let resp = app
            .post(
                "/admin/secrets",
                Some(ADMIN_TOKEN),
                &json!({"key": "OVERRIDDEN", "value": "global"}),
            )
            .await;
        assert!(resp.status.is_success(), "{}", resp.text);
        let id = container(&app, "env").await;
        let env_of = |req: &berth_provision::ProvisionRequest, key: &str| {
            req.env
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.expose_secret().to_owned())
        };
        let first = rec.requests_for(id).last().cloned().expect("first start");
        assert_eq!(env_of(&first, "SHARED").as_deref(), Some("from-global"));
        assert_eq!(env_of(&first, "MODEL").as_deref(), Some("openai/gpt-4o"));

        // A workspace secret written through the API restarts the workspace and reaches the
        // new start's environment, overriding the global value of the same key.
        for (key, value) in [
            ("API_KEY", "sk-written-through-the-api"),
            ("OVERRIDDEN", "mine"),
        ] {
            let resp = app
                .post(
                    &format!("/workspaces/{id}/secrets"),
                    Some(ADMIN_TOKEN),
                    &json!({"key": key, "value": value}),
                )
                .await;
            assert!(resp.status.is_success(), "{}", resp.text);
        }
        app.service.drain().await;
        let last = rec.requests_for(id).last().cloned().expect("restarted");
        assert!(
            rec.requests_for(id).len() >= 2,
            "a secret write restarts the workspace"
        );
        assert_eq!(
            env_of(&last, "API_KEY").as_deref(),
            Some("sk-written-through-the-api")
        );
        assert_eq!(env_of(&last, "OVERRIDDEN").as_deref(), Some("mine"));
        assert_eq!(env_of(&last, "SHARED").as_deref(), Some("from-global"));
    }
}

/// A start whose container a pause took away fails late; by then a resume has begun a newer
/// start. The late failure belongs to the old start: it must not mark the resumed workspace
/// `failed` (seen on Docker as hibernate → wake → `failed`, "No such container").
#[tokio::test]
async fn a_late_failure_of_a_superseded_start_does_not_fail_the_newer_start() {
    for postgres in [false, true] {
        let (app, rec) = recorder_app(postgres).await;
        rec.hold_starts();
        let id = app
            .create_id(json!({"name": "w", "model": "openai/gpt-4o"}))
            .await;
        rec.wait_for_starts(1).await;
        let resp = app.lifecycle(id, "pause").await;
        assert_eq!(resp.status, StatusCode::OK, "pause: {}", resp.text);
        let resp = app.lifecycle(id, "resume").await;
        assert_eq!(resp.status, StatusCode::OK, "resume: {}", resp.text);
        // The first start, released now, fails; the resume's start then succeeds.
        rec.fail_next_starts(1);
        rec.release_starts();
        app.service.drain().await;
        assert_eq!(
            rec.calls_for(id),
            [Call::Start(id), Call::Stop(id), Call::Start(id)],
            "postgres={postgres}"
        );
        assert_eq!(
            app.status_of(id).await,
            "provisioning",
            "postgres={postgres}"
        );
        let resp = app.get(&format!("/events/{id}")).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        let failed = resp
            .json
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["event_type"] == "WORKSPACE_PROVISION_FAILED")
            .count();
        assert_eq!(failed, 0, "postgres={postgres}: {}", resp.text);
    }
}

/// The `config.yaml` a start request's template directory holds (`None`: no template).
fn template_config(request: &berth_provision::ProvisionRequest) -> Option<String> {
    let dir = request.template_path.as_ref()?;
    Some(std::fs::read_to_string(dir.join("config.yaml")).expect("template config.yaml"))
}

/// A workspace created from a template restarts from that template's files, not a generated
/// `config.yaml`; once the template has left the catalog, a restart falls back to the generated
/// one.
#[tokio::test]
async fn restart_builds_from_the_creation_template() {
    for postgres in [false, true] {
        let (app, rec) = recorder_app(postgres).await;
        let id = app
            .create_id(json!({"name": "templated", "template": "echo"}))
            .await;
        app.service.drain().await;
        let resp = app.lifecycle(id, "restart").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(resp.json["config_dir"], "echo", "postgres={postgres}");
        app.service.drain().await;
        let requests = rec.requests_for(id);
        assert_eq!(requests.len(), 2, "postgres={postgres}");
        for (n, request) in requests.iter().enumerate() {
            let config = template_config(request)
                .unwrap_or_else(|| panic!("postgres={postgres}: start #{n} has no template"));
            assert!(
                config.starts_with("name: Echo\nruntime: echo\n"),
                "postgres={postgres}: start #{n}: {config}"
            );
            assert!(
                !request.config_files.contains_key("config.yaml"),
                "postgres={postgres}: start #{n} carries a generated config.yaml"
            );
            assert_eq!(request.runtime, "echo");
        }

        // The template is removed from the catalog: the next start generates a config.yaml.
        let dir = requests[1].template_path.clone().expect("template dir");
        std::fs::remove_dir_all(&dir).expect("remove template");
        let resp = app.lifecycle(id, "restart").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(resp.json["config_dir"], "generated", "postgres={postgres}");
        app.service.drain().await;
        let requests = rec.requests_for(id);
        assert_eq!(requests.len(), 3, "postgres={postgres}");
        assert_eq!(requests[2].template_path, None, "postgres={postgres}");
        let generated = String::from_utf8(requests[2].config_files["config.yaml"].clone())
            .expect("utf-8 config");
        assert!(
            generated.contains("echo"),
            "postgres={postgres}: {generated}"
        );
    }
}

/// The restart body's `template` (REFERENCE.md §5.6 step 1) must name a catalog template; an
/// unknown one is a 400 that changes nothing, a known one is used and kept for later starts.
#[tokio::test]
async fn restart_body_template_is_validated_and_kept() {
    for postgres in [false, true] {
        let (app, rec) = recorder_app(postgres).await;
        let id = container(&app, "w").await;
        assert_eq!(rec.requests_for(id)[0].template_path, None);
        let uri = format!("/workspaces/{id}/restart");
        let events = app.events_of(id).await;
        let status = app.status_of(id).await;
        for (template, message) in [
            ("missing", "invalid template: \"missing\" not found"),
            ("../etc", "invalid template"),
        ] {
            let resp = app
                .post(&uri, Some(ADMIN_TOKEN), &json!({"template": template}))
                .await;
            assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
            let error = resp.json["error"].as_str().expect("error");
            assert!(error.starts_with(message), "{template}: {error}");
        }
        app.service.drain().await;
        assert_eq!(rec.calls_for(id), [Call::Start(id)], "postgres={postgres}");
        assert_eq!(app.events_of(id).await, events, "postgres={postgres}");
        assert_eq!(app.status_of(id).await, status);
        assert_eq!(app.store.workspace_template(id).await.unwrap(), None);

        let resp = app
            .post(&uri, Some(ADMIN_TOKEN), &json!({"template": "plain"}))
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(resp.json["config_dir"], "plain", "postgres={postgres}");
        app.service.drain().await;
        // A later restart with no (or an unparsable) body keeps the chosen template.
        let resp = app.post_raw(&uri, Some(ADMIN_TOKEN), "not json").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(resp.json["config_dir"], "plain", "postgres={postgres}");
        app.service.drain().await;
        let requests = rec.requests_for(id);
        assert_eq!(requests.len(), 3, "postgres={postgres}");
        for request in &requests[1..] {
            let config = template_config(request).expect("template");
            assert!(config.starts_with("name: Plain\n"), "{config}");
            assert!(!request.config_files.contains_key("config.yaml"));
        }
    }
}

/// Resume (like wake and the liveness restart) starts from the creation template too.
#[tokio::test]
async fn resume_builds_from_the_creation_template() {
    for postgres in [false, true] {
        let (app, rec) = recorder_app(postgres).await;
        let id = app
            .create_id(json!({"name": "templated", "template": "echo"}))
            .await;
        app.service.drain().await;
        let resp = app.lifecycle(id, "pause").await;
        assert_eq!(resp.status, StatusCode::OK, "pause: {}", resp.text);
        let resp = app.lifecycle(id, "resume").await;
        assert_eq!(resp.status, StatusCode::OK, "resume: {}", resp.text);
        app.service.drain().await;
        let requests = rec.requests_for(id);
        assert_eq!(requests.len(), 2, "postgres={postgres}");
        let config = template_config(&requests[1]).expect("resume has the template");
        assert!(config.starts_with("name: Echo\n"), "{config}");
        assert!(!requests[1].config_files.contains_key("config.yaml"));
    }
}
