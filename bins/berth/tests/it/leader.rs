//! Two instances sharing one PostgreSQL: exactly one runs the background sweeps, and the other
//! takes over when the leader goes away.

use std::time::Duration;

use sqlx::Connection as _;

use crate::server::{Server, wait_for};

async fn fresh_database() -> String {
    fresh_database_named("leader").await
}

pub(crate) async fn fresh_database_named(tag: &str) -> String {
    let admin = std::env::var("BERTH_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("BERTH_TEST_PG_URL is not set: run the tests with `cargo xtask test`, which starts a throwaway PostgreSQL")
    });
    let name = format!("berth_{tag}_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut conn)
    .await
    .expect("drop");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create");
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(b, _)| b)
        .to_owned();
    format!("{base}/{name}")
}

const LEADING: &str = "leading the background sweeps";

#[tokio::test]
async fn one_leader_runs_the_sweeps_and_a_follower_takes_over() {
    let url = fresh_database().await;
    let root = tempfile::tempdir().expect("tempdir");
    // All instances of one deployment share the key ring.
    let keys = "k1:MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
    let args = [
        "--database-url",
        url.as_str(),
        "--secret-keys",
        keys,
        "--provisioner",
        "none",
    ];
    let mut first = Server::start(&root.path().join("a"), &args).await;
    wait_for(
        "the first instance to lead",
        Duration::from_secs(30),
        || async {
            if first.log_text().contains(LEADING) {
                Ok(())
            } else {
                Err(first.log_text())
            }
        },
    )
    .await;
    let second = Server::start(&root.path().join("b"), &args).await;
    // The second instance serves requests but does not lead while the first holds the lock.
    let (status, list) = second
        .call(
            reqwest::Method::GET,
            "/workspaces",
            Some(second.admin_token.as_str()),
            None,
        )
        .await;
    assert_eq!((status, list), (200, serde_json::json!([])));
    assert!(
        !second.log_text().contains(LEADING),
        "two leaders:\n{}",
        second.log_text()
    );
    assert!(first.stop().await.success());
    wait_for(
        "the second instance to take over",
        Duration::from_secs(45),
        || async {
            if second.log_text().contains(LEADING) {
                Ok(())
            } else {
                Err("still following".to_owned())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn events_recorded_by_one_instance_reach_the_subscribers_of_another() {
    let url = fresh_database_named("fanout").await;
    let root = tempfile::tempdir().expect("tempdir");
    let keys = "k1:MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
    let args = [
        "--database-url",
        url.as_str(),
        "--secret-keys",
        keys,
        "--provisioner",
        "none",
    ];
    let a = Server::start(&root.path().join("a"), &args).await;
    let b = Server::start(&root.path().join("b"), &args).await;
    let (status, created) = a
        .admin_post(
            "/workspaces",
            &serde_json::json!({"name": "remote", "external": true}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let token = created["connection"]["auth_token"]
        .as_str()
        .expect("token")
        .to_owned();

    // Subscribe on B, from the start of the log.
    let mut stream = b
        .http
        .get(format!("{}/workspaces/{id}/events/stream", b.base))
        .bearer_auth(&b.admin_token)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .expect("subscribe");
    assert_eq!(stream.status(), 200);
    // A records a new event after B subscribed: the agent registers through A.
    let register =
        serde_json::json!({"id": id, "agent_card": {"name": "x"}, "delivery_mode": "poll"});
    let (status, body) = a.agent_post("/registry/register", &token, &register).await;
    assert_eq!(status, 200, "{body}");

    let mut seen = String::new();
    let want = [
        "WORKSPACE_PROVISIONING",
        "WORKSPACE_AWAITING_AGENT",
        "WORKSPACE_ONLINE",
    ];
    let read = async {
        while !want.iter().all(|w| seen.contains(w)) {
            match stream.chunk().await.expect("stream") {
                Some(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                None => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
    let positions: Vec<Option<usize>> = want.iter().map(|w| seen.find(w)).collect();
    assert!(
        positions.iter().all(Option::is_some),
        "B's subscriber missed events recorded by A:\n{seen}"
    );
    assert!(
        positions.windows(2).all(|p| p[0] < p[1]),
        "events out of order:\n{seen}"
    );
}
