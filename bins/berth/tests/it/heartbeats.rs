//! Heartbeats at load, as the release binary serves them: the group commit never loses a
//! heartbeat it answered, even when the server is killed mid-flush, and a revoked token stops
//! working on every server sharing the database within the token cache's bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::leader::fresh_database_named;
use crate::server::{Server, wait_for};

/// Creates `n` external workspaces; returns `(id, token)` of each.
async fn externals(server: &Server, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let (status, created) = server
            .admin_post(
                "/workspaces",
                &json!({"name": format!("agent-{i}"), "external": true}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        out.push((
            created["id"].as_str().expect("id").to_owned(),
            created["connection"]["auth_token"]
                .as_str()
                .expect("token")
                .to_owned(),
        ));
    }
    out
}

/// The `_count` and `_sum` of the heartbeat batch histogram in `/metrics`.
async fn batch_histogram(server: &Server) -> (f64, f64) {
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", server.base))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .expect("metrics");
    let text = resp.text().await.expect("metrics body");
    let read = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
    };
    (
        read("berth_heartbeat_batch_size_count "),
        read("berth_heartbeat_batch_size_sum "),
    )
}

/// Agents heartbeat as fast as the server answers, each with a rising `uptime_seconds`; the
/// server is killed with SIGKILL mid-load and started again over the same data. Every
/// workspace then shows at least the uptime of the last heartbeat that was answered 200: an
/// answer is only ever given after its batch committed.
async fn answered_heartbeats_survive_a_crash(extra: &[&str]) {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let mut server = Server::start_release(&data, extra).await;
    let agents = externals(&server, 24).await;
    let answered: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let http = reqwest::Client::new();
    let mut loops = Vec::new();
    for (id, token) in agents.clone() {
        let (http, base, answered) = (http.clone(), server.base.clone(), answered.clone());
        loops.push(tokio::spawn(async move {
            for uptime in 1i64.. {
                let beat = json!({"workspace_id": id, "uptime_seconds": uptime, "current_task": format!("step {}", uptime / 10)});
                let Ok(resp) = http
                    .post(format!("{base}/registry/heartbeat"))
                    .bearer_auth(&token)
                    .json(&beat)
                    .send()
                    .await
                else {
                    return; // The server is gone.
                };
                let status = resp.status().as_u16();
                // The body must arrive too: a status line without it is not an answer.
                if status != 200 || resp.bytes().await.is_err() {
                    return;
                }
                answered
                    .lock()
                    .expect("lock")
                    .insert(id.clone(), uptime);
            }
        }));
    }
    // Load until every agent was answered a few times.
    wait_for(
        "every agent to be answered",
        Duration::from_secs(60),
        || async {
            let a = answered.lock().expect("lock");
            if a.len() == agents.len() && a.values().all(|n| *n >= 20) {
                Ok(())
            } else {
                Err(format!("{} agents answered", a.len()))
            }
        },
    )
    .await;
    // Every heartbeat answered before the scrape was applied by a flushed batch.
    let answered_before: i64 = answered.lock().expect("lock").values().sum();
    let (batches, beats) = batch_histogram(&server).await;
    server.kill();
    for l in loops {
        l.await.expect("agent loop");
    }
    let answered = answered.lock().expect("lock").clone();
    assert!(
        beats >= answered_before as f64,
        "{answered_before} heartbeats were answered but the batches hold {beats}"
    );
    assert!(
        batches < beats,
        "{agents} concurrent agents' {beats} heartbeats went in {batches} transactions: no batching",
        agents = agents.len()
    );

    let server = Server::start_release(&data, extra).await;
    for (id, _) in &agents {
        let w = server.workspace(id).await;
        let stored = w["uptime_seconds"].as_i64().expect("uptime_seconds");
        assert!(
            stored >= answered[id],
            "{id}: heartbeat {} was answered 200 but the row after the crash shows {stored}",
            answered[id]
        );
        assert!(w["last_heartbeat_at"].is_string(), "{w}");
    }
}

#[tokio::test]
async fn answered_heartbeats_survive_a_crash_sqlite() {
    answered_heartbeats_survive_a_crash(&[]).await;
}

#[tokio::test]
async fn answered_heartbeats_survive_a_crash_postgres() {
    let url = fresh_database_named("hb_crash").await;
    answered_heartbeats_survive_a_crash(&["--database-url", &url]).await;
}

async fn heartbeat(server: &Server, id: &str, token: &str) -> (u16, Value) {
    server
        .agent_post(
            "/registry/heartbeat",
            token,
            &json!({"workspace_id": id, "uptime_seconds": 1}),
        )
        .await
}

/// Two servers on one PostgreSQL, each caching verified tokens for 2 s. A token revoked
/// through the first is refused by the first at once and by the second within the bound.
#[tokio::test]
async fn a_revoked_token_is_refused_at_once_here_and_within_the_cache_bound_elsewhere() {
    let url = fresh_database_named("token_cache").await;
    let root = tempfile::tempdir().expect("tempdir");
    let keys = "k1:MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
    let args = [
        "--database-url",
        url.as_str(),
        "--secret-keys",
        keys,
        "--token-cache-secs",
        "2",
    ];
    let a = Server::start_release(&root.path().join("a"), &args).await;
    let b = Server::start_release(&root.path().join("b"), &args).await;
    let (id, token) = externals(&a, 1).await.remove(0);
    // Both servers verified (and cached) the token.
    for s in [&a, &b] {
        let (status, body) = heartbeat(s, &id, &token).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, listed) = a
        .call(
            reqwest::Method::GET,
            &format!("/workspaces/{id}/tokens"),
            Some(&a.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let token_id = listed["tokens"][0]["id"].as_str().expect("token id");
    let (status, body) = a
        .call(
            reqwest::Method::DELETE,
            &format!("/workspaces/{id}/tokens/{token_id}"),
            Some(&a.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = heartbeat(&a, &id, &token).await;
    assert_eq!(
        (status, body),
        (401, json!({"error": "invalid workspace auth token"})),
        "the revoking server refuses at once"
    );
    // The other server: refused within the 2 s bound (the deadline leaves room for a slow
    // machine's scheduling, not for a longer cache).
    wait_for(
        "the other server to refuse the revoked token",
        Duration::from_secs(6),
        || async {
            match heartbeat(&b, &id, &token).await {
                (401, _) => Ok(()),
                (status, body) => Err(format!("{status} {body}")),
            }
        },
    )
    .await;
}
