//! Warm pools as a user runs them: the release binary's `berth serve --warm-pool echo=N` with
//! otherwise default flags (the process backend, on SQLite and on PostgreSQL). A create of the
//! pool's template takes a running member (the returned id is the member's, and the agent that
//! answers is the process started ahead); a create of another shape starts cold and is no miss;
//! a member that dies is replaced; a member holds no secret or token before its claim; a
//! deleted workspace's agent never goes back to the pool; two servers on one database hand the
//! last member to exactly one create; a clean stop leaves no member behind.
//!
//! The members are found where the process backend keeps them: `<data-dir>/workspaces/<id>/`,
//! whose `configs/.pool_secret` marks an agent that waits to be claimed, and the running agent
//! by `WORKSPACE_ID=<id>` in its environment (`/proc`).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::crash::{KillLeftovers, agents_of, create};
use crate::leader::fresh_database_named;
use crate::server::{Server, wait_for};

/// Bound of every wait on the pool or an agent (never a timing assertion).
const WAIT: Duration = Duration::from_secs(30);

/// The key ring every server sharing one PostgreSQL database is given.
const KEYS: &str = "k1:MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";

/// The `echo` pool as `GET /admin/pools` shows it.
pub(crate) async fn echo_pool(server: &Server) -> Value {
    let (status, body) = server
        .call(Method::GET, "/admin/pools", Some(&server.admin_token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["name"] == "echo"))
        .cloned()
        .unwrap_or_else(|| panic!("no echo pool in {body}"))
}

/// The agent directories of `data` (`<data>/workspaces/<id>/`).
fn agent_dir(data: &Path, id: &str) -> PathBuf {
    data.join("workspaces").join(id)
}

/// The configs directory of agent `id` (its `WORKSPACE_CONFIG_PATH`).
fn configs(data: &Path, id: &str) -> PathBuf {
    agent_dir(data, id).join("configs")
}

/// The ids of the agents under `data` that wait to be claimed: their configs directory holds
/// the pool credential, which a claim deletes.
fn waiting_members(data: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(data.join("workspaces")) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|id| configs(data, id).join(".pool_secret").exists())
        .collect()
}

/// Waits until the `echo` pool has `size` ready members, none starting, each with a waiting
/// agent directory under `data` and one running agent; returns their ids.
async fn full_pool(server: &Server, data: &Path, size: u64) -> BTreeSet<String> {
    wait_for(&format!("{size} ready members"), WAIT, || async {
        let pool = echo_pool(server).await;
        let members = waiting_members(data);
        let running = members.iter().all(|id| agents_of(id).len() == 1);
        if pool["ready"] == size && pool["starting"] == 0 && members.len() as u64 == size && running
        {
            Ok(members)
        } else {
            Err(format!("{pool}; waiting agents {members:?}"))
        }
    })
    .await
}

/// The one agent process of `id`.
fn the_agent(id: &str) -> u32 {
    let pids = agents_of(id);
    assert_eq!(pids.len(), 1, "agents of {id}: {pids:?}");
    pids[0]
}

/// The environment of process `pid`, one `KEY=value` a line.
fn environment(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("reading the environment of {pid}: {e}"))
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .collect()
}

/// The names in a directory.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A number read from the `/metrics` text: the value of the series line `series`.
async fn metric(server: &Server, series: &str) -> f64 {
    let (status, text) = {
        let resp = server
            .http
            .get(format!("{}/metrics", server.base))
            .bearer_auth(&server.admin_token)
            .send()
            .await
            .expect("metrics");
        (resp.status().as_u16(), resp.text().await.expect("body"))
    };
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}"))
}

/// `message/send` of `text` to workspace `id` through the platform, as admin: the echo agent's
/// answer.
async fn echo_reply(server: &Server, id: &str, text: &str) -> String {
    let message = json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": {"message": {"role": "user", "messageId": "m-1",
                               "parts": [{"kind": "text", "text": text}]}}});
    let (status, reply) = server
        .call(
            Method::POST,
            &format!("/workspaces/{id}/a2a"),
            Some(&server.admin_token),
            Some(&message),
        )
        .await;
    assert_eq!(status, 200, "{reply}\n{}", server.log_text());
    reply["result"]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `DELETE /workspaces/{id}` with `query`, as admin: must answer 200.
async fn delete(server: &Server, id: &str, query: &str) -> Value {
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/workspaces/{id}{query}"),
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until no process runs as workspace `id`.
async fn wait_no_agent(id: &str) {
    wait_for(&format!("the agent of {id} to be gone"), WAIT, || async {
        match agents_of(id).as_slice() {
            [] => Ok(()),
            pids => Err(format!("{pids:?}")),
        }
    })
    .await;
}

// ---- 1. A create of the pool's shape takes a ready member ----------------------------------

async fn a_create_of_the_pool_template_takes_a_ready_member(store: &[&str]) {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let mut args = vec!["--warm-pool", "echo=2"];
    args.extend_from_slice(store);
    let server = Server::start_release(&data, &args).await;
    let members = full_pool(&server, &data, 2).await;
    let _leftovers = KillLeftovers(members.iter().cloned().collect());
    // The agent each member runs now, to tell it from one started later.
    let started_ahead: Vec<(String, u32)> = members
        .iter()
        .map(|id| (id.clone(), the_agent(id)))
        .collect();

    let id = create(&server, json!({"name": "w", "template": "echo"})).await;
    assert!(
        members.contains(&id),
        "the create got {id}, not a member of {members:?}\n{}",
        server.log_text()
    );
    let w = server.wait_status(&id, "online", WAIT).await;
    assert_eq!((&w["name"], &w["runtime"]), (&json!("w"), &json!("echo")));
    // The workspace's agent is the process started ahead, now holding the workspace's token.
    let before = started_ahead
        .iter()
        .find_map(|(m, pid)| (*m == id).then_some(*pid))
        .expect("member pid");
    assert_eq!(
        the_agent(&id),
        before,
        "the claimed workspace runs another agent"
    );
    let claimed = configs(&data, &id);
    assert!(
        claimed.join(".auth_token").exists(),
        "{:?}",
        names(&claimed)
    );
    assert!(
        !claimed.join(".pool_secret").exists(),
        "{:?}",
        names(&claimed)
    );
    assert_eq!(
        echo_reply(&server, &id, "from the pool").await,
        "echo: from the pool"
    );

    let pool = echo_pool(&server).await;
    assert_eq!(
        (&pool["claims"], &pool["misses"]),
        (&json!(1), &json!(0)),
        "{pool}"
    );
    assert_eq!(pool["claimed_last_minute"], 1, "{pool}");
    assert_eq!(
        metric(&server, "berth_pool_claims_total{pool=\"echo\"}").await,
        1.0
    );
    assert_eq!(
        metric(&server, "berth_pool_misses_total{pool=\"echo\"}").await,
        0.0
    );
    // Refilled to two ready members, the claimed one not among them.
    let refilled = full_pool(&server, &data, 2).await;
    let _more = KillLeftovers(refilled.iter().cloned().collect());
    assert!(!refilled.contains(&id), "{refilled:?}");
    assert_eq!(
        refilled.intersection(&members).count(),
        1,
        "{refilled:?} / {members:?}"
    );
    server.expect_status(&id, "online").await;
}

#[tokio::test]
async fn a_create_of_the_pool_template_takes_a_ready_member_sqlite() {
    a_create_of_the_pool_template_takes_a_ready_member(&[]).await;
}

#[tokio::test]
async fn a_create_of_the_pool_template_takes_a_ready_member_postgres() {
    let url = fresh_database_named("pool_claim").await;
    a_create_of_the_pool_template_takes_a_ready_member(&["--database-url", &url]).await;
}

// ---- 2. Other shapes start cold; an empty pool is a miss ------------------------------------

#[tokio::test]
async fn a_create_that_does_not_match_starts_cold() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let server = Server::start_release(&data, &["--warm-pool", "echo=1"]).await;
    let members = full_pool(&server, &data, 1).await;
    let _leftovers = KillLeftovers(members.iter().cloned().collect());

    // The pool's members run at the default tier (3; the template's `tier:` is not read), so
    // another tier is another shape; so is the runtime without the template.
    let other_tier = create(
        &server,
        json!({"name": "tier-two", "template": "echo", "tier": 2}),
    )
    .await;
    let no_template = create(
        &server,
        json!({"name": "bare", "runtime": "echo", "model": "echo/echo-1"}),
    )
    .await;
    let _cold = KillLeftovers(vec![other_tier.clone(), no_template.clone()]);
    for id in [&other_tier, &no_template] {
        assert!(!members.contains(id), "{id} is a member of {members:?}");
        let w = server.wait_status(id, "online", WAIT).await;
        assert_ne!(w["url"], Value::Null, "{w}");
    }
    assert_eq!(server.workspace(&other_tier).await["tier"], 2);
    let pool = echo_pool(&server).await;
    assert_eq!(
        (&pool["claims"], &pool["misses"], &pool["ready"]),
        (&json!(0), &json!(0), &json!(1)),
        "a create of another shape is neither a claim nor a miss: {pool}"
    );
    assert_eq!(
        waiting_members(&data),
        members,
        "the member was left waiting"
    );

    // Two creates of the pool's shape sent at once with one member: one takes it, the other
    // finds the pool empty and starts cold (a replacement is not ready so soon: its agent's
    // start alone takes the process backend's 200 ms start grace).
    let (a, b) = tokio::join!(
        create(&server, json!({"name": "first", "template": "echo"})),
        create(&server, json!({"name": "second", "template": "echo"})),
    );
    let _both = KillLeftovers(vec![a.clone(), b.clone()]);
    let taken: Vec<&String> = [&a, &b]
        .into_iter()
        .filter(|id| members.contains(*id))
        .collect();
    assert_eq!(taken.len(), 1, "{a} and {b} against members {members:?}");
    assert_ne!(a, b);
    for id in [&a, &b] {
        server.wait_status(id, "online", WAIT).await;
    }
    let pool = echo_pool(&server).await;
    assert_eq!(
        (&pool["claims"], &pool["misses"]),
        (&json!(1), &json!(1)),
        "{pool}"
    );
    assert_eq!(
        metric(&server, "berth_pool_misses_total{pool=\"echo\"}").await,
        1.0
    );
    let refilled = full_pool(&server, &data, 1).await;
    let _more = KillLeftovers(refilled.iter().cloned().collect());
}

// ---- 3. A dead member is replaced ------------------------------------------------------------

#[tokio::test]
async fn a_member_killed_while_idle_is_replaced() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let server = Server::start_release(&data, &["--warm-pool", "echo=1"]).await;
    let members = full_pool(&server, &data, 1).await;
    let _leftovers = KillLeftovers(members.iter().cloned().collect());
    let dead = members.first().expect("one member").clone();
    assert_eq!(echo_pool(&server).await["failures"], 0);

    let killed = std::process::Command::new("kill")
        .args(["-KILL", &the_agent(&dead).to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());

    let replacement = wait_for("the dead member to be replaced", WAIT, || async {
        let pool = echo_pool(&server).await;
        let members = waiting_members(&data);
        let running = members.iter().all(|id| agents_of(id).len() == 1);
        if pool["failures"].as_u64().unwrap_or(0) >= 1
            && pool["ready"] == 1
            && members.len() == 1
            && !members.contains(&dead)
            && running
        {
            Ok(members.first().cloned().expect("one member"))
        } else {
            Err(format!("{pool}; waiting agents {members:?}"))
        }
    })
    .await;
    let _more = KillLeftovers(vec![replacement.clone()]);
    // The dead member's directory went with its record.
    assert!(
        !agent_dir(&data, &dead).exists(),
        "{}",
        agent_dir(&data, &dead).display()
    );

    let id = create(&server, json!({"name": "after", "template": "echo"})).await;
    assert_eq!(id, replacement, "{}", server.log_text());
    server.wait_status(&id, "online", WAIT).await;
    assert_eq!(echo_reply(&server, &id, "again").await, "echo: again");
    let pool = echo_pool(&server).await;
    assert_eq!(
        (&pool["claims"], &pool["misses"]),
        (&json!(1), &json!(0)),
        "{pool}"
    );
}

// ---- 4. A deleted workspace's agent never goes back ------------------------------------------

#[tokio::test]
async fn deleting_a_claimed_workspace_destroys_its_member() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let server = Server::start_release(&data, &["--warm-pool", "echo=1"]).await;
    let members = full_pool(&server, &data, 1).await;
    let _leftovers = KillLeftovers(members.iter().cloned().collect());
    let id = create(&server, json!({"name": "short-lived", "template": "echo"})).await;
    assert!(members.contains(&id), "{id} / {members:?}");
    server.wait_status(&id, "online", WAIT).await;
    the_agent(&id);

    let body = delete(&server, &id, "?confirm=true").await;
    assert_eq!(body["status"], "removed", "{body}");
    wait_no_agent(&id).await;

    // The pool is refilled with a fresh member, never the deleted workspace's.
    let refilled = full_pool(&server, &data, 1).await;
    let _more = KillLeftovers(refilled.iter().cloned().collect());
    assert!(!refilled.contains(&id), "{refilled:?}");
    let next = create(&server, json!({"name": "next", "template": "echo"})).await;
    assert_ne!(next, id);
    assert!(refilled.contains(&next), "{next} / {refilled:?}");
    server.wait_status(&next, "online", WAIT).await;
    assert!(
        agents_of(&id).is_empty(),
        "the deleted workspace's agent came back"
    );
    let pool = echo_pool(&server).await;
    assert_eq!(
        (&pool["claims"], &pool["misses"]),
        (&json!(2), &json!(0)),
        "{pool}"
    );
}

// ---- 5. Nothing of a workspace reaches a member before its claim ------------------------------

#[tokio::test]
async fn a_member_holds_no_secret_or_token_before_its_claim() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let value = format!("pool-probe-{}", uuid::Uuid::new_v4());
    // A global secret first: every workspace's agent gets it in its environment.
    let mut first = Server::start_release(&data, &[]).await;
    let (status, body) = first
        .call(
            Method::PUT,
            "/settings/secrets",
            Some(&first.admin_token),
            Some(&json!({"key": "POOL_PROBE", "value": value})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(first.stop().await.success(), "{}", first.log_text());
    drop(first);

    let server = Server::start_release(&data, &["--warm-pool", "echo=2"]).await;
    let members = full_pool(&server, &data, 2).await;
    let _leftovers = KillLeftovers(members.iter().cloned().collect());
    for id in &members {
        let env = environment(the_agent(id));
        assert!(
            env.iter().any(|kv| *kv == format!("WORKSPACE_ID={id}")),
            "{env:?}"
        );
        assert!(
            !env.iter().any(|kv| kv.contains(&value)),
            "member {id} holds the global secret: {env:?}"
        );
        assert!(
            !env.iter().any(|kv| kv.starts_with("WORKSPACE_AUTH_TOKEN=")
                || kv.starts_with("POOL_PROBE=")
                || kv.contains(&server.admin_token)),
            "member {id}: {env:?}"
        );
        let dir = configs(&data, id);
        let files = names(&dir);
        assert!(files.contains(".pool_secret"), "{id}: {files:?}");
        assert_eq!(mode(&dir.join(".pool_secret")), 0o600, "{id}");
        assert!(
            !files.contains(".auth_token") && !files.contains(".platform_inbound_secret"),
            "member {id} holds a workspace credential: {files:?}"
        );
        for file in &files {
            let content = std::fs::read(dir.join(file)).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&content).contains(&value),
                "member {id}: {file} holds the global secret"
            );
        }
    }

    // The same look finds the secret in a workspace started cold (another tier: not a
    // member), so the look above would have seen a leak.
    let cold = create(
        &server,
        json!({"name": "cold", "template": "echo", "tier": 2}),
    )
    .await;
    let _cold = KillLeftovers(vec![cold.clone()]);
    server.wait_status(&cold, "online", WAIT).await;
    assert!(
        environment(the_agent(&cold))
            .iter()
            .any(|kv| *kv == format!("POOL_PROBE={value}")),
        "the control workspace lacks the global secret"
    );

    // Claimed: the credentials arrive with the handover and the pool credential is deleted.
    let id = create(&server, json!({"name": "claimed", "template": "echo"})).await;
    assert!(members.contains(&id), "{id} / {members:?}");
    server.wait_status(&id, "online", WAIT).await;
    let dir = configs(&data, &id);
    let files = names(&dir);
    assert!(files.contains(".auth_token"), "{files:?}");
    assert!(files.contains(".platform_inbound_secret"), "{files:?}");
    assert!(!files.contains(".pool_secret"), "{files:?}");
    assert_eq!(mode(&dir.join(".auth_token")), 0o600);
    assert_eq!(mode(&dir.join(".platform_inbound_secret")), 0o600);
    // The other member still waits with nothing.
    for other in members.iter().filter(|m| **m != id) {
        let files = names(&configs(&data, other));
        assert!(
            files.contains(".pool_secret") && !files.contains(".auth_token"),
            "{other}: {files:?}"
        );
    }
}

// ---- 6. Two servers, one member --------------------------------------------------------------

#[tokio::test]
async fn two_servers_on_one_postgres_race_for_the_last_member() {
    let url = fresh_database_named("pool_race").await;
    let root = tempfile::tempdir().expect("tempdir");
    let args = [
        "--database-url",
        url.as_str(),
        "--secret-keys",
        KEYS,
        "--warm-pool",
        "echo=1",
    ];
    let data_a = root.path().join("a");
    let a = Server::start_release(&data_a, &args).await;
    // The first server leads the sweeps, and so keeps the pool.
    wait_for("the first server to lead", WAIT, || async {
        if a.log_text().contains("leading the background sweeps") {
            Ok(())
        } else {
            Err("not leading yet".to_owned())
        }
    })
    .await;
    let members = full_pool(&a, &data_a, 1).await;
    let _leftovers = KillLeftovers(members.iter().cloned().collect());
    let member = members.first().expect("one member").clone();
    let data_b = root.path().join("b");
    let b = Server::start_release(&data_b, &args).await;
    // The second server sees the same member in the shared store, and starts none of its own.
    let pool_b = echo_pool(&b).await;
    assert_eq!(pool_b["ready"], 1, "{pool_b}");
    assert!(
        waiting_members(&data_b).is_empty(),
        "the follower started members:\n{}",
        b.log_text()
    );

    let (via_a, via_b) = tokio::join!(
        create(&a, json!({"name": "via-a", "template": "echo"})),
        create(&b, json!({"name": "via-b", "template": "echo"})),
    );
    let _both = KillLeftovers(vec![via_a.clone(), via_b.clone()]);
    assert_ne!(via_a, via_b);
    assert_eq!(
        [&via_a, &via_b].iter().filter(|id| ***id == member).count(),
        1,
        "{via_a} and {via_b} against the member {member}\n--- a ---\n{}\n--- b ---\n{}",
        a.log_text(),
        b.log_text()
    );
    a.wait_status(&via_a, "online", WAIT).await;
    b.wait_status(&via_b, "online", WAIT).await;
    let (pa, pb) = (echo_pool(&a).await, echo_pool(&b).await);
    let sum = |k: &str| pa[k].as_u64().unwrap_or(99) + pb[k].as_u64().unwrap_or(99);
    assert_eq!((sum("claims"), sum("misses")), (1, 1), "a: {pa}; b: {pb}");
    // The server that took the member counted the claim, the other the miss.
    let (claimer, other) = if via_a == member {
        (&pa, &pb)
    } else {
        (&pb, &pa)
    };
    assert_eq!(
        (&claimer["claims"], &other["misses"]),
        (&json!(1), &json!(1))
    );
}

// ---- 7. A clean stop drains the pool ---------------------------------------------------------

#[tokio::test]
async fn shutdown_drains_the_pool() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let mut server = Server::start_release(&data, &["--warm-pool", "echo=2"]).await;
    let members = full_pool(&server, &data, 2).await;
    let _leftovers = KillLeftovers(members.iter().cloned().collect());
    let status = server.stop().await;
    assert!(status.success(), "{status}: {}", server.log_text());
    for id in &members {
        assert!(agents_of(id).is_empty(), "member {id} outlived the server");
        // Drained (stopped and removed), not merely stopped with the server's other agents.
        assert!(
            !agent_dir(&data, id).exists(),
            "member {id} left {}\n{}",
            agent_dir(&data, id).display(),
            server.log_text()
        );
    }
    assert!(
        server.log_text().contains("warm pools drained"),
        "{}",
        server.log_text()
    );
}
