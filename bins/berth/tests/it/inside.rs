//! Inside a workspace (issue #14) as a user meets it: the release binary, started the way the
//! README says (`berth serve`, default flags, the process backend running the demo agent), then
//! with `--process-shell` for exec and the terminal, then with the Docker provisioner against the
//! real daemon and the locally built image. The terminal is driven over a real WebSocket in both
//! of its protocols, and every session checks that its shell is gone after it ends.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::server::{Server, wait_for};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Server {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> (u16, Vec<u8>) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin_token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.bytes().await.expect("body").to_vec())
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let (status, bytes) = self
            .send(
                method,
                path,
                &[("content-type", "application/json")],
                body.map(|b| b.to_string().into_bytes()),
            )
            .await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn create_online(&self, body: Value) -> String {
        let (status, created) = self.admin_post("/workspaces", &body).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().expect("id").to_owned();
        self.wait_status(&id, "online", Duration::from_secs(90))
            .await;
        id
    }

    /// The terminal's upgrade request, with the admin bearer, offering `protocol` if given.
    fn terminal_request(
        &self,
        id: &str,
        query: &str,
        protocol: Option<&str>,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        let url = format!(
            "{}/workspaces/{id}/terminal{query}",
            self.base.replacen("http", "ws", 1)
        );
        let mut req = url.into_client_request().expect("request");
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", self.admin_token)).expect("header"),
        );
        if let Some(p) = protocol {
            req.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(p).expect("header"),
            );
        }
        req
    }

    /// The HTTP status a terminal upgrade is refused with (it must be refused).
    async fn terminal_refusal(&self, id: &str) -> u16 {
        match tokio_tungstenite::connect_async(self.terminal_request(id, "", None)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            other => panic!("the terminal must be refused before the upgrade: {other:?}"),
        }
    }

    /// A terminal WebSocket, with the admin bearer, offering `protocol` if given.
    async fn terminal(&self, id: &str, query: &str, protocol: Option<&str>) -> Socket {
        let req = self.terminal_request(id, query, protocol);
        let (socket, resp) = tokio_tungstenite::connect_async(req)
            .await
            .unwrap_or_else(|e| panic!("terminal upgrade: {e}"));
        let chosen = resp
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().expect("ascii").to_owned());
        assert_eq!(chosen.as_deref(), protocol, "the subprotocol is agreed");
        socket
    }
}

/// Reads the terminal until its output contains `needle`; returns everything read.
async fn read_until(socket: &mut Socket, needle: &str) -> String {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, socket.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {needle:?} in the terminal's output: {}",
                    String::from_utf8_lossy(&seen)
                )
            });
        match msg {
            Some(Ok(Message::Binary(b))) => seen.extend_from_slice(&b),
            Some(Ok(Message::Text(t))) => seen.extend_from_slice(t.as_bytes()),
            Some(Ok(_)) => {}
            other => panic!(
                "the terminal ended ({other:?}) before {needle:?}: {}",
                String::from_utf8_lossy(&seen)
            ),
        }
        let text = String::from_utf8_lossy(&seen);
        if text.contains(needle) {
            return text.into_owned();
        }
    }
}

/// Reads until the server closes; returns the control messages (text frames) and the close code.
async fn read_to_close(socket: &mut Socket) -> (Vec<Value>, Option<u16>) {
    let mut controls = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("the server closes the terminal")
        {
            Some(Ok(Message::Text(t))) => {
                controls.push(serde_json::from_str(&t).expect("control JSON"));
            }
            Some(Ok(Message::Close(frame))) => {
                return (controls, frame.map(|f| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return (controls, None),
        }
    }
}

fn pid_in(text: &str, marker: &str) -> u32 {
    let at = text.rfind(marker).expect("marker") + marker.len();
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("pid")
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// The README's server, default flags: the demo agent's files can be read and written (a
/// `/configs` change restarts it and survives the restart), binary files round-trip, and exec
/// and the terminal — a shell on the host with this backend — are refused until the operator
/// turns them on.
#[tokio::test]
async fn files_on_the_default_server() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start_release(&root.path().join("berth-data"), &[]).await;
    let id = server
        .create_online(json!({"name": "files", "template": "echo"}))
        .await;

    let (status, listing) = server
        .json(
            reqwest::Method::GET,
            &format!("/workspaces/{id}/files"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{listing}");
    assert!(
        listing
            .as_array()
            .expect("array")
            .iter()
            .any(|e| e["path"] == "config.yaml"),
        "{listing}"
    );

    let (status, saved) = server
        .json(
            reqwest::Method::PUT,
            &format!("/workspaces/{id}/files/system-prompt.md"),
            Some(&json!({"content": "Answer in haiku.\n"})),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["restart_scheduled"], true);

    // The agent is restarted to read it (the default delay is 5 s) and the file is still there.
    wait_for(
        "the restart after the configs change",
        Duration::from_secs(60),
        || {
            let server = &server;
            let id = id.clone();
            async move {
                let (_, events) = server
                    .json(reqwest::Method::GET, &format!("/events/{id}"), None)
                    .await;
                let starts = events.as_array().map_or(0, |e| {
                    e.iter()
                        .filter(|e| e["event_type"] == "WORKSPACE_PROVISIONING")
                        .count()
                });
                if starts >= 2 {
                    Ok(())
                } else {
                    Err(format!("{starts} starts"))
                }
            }
        },
    )
    .await;
    server
        .wait_status(&id, "online", Duration::from_secs(60))
        .await;
    let (status, read) = server
        .json(
            reqwest::Method::GET,
            &format!("/workspaces/{id}/files/system-prompt.md"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["content"], "Answer in haiku.\n");

    // Bytes in and out of /workspace, exactly.
    let blob: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let uri = format!("/workspaces/{id}/files/data/blob.bin?root=/workspace");
    let (status, body) = server
        .send(
            reqwest::Method::PUT,
            &uri,
            &[("content-type", "application/octet-stream")],
            Some(blob.clone()),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, back) = server
        .send(
            reqwest::Method::GET,
            &uri,
            &[("accept", "application/octet-stream")],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(back, blob);
    let (status, _) = server.json(reqwest::Method::DELETE, &uri, None).await;
    assert_eq!(status, 200);
    let (status, _) = server.json(reqwest::Method::GET, &uri, None).await;
    assert_eq!(status, 404);
    let (write, read) = ten_mib(&server, &id).await;
    eprintln!("figures (process backend, release): 10 MiB write {write:?}, read {read:?}");

    // exec and the terminal are a shell on this host with the process backend: off by default.
    let (status, refused) = server
        .json(
            reqwest::Method::POST,
            &format!("/workspaces/{id}/exec"),
            Some(&json!({"cmd": ["id"]})),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .expect("error")
            .contains("--process-shell")
    );
    assert_eq!(server.terminal_refusal(&id).await, 403);
}

/// With `--process-shell`: exec round trips, and the terminal in both protocols — a resize that
/// the shell sees, the exit status, the idle timeout, the session bound, and no shell left
/// behind when the client just goes away.
#[tokio::test]
async fn exec_and_terminal_with_the_process_shell() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start_release(
        &root.path().join("berth-data"),
        &[
            "--process-shell",
            "--terminal-idle-timeout-secs",
            "3",
            "--terminal-max-per-workspace",
            "2",
        ],
    )
    .await;
    let id = server
        .create_online(json!({"name": "shell", "template": "echo"}))
        .await;

    let started = Instant::now();
    let (status, out) = server
        .json(
            reqwest::Method::POST,
            &format!("/workspaces/{id}/exec"),
            Some(&json!({"cmd": ["true"]})),
        )
        .await;
    let exec_round_trip = started.elapsed();
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["exit_code"], 0);
    let (_, out) = server
        .json(
            reqwest::Method::POST,
            &format!("/workspaces/{id}/exec"),
            Some(&json!({"cmd": ["sh", "-c", "exit 4"]})),
        )
        .await;
    assert_eq!(out["exit_code"], 4);

    // berth.terminal.v1: bytes, a resize the shell sees, the exit status.
    let opened = Instant::now();
    let mut term = server
        .terminal(&id, "?rows=30&cols=100", Some("berth.terminal.v1"))
        .await;
    term.send(Message::Binary(
        b"stty size; echo BERTH-$((6*7))\n".to_vec().into(),
    ))
    .await
    .expect("send");
    let text = read_until(&mut term, "BERTH-42").await;
    let first_output = opened.elapsed();
    assert!(text.contains("30 100"), "the initial size: {text}");
    term.send(Message::Text(
        r#"{"type":"resize","rows":40,"cols":120}"#.into(),
    ))
    .await
    .expect("resize");
    term.send(Message::Binary(b"stty size\n".to_vec().into()))
        .await
        .expect("send");
    read_until(&mut term, "40 120").await;
    // A bad control message is answered, not fatal.
    term.send(Message::Text(
        r#"{"type":"resize","rows":0,"cols":5}"#.into(),
    ))
    .await
    .expect("send");
    let reply = read_until(&mut term, "\"type\":\"error\"").await;
    assert!(reply.contains("rows and cols"), "{reply}");
    term.send(Message::Binary(b"exit 7\n".to_vec().into()))
        .await
        .expect("send");
    let (controls, code) = read_to_close(&mut term).await;
    assert_eq!(
        controls.last(),
        Some(&json!({"type": "exit", "code": 7, "reason": "exit"})),
        "{controls:?}"
    );
    assert_eq!(code, Some(1000));

    // The reference's protocol: text frames are keystrokes, output comes as binary frames. A
    // client that just drops the connection leaves no shell (nor its children) behind.
    let mut legacy = server.terminal(&id, "", None).await;
    legacy
        .send(Message::Text(
            "sleep 300 & echo \"S\"\"HELL=$$ C\"\"HILD=$! E\"\"ND\"\n".into(),
        ))
        .await
        .expect("send");
    // The quotes keep the markers out of the echoed command line.
    let text = read_until(&mut legacy, "END").await;
    let shell = pid_in(&text, "SHELL=");
    let child = pid_in(&text, "CHILD=");
    assert!(alive(shell) && alive(child));
    drop(legacy);
    wait_for(
        "the dropped session's shell to go",
        Duration::from_secs(15),
        || async move {
            if alive(shell) || alive(child) {
                Err(format!(
                    "shell {shell} alive: {}, child {child} alive: {}",
                    alive(shell),
                    alive(child)
                ))
            } else {
                Ok(())
            }
        },
    )
    .await;

    // The idle timeout (3 s here) ends a session nobody types in, from its start.
    let mut idle = server.terminal(&id, "", Some("berth.terminal.v1")).await;
    let (controls, code) = read_to_close(&mut idle).await;
    assert_eq!(
        controls.last().map(|c| c["reason"].clone()),
        Some(json!("idle")),
        "{controls:?}"
    );
    assert_eq!(code, Some(1000));

    // At most two sessions per workspace.
    let _a = server.terminal(&id, "", Some("berth.terminal.v1")).await;
    let _b = server.terminal(&id, "", Some("berth.terminal.v1")).await;
    assert_eq!(server.terminal_refusal(&id).await, 429, "a third session");

    // Each session is on record: opened and closed, by whom, never what was typed.
    let (_, rows) = server
        .json(
            reqwest::Method::GET,
            &format!("/workspaces/{id}/activity?type=terminal&limit=50"),
            None,
        )
        .await;
    let rows = rows.as_array().expect("rows").clone();
    assert!(
        rows.iter()
            .any(|r| r["method"] == "close" && r["request_body"]["reason"] == "idle"),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r["method"] == "close" && r["request_body"]["exit_code"] == 7),
        "{rows:?}"
    );
    assert!(
        !serde_json::to_string(&rows)
            .expect("json")
            .contains("sleep 300")
    );
    eprintln!(
        "figures (process backend, release): exec `true` round trip {exec_round_trip:?}; terminal open to first output {first_output:?}"
    );
}

/// Writes and reads back 10 MiB under `/workspace` as bytes; the two durations.
async fn ten_mib(server: &Server, id: &str) -> (Duration, Duration) {
    let blob: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let uri = format!("/workspaces/{id}/files/big.bin?root=/workspace");
    let clock = Instant::now();
    let (status, body) = server
        .send(
            reqwest::Method::PUT,
            &uri,
            &[("content-type", "application/octet-stream")],
            Some(blob.clone()),
        )
        .await;
    let write = clock.elapsed();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let clock = Instant::now();
    let (status, back) = server
        .send(
            reqwest::Method::GET,
            &uri,
            &[("accept", "application/octet-stream")],
            None,
        )
        .await;
    let read = clock.elapsed();
    assert_eq!(status, 200);
    assert!(back == blob, "10 MiB come back exactly");
    (write, read)
}

/// The same from the Docker provisioner: files through the Engine's archive API (including a
/// symbolic link planted inside the container, refused), exec, the terminal with a resize, and
/// no shell left in the container after the client drops the connection.
#[tokio::test]
async fn files_exec_and_terminal_on_docker() {
    let _serial = crate::docker::DOCKER_SERVERS.lock().await;
    crate::docker::require_image();
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start_release(
        &root.path().join("berth-data"),
        &[
            "--provisioner",
            "docker",
            "--docker-image",
            "echo=berth-agent:test",
        ],
    )
    .await;
    let id = server
        .create_online(json!({"name": "boxed", "template": "echo", "tier": 4}))
        .await;
    let container = format!("berth-ws-{id}");

    let (status, saved) = server
        .json(
            reqwest::Method::PUT,
            &format!("/workspaces/{id}/files/notes/today.md?root=/workspace"),
            Some(&json!({"content": "  spaced  \n"})),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    let (status, read) = server
        .json(
            reqwest::Method::GET,
            &format!("/workspaces/{id}/files/notes/today.md?root=/workspace"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["content"], "  spaced  \n", "nothing trimmed");
    let (status, listing) = server
        .json(
            reqwest::Method::GET,
            &format!("/workspaces/{id}/files?root=/workspace&depth=2"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{listing}");
    assert!(
        listing
            .as_array()
            .expect("array")
            .iter()
            .any(|e| e["path"] == "notes/today.md" && e["size"] == 11),
        "{listing}"
    );
    let blob: Vec<u8> = (0..=255u8).rev().cycle().take(50_000).collect();
    let uri = format!("/workspaces/{id}/files/blob.bin?root=/workspace");
    let (status, _) = server
        .send(
            reqwest::Method::PUT,
            &uri,
            &[("content-type", "application/octet-stream")],
            Some(blob.clone()),
        )
        .await;
    assert_eq!(status, 200);
    let (_, back) = server
        .send(
            reqwest::Method::GET,
            &uri,
            &[("accept", "application/octet-stream")],
            None,
        )
        .await;
    assert_eq!(back, blob);

    // exec inside the container, as the image's user, in /workspace.
    let (status, out) = server
        .json(
            reqwest::Method::POST,
            &format!("/workspaces/{id}/exec"),
            Some(&json!({"cmd": ["sh", "-c", "pwd; id -u; ln -s /etc /workspace/evil; exit 5"]})),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["exit_code"], 5, "{out}");
    assert_eq!(out["stdout"], "/workspace\n1000\n", "{out}");
    // The link it planted is refused for every verb.
    for (method, path) in [
        (reqwest::Method::GET, "evil/passwd?root=/workspace"),
        (reqwest::Method::PUT, "evil/x?root=/workspace"),
    ] {
        let (status, body) = server
            .json(
                method.clone(),
                &format!("/workspaces/{id}/files/{path}"),
                Some(&json!({"content": "x"})),
            )
            .await;
        assert_eq!(status, 400, "{method} {path}: {body}");
    }
    let (status, body) = server
        .json(
            reqwest::Method::GET,
            &format!("/workspaces/{id}/files?root=/workspace&path=evil"),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // The terminal: a resize the shell sees, then a dropped connection leaves no shell.
    let opened = Instant::now();
    let mut term = server.terminal(&id, "", Some("berth.terminal.v1")).await;
    term.send(Message::Text(
        r#"{"type":"resize","rows":40,"cols":120}"#.into(),
    ))
    .await
    .expect("resize");
    term.send(Message::Binary(
        b"stty size; echo E\"\"ND\n".to_vec().into(),
    ))
    .await
    .expect("send");
    let text = read_until(&mut term, "\nEND").await;
    let first_output = opened.elapsed();
    assert!(text.contains("40 120"), "{text}");
    let shells = || {
        crate::docker::docker(&["top", &container, "-o", "pid,args"])
            .lines()
            .skip(1)
            .filter(|l| l.contains("sh"))
            .count()
    };
    assert!(
        shells() >= 1,
        "the shell runs: {}",
        crate::docker::docker(&["top", &container])
    );
    drop(term);
    wait_for(
        "the dropped terminal's shell to go",
        Duration::from_secs(15),
        || async {
            match shells() {
                0 => Ok(()),
                n => Err(format!(
                    "{n} shells: {}",
                    crate::docker::docker(&["top", &container])
                )),
            }
        },
    )
    .await;
    let (write, read) = ten_mib(&server, &id).await;
    let started = Instant::now();
    let (status, out) = server
        .json(
            reqwest::Method::POST,
            &format!("/workspaces/{id}/exec"),
            Some(&json!({"cmd": ["true"]})),
        )
        .await;
    let exec_round_trip = started.elapsed();
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["exit_code"], 0);
    eprintln!(
        "figures (Docker, release): terminal open to first output {first_output:?}; 10 MiB write {write:?}, read {read:?}; exec `true` round trip {exec_round_trip:?}"
    );

    let (status, _) = server
        .json(
            reqwest::Method::DELETE,
            &format!("/workspaces/{id}?purge=true"),
            None,
        )
        .await;
    assert_eq!(status, 200);
}
