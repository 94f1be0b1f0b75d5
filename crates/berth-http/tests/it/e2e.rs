//! End to end through a real socket: `berth_http::serve` on `127.0.0.1:0`, a minimal HTTP/1.1
//! client over `TcpStream`, and graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{ADMIN_TOKEN, app};

/// A parsed HTTP/1.1 response.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`, so the server ends the stream).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&Value>,
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header terminator");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let reply = Reply {
        status,
        headers,
        body: Value::Null,
    };
    let length: usize = reply
        .header("content-length")
        .expect("JSON responses carry Content-Length")
        .parse()
        .expect("numeric Content-Length");
    assert_eq!(body.len(), length, "body length");
    Reply {
        body: serde_json::from_str(body).expect("JSON body"),
        ..reply
    }
}

#[tokio::test]
async fn create_list_get_over_a_socket_then_shut_down() {
    let app = app().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(berth_http::serve(listener, app.router.clone(), async {
        stopped.await.ok();
    }));

    let health = http(addr, "GET", "/health", &[], None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body, json!({"status": "ok"}));

    // X-Forwarded-Host from an untrusted peer is ignored: the platform URL is the Host used.
    let created = http(
        addr,
        "POST",
        "/workspaces",
        &[
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "https"),
        ],
        Some(&json!({"name": "wire", "runtime": "external"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(
        created
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert_eq!(created.body["status"], "awaiting_agent");
    assert_eq!(
        created.body["connection"]["platform_url"],
        format!("http://{addr}")
    );

    let list = http(addr, "GET", "/workspaces", &[], None).await;
    assert_eq!(list.status, 200);
    let list = list.body.as_array().expect("array").clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["name"], "wire");

    let get = http(addr, "GET", &format!("/workspaces/{id}"), &[], None).await;
    assert_eq!(get.status, 200);
    assert_eq!(get.body["id"], id.as_str());
    assert_eq!(get.body["status"], "awaiting_agent");
    assert_eq!(get.body["last_outbound_at"], Value::Null);

    let missing = http(addr, "GET", "/nowhere", &[], None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body, json!({"error": "not found"}));

    stop.send(()).expect("server is waiting for shutdown");
    // A generous bound only so that a hang fails instead of blocking the suite.
    let result = tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .expect("serve returned after shutdown")
        .expect("serve task");
    assert!(result.is_ok(), "serve failed: {result:?}");
}
