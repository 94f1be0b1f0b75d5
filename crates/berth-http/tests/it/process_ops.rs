//! Lifecycle operations through HTTP on the process provisioner with real child processes
//! (issue #5): the delete cascade over three levels and the purge, restart coalescing counted
//! in agent starts, the graceful stop a restart gives the old agent, and the configuration a
//! restart regenerates. SQLite and PostgreSQL.

use std::collections::HashSet;
use std::path::Path;

use axum::http::{Method, StatusCode};
use berth_domain::WorkspaceId;
use serde_json::json;

use crate::helpers::ADMIN_TOKEN;
use crate::model::{Harness, alive, harness_with};

const SLEEPER: &str = "exec sleep 600";

/// The live agent processes of `id`.
fn live_pids(h: &Harness, id: WorkspaceId) -> Vec<u32> {
    h.pids()
        .remove(&id)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| alive(*p))
        .collect()
}

async fn echo_child(h: &Harness, name: &str, parent: Option<WorkspaceId>) -> WorkspaceId {
    let mut body = json!({"name": name, "template": "echo"});
    if let Some(p) = parent {
        body["parent_id"] = json!(p.to_string());
    }
    h.app.create_id(body).await
}

async fn cascade_over_three_levels(postgres: bool) {
    let h = harness_with(postgres, |_| SLEEPER.to_owned()).await;
    let p = echo_child(&h, "p", None).await;
    let c = echo_child(&h, "c", Some(p)).await;
    let g = echo_child(&h, "g", Some(c)).await;
    h.settle().await;
    let all = [p, c, g];
    for id in all {
        assert_eq!(live_pids(&h, id).len(), 1, "{id} runs one agent");
    }

    let resp = h.app.delete(p, "").await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert_eq!(resp.json["children"], json!([{"id": c, "name": "c"}]));
    h.settle().await;
    for id in all {
        assert_eq!(
            live_pids(&h, id).len(),
            1,
            "an unconfirmed delete stops nothing"
        );
    }

    let resp = h.app.delete(p, "?confirm=true").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"status": "removed", "cascade_deleted": 2})
    );
    h.settle().await;
    for id in all {
        assert_eq!(h.app.row(id).await.status.as_str(), "removed");
        assert_eq!(live_pids(&h, id), Vec::<u32>::new(), "{id}: agent left");
        assert_eq!(h.app.events_named(id, "WORKSPACE_REMOVED").await.len(), 1);
        assert!(
            h.provisioner.workspace_root(id).exists(),
            "kept until purged"
        );
    }

    let resp = h.app.delete(p, "?purge=true").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["status"], "purged");
    for id in all {
        assert_eq!(h.app.db.count_for("workspaces", "id", id).await, 0);
        assert!(
            !h.provisioner.workspace_root(id).exists(),
            "{id}: files left"
        );
        // The purge recorded no second removal.
        assert_eq!(h.app.events_named(id, "WORKSPACE_REMOVED").await.len(), 1);
    }
    assert_eq!(h.app.db.count("workspaces").await, 0);
}

#[tokio::test]
async fn process_delete_cascades_over_three_levels_and_purge_leaves_nothing_sqlite() {
    cascade_over_three_levels(false).await;
}

#[tokio::test]
async fn process_delete_cascades_over_three_levels_and_purge_leaves_nothing_postgres() {
    cascade_over_three_levels(true).await;
}

async fn restarts_coalesce(postgres: bool) {
    const N: usize = 8;
    let h = harness_with(postgres, |_| SLEEPER.to_owned()).await;
    let id = echo_child(&h, "busy", None).await;
    h.settle().await;
    let first = live_pids(&h, id);
    assert_eq!(first.len(), 1);

    let uri = format!("/workspaces/{id}/restart");
    let answers = futures_util::future::join_all(
        (0..N).map(|_| h.app.call(Method::POST, &uri, Some(ADMIN_TOKEN))),
    )
    .await;
    for resp in answers {
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(resp.json["status"], "provisioning");
    }
    h.settle().await;

    let pids = h.pids().remove(&id).unwrap_or_default();
    let cycles = pids.len() - 1;
    assert!(
        (1..=2).contains(&cycles),
        "{N} concurrent restarts ran {cycles} cycles (agents {pids:?})"
    );
    // One event per cycle that ran, besides the create's.
    assert_eq!(
        h.app.events_named(id, "WORKSPACE_PROVISIONING").await.len(),
        1 + cycles
    );
    let live = live_pids(&h, id);
    assert_eq!(
        live.len(),
        1,
        "exactly one agent runs: {live:?} of {pids:?}"
    );
    assert_eq!(live.first(), pids.last(), "the newest one");
    assert_eq!(h.app.row(id).await.status.as_str(), "provisioning");
}

#[tokio::test]
async fn process_concurrent_restarts_coalesce_into_at_most_two_cycles_sqlite() {
    restarts_coalesce(false).await;
}

#[tokio::test]
async fn process_concurrent_restarts_coalesce_into_at_most_two_cycles_postgres() {
    restarts_coalesce(true).await;
}

/// An agent that, on SIGTERM, records its pid in `<scratch>/terms` and exits cleanly.
fn graceful(scratch: &Path) -> String {
    format!(
        "trap 'echo $$ >> \"{}\"; exit 0' TERM; while :; do sleep 0.05; done",
        scratch.join("terms").display()
    )
}

#[tokio::test]
async fn a_restart_gives_the_old_agent_sigterm_and_lets_it_exit_before_the_new_one_starts() {
    let h = harness_with(false, graceful).await;
    let id = echo_child(&h, "graceful", None).await;
    h.settle().await;
    let old = live_pids(&h, id);
    assert_eq!(old.len(), 1);
    let resp = h.app.lifecycle(id, "restart").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    h.settle().await;

    let terms: Vec<u32> = std::fs::read_to_string(h.root.path().join("terms"))
        .expect("the old agent saw SIGTERM")
        .lines()
        .map(|l| l.trim().parse().expect("pid"))
        .collect();
    assert_eq!(
        terms, old,
        "SIGTERM reached the old agent, which handled it"
    );
    let pids = h.pids().remove(&id).unwrap_or_default();
    assert_eq!(pids.len(), 2);
    assert!(!alive(pids[0]));
    assert!(alive(pids[1]));

    // Delete and pause stop the same way.
    let resp = h.app.lifecycle(id, "pause").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let terms: HashSet<String> = std::fs::read_to_string(h.root.path().join("terms"))
        .expect("terms")
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(terms.contains(&pids[1].to_string()), "{terms:?}");
}

#[tokio::test]
async fn a_restart_regenerates_the_configs_from_the_current_row() {
    let h = harness_with(false, |_| SLEEPER.to_owned()).await;
    // No template and no `echo-default`: the configs hold a generated config.yaml.
    let id = h
        .app
        .create_id(json!({"name": "before", "runtime": "echo", "model": "echo/echo-1"}))
        .await;
    h.settle().await;
    let configs = h.provisioner.workspace_root(id).join("configs");
    let config = std::fs::read_to_string(configs.join("config.yaml")).expect("config.yaml");
    assert!(config.contains("before"), "{config}");
    let token_before = std::fs::read_to_string(configs.join(".auth_token")).expect("token");
    // A file nothing regenerates (left by an earlier template, say).
    std::fs::write(configs.join("stale.txt"), "old").expect("write");

    h.app
        .patch_ok(id, json!({"name": "after", "role": "reviewer"}))
        .await;
    let resp = h.app.lifecycle(id, "restart").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["config_dir"], "generated");
    h.settle().await;

    let config = std::fs::read_to_string(configs.join("config.yaml")).expect("config.yaml");
    assert!(config.contains("after"), "{config}");
    assert!(config.contains("reviewer"), "{config}");
    assert!(!config.contains("before"), "{config}");
    assert!(!configs.join("stale.txt").exists(), "stale file survived");
    let token_after = std::fs::read_to_string(configs.join(".auth_token")).expect("token");
    assert_ne!(
        token_after, token_before,
        "a restart hands out a fresh token"
    );
}
