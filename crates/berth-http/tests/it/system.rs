//! `/health`, `/buildinfo`, the JSON 404 fallback and the request body limit.

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::{Db, GIT_SHA, Setup, app};

#[tokio::test]
async fn health_and_buildinfo_are_open() {
    let app = app().await;
    let resp = app.get_anon("/health").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json, json!({"status": "ok"}));
    let resp = app.get_anon("/buildinfo").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json["git_sha"], GIT_SHA);
    assert!(resp.json["version"].is_string());
}

#[tokio::test]
async fn health_reports_an_unreachable_database() {
    let app = app().await;
    let Db::Sqlite(store) = &app.db else {
        unreachable!("the default app runs on SQLite")
    };
    store.pool().close().await;
    let resp = app.get_anon("/health").await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.json, json!({"status": "unavailable"}));
}

/// A TCP relay between the app and the test's PostgreSQL, which the test can take down: the
/// listening port closes (new connections are refused, as with a stopped server) and every
/// relayed connection is cut.
struct Relay {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let task = tokio::spawn(async move {
            // Dropped with this task: aborting it cuts every relayed connection.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                conns.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Relay { addr, task }
    }

    /// Closes the port and cuts every connection, as a PostgreSQL that went down.
    async fn take_down(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// `/health` while PostgreSQL is unreachable: 503, and each answer within a few seconds. The
/// check is bounded (1.5 s); unbounded, it waited out the pool's 10 s acquire timeout while the
/// pool retried refused connects.
#[tokio::test]
async fn health_answers_503_promptly_while_postgres_is_unreachable() {
    let url = crate::helpers::fresh_pg_database().await;
    // postgres://user@host:port/db: relay host:port.
    let (scheme_user, rest) = url.split_once('@').expect("a user in the test URL");
    let (upstream, db) = rest.split_once('/').expect("a database in the test URL");
    let relay = Relay::start(upstream.to_owned()).await;
    let app = Setup {
        postgres: true,
        postgres_url: Some(format!("{scheme_user}@{}/{db}", relay.addr)),
        ..Setup::default()
    }
    .start()
    .await;
    let resp = app.get_anon("/health").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);

    relay.take_down().await;
    // Several calls: the first ones may meet pooled connections that fail at once; once the
    // pool is empty every call waits on connects that are refused.
    for n in 0..6 {
        let resp = tokio::time::timeout(std::time::Duration::from_secs(5), app.get_anon("/health"))
            .await
            .unwrap_or_else(|_| panic!("/health call {n} took longer than 5 s"));
        assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE, "call {n}");
        assert_eq!(resp.json, json!({"status": "unavailable"}), "call {n}");
    }
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let app = app().await;
    // (`/` is the console's page.)
    for uri in ["/nope", "/workspaces/a/b/c", "/console/nope", "/consolex"] {
        let resp = app.get_anon(uri).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(resp.json, json!({"error": "not found"}), "{uri}");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = Setup {
        body_limit: 256,
        ..Setup::default()
    }
    .start()
    .await;
    let big = json!({"name": "x", "model": "openai/gpt-4o", "role": "r".repeat(300)});
    let resp = app.create(big).await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.json, json!({"error": "request body too large"}));
    app.assert_nothing_written("413").await;
    let small = json!({"name": "x", "model": "openai/gpt-4o", "role": "r".repeat(100)});
    assert_eq!(app.create(small).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn the_default_limit_is_one_mebibyte() {
    let app = app().await;
    let over = format!(
        "{{\"name\":\"x\",\"model\":\"openai/gpt-4o\",\"role\":\"{}\"}}",
        "r".repeat(berth_http::DEFAULT_BODY_LIMIT)
    );
    let resp = app.create_raw(over).await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.json, json!({"error": "request body too large"}));
    app.assert_nothing_written("1 MiB").await;
    // Just under the limit the body is read (and then refused for its 1000-byte role cap).
    let under = format!(
        "{{\"name\":\"x\",\"model\":\"openai/gpt-4o\",\"role\":\"{}\"}}",
        "r".repeat(berth_http::DEFAULT_BODY_LIMIT - 100)
    );
    let resp = app.create_raw(under).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, json!({"error": "invalid workspace fields"}));
}
