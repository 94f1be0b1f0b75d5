//! Two instances sharing one PostgreSQL: exactly one runs the background sweeps, and the other
//! takes over when the leader goes away.

use std::time::Duration;

use sqlx::Connection as _;

use crate::server::{Server, wait_for};

async fn fresh_database() -> String {
    let admin = std::env::var("BERTH_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("BERTH_TEST_PG_URL is not set: run the tests with `cargo xtask test`, which starts a throwaway PostgreSQL")
    });
    let name = format!("berth_leader_{}", std::process::id());
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
