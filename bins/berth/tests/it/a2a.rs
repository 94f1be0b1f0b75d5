//! A2A between real agents: two `berth-agent` processes (the `echo` template under the process
//! provisioner) behind a real `berth serve --dev` (loopback agent URLs). A message from A to B is
//! delivered in push mode; a poll-mode target reads its inbox through `since_id`; a message to a
//! busy B is queued (202) and delivered when B's heartbeat reports free capacity; unrelated
//! workspaces are refused; a hibernated B is woken (503 + `Retry-After`) and then answers.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::server::{Server, wait_for};

/// Bound of every wait on an agent or the queue (never a timing assertion).
const WAIT: Duration = Duration::from_secs(60);

fn message(text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": text, "method": "message/send",
           "params": {"message": {"role": "user", "messageId": format!("m-{text}"),
                                  "parts": [{"kind": "text", "text": text}]}}})
}

/// Creates an `echo` workspace with `secrets` (the agent's environment) and waits until it is
/// online with its URL recorded.
async fn echo_agent(server: &Server, name: &str, secrets: Value) -> String {
    let (status, created) = server
        .admin_post(
            "/workspaces",
            &json!({"name": name, "template": "echo", "secrets": secrets}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    wait_online_with_url(server, &id).await;
    id
}

async fn wait_online_with_url(server: &Server, id: &str) -> Value {
    wait_for(&format!("{id} online with a URL"), WAIT, || async {
        let w = server.workspace(id).await;
        if w["status"] == "failed" {
            panic!("workspace failed: {w}\n{}", server.log_text());
        }
        if w["status"] == "online" && w["url"].as_str().is_some_and(|u| !u.is_empty()) {
            Ok(w)
        } else {
            Err(w.to_string())
        }
    })
    .await
}

async fn mint(server: &Server, id: &str) -> String {
    let (status, body) = server
        .admin_post(&format!("/admin/workspaces/{id}/tokens"), &json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    body["auth_token"].as_str().expect("auth_token").to_owned()
}

/// `POST /workspaces/{target}/a2a` with `token`: status, `Retry-After`, JSON body.
async fn send(
    server: &Server,
    target: &str,
    token: &str,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let resp = server
        .http
        .post(format!("{}/workspaces/{target}/a2a", server.base))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("a2a request");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.expect("body");
    (
        status,
        retry,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

async fn wait_idle(server: &Server, id: &str) {
    wait_for(
        &format!("{id} to report no task in flight"),
        WAIT,
        || async {
            let w = server.workspace(id).await;
            if w["active_tasks"] == 0 {
                Ok(())
            } else {
                Err(w["active_tasks"].to_string())
            }
        },
    )
    .await;
}

fn reply_text(body: &Value) -> &str {
    body["result"]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn agents_talk_in_push_mode_through_the_busy_queue_and_after_a_wake() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&root.path().join("data"), &["--dev"]).await;
    let a = echo_agent(&server, "alpha", json!({"HEARTBEAT_INTERVAL_SECS": "1"})).await;
    // B handles one message at a time and each takes a while: a second one finds it busy.
    let b = echo_agent(
        &server,
        "beta",
        json!({"HEARTBEAT_INTERVAL_SECS": "1", "AGENT_MAX_CONCURRENCY": "1",
               "AGENT_REPLY_DELAY_MS": "5000"}),
    )
    .await;
    let a_token = mint(&server, &a).await;

    // Push: A → B, B's answer relayed; A's last_outbound_at recorded.
    let (status, _, body) = send(&server, &b, &a_token, &message("hello")).await;
    assert_eq!(status, 200, "{body}\n{}", server.log_text());
    assert_eq!(reply_text(&body), "echo: hello");
    assert!(server.workspace(&a).await["last_outbound_at"].is_string());

    // Busy: while B works on "first", "second" is queued and delivered once B frees up. B's
    // report of "hello" must be over first, so that the next report of a task is "first".
    wait_idle(&server, &b).await;
    let first = {
        let (server_base, token, b) = (server.base.clone(), a_token.clone(), b.clone());
        let http = server.http.clone();
        tokio::spawn(async move {
            http.post(format!("{server_base}/workspaces/{b}/a2a"))
                .bearer_auth(token)
                .json(&message("first"))
                .send()
                .await
                .expect("first")
                .json::<Value>()
                .await
                .expect("first body")
        })
    };
    wait_for("B to report the task in flight", WAIT, || async {
        let w = server.workspace(&b).await;
        if w["active_tasks"] == 1 {
            Ok(())
        } else {
            Err(w["active_tasks"].to_string())
        }
    })
    .await;
    let (status, _, queued) = send(&server, &b, &a_token, &message("second")).await;
    assert_eq!(status, 202, "{queued}\n{}", server.log_text());
    assert_eq!(queued["queued"], true);
    let queue_id = queued["queue_id"].as_str().expect("queue_id").to_owned();
    let first = first.await.expect("first task");
    assert_eq!(reply_text(&first), "echo: first", "{first}");
    let item = wait_for("the queued message to be delivered", WAIT, || async {
        let (status, item) = server
            .call(
                Method::GET,
                &format!("/workspaces/{a}/a2a/queue/{queue_id}"),
                Some(&a_token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{item}");
        match item["status"].as_str() {
            Some("completed") => Ok(item),
            Some("failed" | "dropped") => panic!("{item}\n{}", server.log_text()),
            _ => Err(item.to_string()),
        }
    })
    .await;
    assert_eq!(reply_text(&item["response_body"]), "echo: second", "{item}");

    // Unrelated workspaces (B is a root, C lives under another root) may not talk.
    let (status, x) = server
        .admin_post("/workspaces", &json!({"name": "x", "runtime": "external"}))
        .await;
    assert_eq!(status, 201, "{x}");
    let (status, c) = server
        .admin_post(
            "/workspaces",
            &json!({"name": "c", "runtime": "external", "parent_id": x["id"]}),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    let c_token = mint(&server, c["id"].as_str().expect("id")).await;
    let (status, _, denied) = send(&server, &b, &c_token, &message("intruder")).await;
    assert_eq!(status, 403, "{denied}");
    assert_eq!(
        denied["error"],
        "access denied: workspaces cannot communicate per hierarchy rules"
    );

    // Hibernated: the first message wakes B (503, Retry-After); after the wake it is answered.
    wait_idle(&server, &b).await;
    let (status, body) = server
        .admin_post(&format!("/workspaces/{b}/hibernate"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    server.wait_status(&b, "hibernated", WAIT).await;
    let (status, retry, waking) = send(&server, &b, &a_token, &message("wake up")).await;
    assert_eq!(status, 503, "{waking}");
    assert_eq!(retry.as_deref(), Some("15"));
    assert_eq!(waking["waking"], true);
    wait_online_with_url(&server, &b).await;
    let (status, _, body) = send(&server, &b, &a_token, &message("good morning")).await;
    assert_eq!(status, 200, "{body}\n{}", server.log_text());
    assert_eq!(reply_text(&body), "echo: good morning");
}

#[tokio::test]
async fn a_poll_mode_target_reads_an_agents_messages_through_since_id() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&root.path().join("data"), &["--dev"]).await;
    let a = echo_agent(&server, "alpha", json!({})).await;
    let a_token = mint(&server, &a).await;
    let (status, inbox) = server
        .admin_post(
            "/workspaces",
            &json!({"name": "inbox", "runtime": "external", "delivery_mode": "poll"}),
        )
        .await;
    assert_eq!(status, 201, "{inbox}");
    let b = inbox["id"].as_str().expect("id").to_owned();
    let b_token = mint(&server, &b).await;

    let (status, _, body) = send(&server, &b, &a_token, &message("one")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "queued", "delivery_mode": "poll", "method": "message/send"})
    );
    let (status, rows) = server
        .call(
            Method::GET,
            &format!("/workspaces/{b}/activity?type=a2a_receive"),
            Some(&b_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rows}");
    let cursor = rows[0]["id"].as_str().expect("row id").to_owned();
    assert_eq!(rows[0]["source_id"], a.as_str());

    for text in ["two", "three"] {
        let (status, _, body) = send(&server, &b, &a_token, &message(text)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, page) = server
        .call(
            Method::GET,
            &format!("/workspaces/{b}/activity?since_id={cursor}"),
            Some(&b_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let texts: Vec<&str> = page
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            r["request_body"]["params"]["message"]["parts"][0]["text"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(texts, ["two", "three"]);
}
