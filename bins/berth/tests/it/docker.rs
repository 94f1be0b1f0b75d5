//! The server with the Docker provisioner, against the real daemon and the locally built image
//! `berth-agent:test` (`cargo xtask image`; `cargo xtask test` builds it). The workspace runs at
//! tier 4 (host network), so the agent inside reaches the server on loopback.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::server::{Server, wait_for};

/// Serialises the tests of this file that run agents. They were serialised because every
/// `berth serve` with the Docker provisioner purged, at start, the berth-managed containers its
/// own database did not know, taking those of a server another test ran at the same time; the
/// sweep now only touches containers labelled with the server's own installation id
/// (`docker_orphan_sweep_takes_only_this_installations_orphans` runs beside them on purpose).
/// They stay serialised for the load: each runs tier-4 agents (4 CPUs, host network) and
/// times graceful stops, on a machine of two cores.
pub(crate) static DOCKER_SERVERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub(crate) fn require_image() {
    let ok = Command::new("docker")
        .args(["image", "inspect", "berth-agent:test"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the image berth-agent:test is missing: run `cargo xtask image` (or `cargo xtask test`)"
    );
}

#[tokio::test]
async fn docker_workspace_comes_online_is_revived_after_a_kill_and_is_purged() {
    let _serial = DOCKER_SERVERS.lock().await;
    require_image();
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        &root.path().join("data"),
        &[
            "--provisioner",
            "docker",
            "--docker-image",
            "echo=berth-agent:test",
            "--sweep-interval-secs",
            "1",
        ],
    )
    .await;
    let (status, created) = server
        .admin_post(
            "/workspaces",
            &json!({"name": "boxed", "template": "echo", "tier": 4}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let label = format!("label=berth.workspace_id={id}");
    let w = server
        .wait_status(&id, "online", Duration::from_secs(60))
        .await;
    assert_eq!(w["runtime"], "echo");
    let container = docker(&["ps", "-q", "--filter", &label]);
    assert!(!container.is_empty(), "no running container for {id}");
    assert_eq!(
        docker(&["inspect", "-f", "{{.Name}}", &container]),
        format!("/berth-ws-{id}")
    );
    let env = docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &container,
    ]);
    assert!(
        env.lines().any(|l| l == format!("WORKSPACE_ID={id}")),
        "{env}"
    );
    assert!(
        !env.contains("ADMIN_TOKEN"),
        "the admin credential reached a workspace: {env}"
    );

    // Killed behind the server's back: the health sweep notices and the coalesced restart
    // brings a new container online.
    docker(&["kill", &container]);
    wait_for(
        "the restart to replace the container",
        Duration::from_secs(60),
        || async {
            let now = docker(&["ps", "-q", "--filter", &label]);
            let w = server.workspace(&id).await;
            if !now.is_empty() && now != container && w["status"] == "online" {
                Ok(())
            } else {
                Err(format!("container {now:?}, workspace {w}"))
            }
        },
    )
    .await;
    let (status, _) = server
        .call(
            reqwest::Method::GET,
            "/events",
            Some(server.admin_token.as_str()),
            None,
        )
        .await;
    assert_eq!(status, 200);

    // Purge removes every container and volume of the workspace.
    let (status, body) = server
        .call(
            reqwest::Method::DELETE,
            &format!("/workspaces/{id}?purge=true"),
            Some(server.admin_token.as_str()),
            None,
        )
        .await;
    assert_eq!(
        (status, body["status"].clone()),
        (200, json!("purged")),
        "{body}"
    );
    assert_eq!(docker(&["ps", "-aq", "--filter", &label]), "");
    assert_eq!(docker(&["volume", "ls", "-q", "--filter", &label]), "");
}

// ---- Lifecycle operations on Docker (issue #5) -------------------------------------------

/// `berth serve` with the Docker provisioner and the test image as the `echo` runtime.
async fn docker_server(root: &std::path::Path) -> Server {
    require_image();
    Server::start(
        &root.join("data"),
        &[
            "--provisioner",
            "docker",
            "--docker-image",
            "echo=berth-agent:test",
        ],
    )
    .await
}

/// Creates an `echo` workspace at tier 4 (host network: the agent reaches the server on
/// loopback) under `parent`, and waits until its agent registered.
async fn online_workspace(server: &Server, name: &str, parent: Option<&str>) -> String {
    let mut body = json!({"name": name, "template": "echo", "tier": 4});
    if let Some(p) = parent {
        body["parent_id"] = json!(p);
    }
    let (status, created) = server.admin_post("/workspaces", &body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    server
        .wait_status(&id, "online", Duration::from_secs(90))
        .await;
    id
}

fn label(id: &str) -> String {
    format!("label=berth.workspace_id={id}")
}

/// Ids of the workspace's containers, running or not (`all`), through the Docker API.
fn containers(id: &str, all: bool) -> Vec<String> {
    let mut args = vec!["ps", "-q", "--no-trunc"];
    if all {
        args.push("-a");
    }
    let label = label(id);
    args.extend(["--filter", &label]);
    docker(&args)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Names of the workspace's volumes.
fn volumes(id: &str) -> Vec<String> {
    let mut v: Vec<String> = docker(&["volume", "ls", "-q", "--filter", &label(id)])
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

/// The daemon's clock, as `docker events` reads `--since`/`--until`.
fn docker_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    format!("{secs:.3}")
}

/// The daemon's container events of one workspace between `since` and now, as
/// `(action, container id, attributes)`.
fn container_events(id: &str, since: &str) -> Vec<(String, String, serde_json::Value)> {
    let until = docker_now();
    docker(&[
        "events",
        "--since",
        since,
        "--until",
        &until,
        "--filter",
        "type=container",
        "--filter",
        &label(id),
        "--format",
        "{{json .}}",
    ])
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).expect("event json");
        (
            v["Action"].as_str().unwrap_or_default().to_owned(),
            v["Actor"]["ID"].as_str().unwrap_or_default().to_owned(),
            v["Actor"]["Attributes"].clone(),
        )
    })
    .collect()
}

async fn admin_call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
) -> (u16, serde_json::Value) {
    server
        .call(method, path, Some(server.admin_token.as_str()), None)
        .await
}

/// `DELETE /workspaces/{id}?purge=true` as admin; must answer 200. Returns the body.
async fn purge(server: &Server, id: &str) -> serde_json::Value {
    let (status, body) = admin_call(
        server,
        reqwest::Method::DELETE,
        &format!("/workspaces/{id}?purge=true"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `GET /workspaces/{id}/state` as admin.
async fn state(server: &Server, id: &str) -> (u16, serde_json::Value) {
    admin_call(
        server,
        reqwest::Method::GET,
        &format!("/workspaces/{id}/state"),
    )
    .await
}

#[tokio::test]
async fn docker_delete_cascades_over_three_levels_and_purge_leaves_no_row_container_or_volume() {
    let _serial = DOCKER_SERVERS.lock().await;
    let root = tempfile::tempdir().expect("tempdir");
    let server = docker_server(root.path()).await;
    let p = online_workspace(&server, "parent", None).await;
    let c = online_workspace(&server, "child", Some(&p)).await;
    let g = online_workspace(&server, "grandchild", Some(&c)).await;
    let all = [p.clone(), c.clone(), g.clone()];
    for id in &all {
        assert_eq!(
            containers(id, false).len(),
            1,
            "{id} runs one container\n{}",
            server.log_text()
        );
    }

    // Unconfirmed: the 409 names the direct child, and nothing is stopped.
    let (status, body) = admin_call(
        &server,
        reqwest::Method::DELETE,
        &format!("/workspaces/{p}"),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["children"],
        json!([{"id": c, "name": "child"}]),
        "{body}"
    );
    for id in &all {
        assert_eq!(containers(id, false).len(), 1, "{id} still runs");
        server.expect_status(id, "online").await;
    }

    // Confirmed: three levels removed, every container stopped; the volumes stay.
    let (status, body) = admin_call(
        &server,
        reqwest::Method::DELETE,
        &format!("/workspaces/{p}?confirm=true"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "removed", "cascade_deleted": 2}));
    for id in &all {
        let (status, body) = state(&server, id).await;
        assert_eq!(
            (status, body["status"].clone()),
            (404, json!("removed")),
            "{id}"
        );
        assert_eq!(
            containers(id, true),
            Vec::<String>::new(),
            "{id}: container left"
        );
        assert!(
            !volumes(id).is_empty(),
            "{id}: a delete without purge keeps the volumes"
        );
    }

    // Purge: no row, no container, no volume of any level.
    assert_eq!(purge(&server, &p).await["status"], "purged");
    for id in &all {
        let (status, body) = state(&server, id).await;
        assert_eq!(status, 404, "{id}: {body}");
        assert_eq!(body["deleted"], true, "{body}");
        assert!(
            body.get("status").is_none(),
            "{id}: the row is gone: {body}"
        );
        assert_eq!(
            containers(id, true),
            Vec::<String>::new(),
            "{id}: container left"
        );
        assert_eq!(volumes(id), Vec::<String>::new(), "{id}: volume left");
    }
}

#[tokio::test]
async fn docker_concurrent_restarts_coalesce_into_at_most_two_cycles_each_stopping_gracefully() {
    let _serial = DOCKER_SERVERS.lock().await;
    let root = tempfile::tempdir().expect("tempdir");
    let server = docker_server(root.path()).await;
    let id = online_workspace(&server, "restarted", None).await;
    let first = containers(&id, false);
    assert_eq!(first.len(), 1);
    let since = docker_now();

    const N: usize = 6;
    let path = format!("/workspaces/{id}/restart");
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..N {
        let http = server.http.clone();
        let url = format!("{}{path}", server.base);
        let token = server.admin_token.clone();
        requests.spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("restart");
            let status = resp.status().as_u16();
            let text = resp.text().await.expect("body");
            (
                status,
                serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default(),
            )
        });
    }
    while let Some(answer) = requests.join_next().await {
        let (status, body) = answer.expect("request task");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "provisioning", "{body}");
    }

    // Settled: online on the container started last. A coalesced second cycle may still be
    // on its way when the first one's agent registers, so the look is repeated until two in a
    // row agree (and a third cycle would show up in the count).
    let settled = || async {
        wait_for("the restarts to settle", Duration::from_secs(120), || {
            let id = id.clone();
            let first = first.clone();
            let since = since.clone();
            let server = &server;
            async move {
                let w = server.workspace(&id).await;
                let now = containers(&id, false);
                let starts: Vec<String> = container_events(&id, &since)
                    .into_iter()
                    .filter(|(action, _, _)| action == "start")
                    .map(|(_, container, _)| container)
                    .collect();
                assert_ne!(w["status"], "failed", "{}", server.log_text());
                let settled = w["status"] == "online"
                    && now.len() == 1
                    && now != first
                    && starts.last() == now.first();
                if settled {
                    Ok(starts)
                } else {
                    Err(format!(
                        "workspace {w}, containers {now:?}, starts {starts:?}"
                    ))
                }
            }
        })
        .await
    };
    let mut starts = settled().await;
    loop {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let again = settled().await;
        if again == starts {
            break;
        }
        starts = again;
    }
    assert!(
        (1..=2).contains(&starts.len()),
        "{N} concurrent restarts ran {} provisioning cycles: {starts:?}",
        starts.len()
    );
    server.expect_status(&id, "online").await;

    // Each replaced agent got SIGTERM and exited cleanly within the grace, never SIGKILL.
    let events = container_events(&id, &since);
    let mut stopped = first.clone();
    stopped.extend(starts[..starts.len() - 1].iter().cloned());
    for container in &stopped {
        let kills: Vec<String> = events
            .iter()
            .filter(|(a, c, _)| a == "kill" && c == container)
            .map(|(_, _, attrs)| attrs["signal"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(kills, ["15"], "signals sent to {container}: {events:?}");
        let exit: Vec<String> = events
            .iter()
            .filter(|(a, c, _)| a == "die" && c == container)
            .map(|(_, _, attrs)| attrs["exitCode"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(exit, ["0"], "exit of {container}: {events:?}");
    }

    purge(&server, &id).await;
    assert_eq!(containers(&id, true), Vec::<String>::new());
}

#[tokio::test]
async fn docker_hibernate_stops_the_container_and_wake_brings_the_agent_back_online() {
    let _serial = DOCKER_SERVERS.lock().await;
    let root = tempfile::tempdir().expect("tempdir");
    let server = docker_server(root.path()).await;
    let id = online_workspace(&server, "sleeper", None).await;
    let first = containers(&id, false);
    assert_eq!(first.len(), 1);
    let kept = volumes(&id);
    assert!(!kept.is_empty());

    let (status, body) = admin_call(
        &server,
        reqwest::Method::POST,
        &format!("/workspaces/{id}/hibernate"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    server.expect_status(&id, "hibernated").await;
    assert_eq!(
        containers(&id, true),
        Vec::<String>::new(),
        "hibernated yet running"
    );
    assert_eq!(volumes(&id), kept, "hibernation keeps the volumes");

    let since = docker_now();
    let (status, body) = admin_call(
        &server,
        reqwest::Method::POST,
        &format!("/workspaces/{id}/wake"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Online again means the new container's agent registered with the server.
    let w = server
        .wait_status(&id, "online", Duration::from_secs(90))
        .await;
    assert_eq!(w["runtime"], "echo");
    let now = containers(&id, false);
    assert_eq!(now.len(), 1);
    assert_ne!(now, first);
    let starts = container_events(&id, &since)
        .into_iter()
        .filter(|(a, _, _)| a == "start")
        .count();
    assert_eq!(starts, 1, "one wake, one start");
    let (status, events) =
        admin_call(&server, reqwest::Method::GET, &format!("/events/{id}")).await;
    assert_eq!(status, 200, "{events}");
    // Newest first.
    let mut events = events.as_array().expect("events array").clone();
    events.sort_by_key(|e| e["seq"].as_i64());
    let types: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .filter(|t| t.starts_with("WORKSPACE_") && *t != "WORKSPACE_HEARTBEAT")
        .collect();
    let tail = &types[types.len().saturating_sub(3)..];
    assert_eq!(
        tail,
        [
            "WORKSPACE_HIBERNATED",
            "WORKSPACE_PROVISIONING",
            "WORKSPACE_ONLINE"
        ],
        "{types:?}"
    );

    purge(&server, &id).await;
    assert_eq!(containers(&id, true), Vec::<String>::new());
    assert_eq!(volumes(&id), Vec::<String>::new());
}

// ---- Orphan sweep scope -------------------------------------------------------------------

/// The installation id a server logged at start (`store ready … installation=<id>`).
pub fn installation_of(server: &Server) -> String {
    let log = server.log_text();
    let at = log
        .find("installation=")
        .unwrap_or_else(|| panic!("no installation id in the log:\n{log}"));
    log[at + "installation=".len()..].chars().take(36).collect()
}

/// A stopped container and a configs volume for workspace `id`, named and labelled as berth
/// names and labels them, with `installation` as its installation label (none: as a berth from
/// before installation labels made them).
fn fake_workspace(id: &str, installation: Option<&str>) {
    let mut labels = vec![
        "berth.managed=true".to_owned(),
        format!("berth.workspace_id={id}"),
    ];
    if let Some(i) = installation {
        labels.push(format!("berth.installation={i}"));
    }
    let mut volume = vec!["volume", "create"];
    let mut container = vec!["create", "--name"];
    let name = format!("berth-ws-{id}");
    container.push(&name);
    for l in &labels {
        volume.extend(["--label", l.as_str()]);
        container.extend(["--label", l.as_str()]);
    }
    let volume_name = format!("berth-ws-{id}-configs");
    volume.push(&volume_name);
    container.push("berth-agent:test");
    docker(&volume);
    docker(&container);
}

/// Removes what [`fake_workspace`] made, if it is still there.
fn remove_fake(id: &str) {
    let _ = Command::new("docker")
        .args(["rm", "-f", &format!("berth-ws-{id}")])
        .output();
    let _ = Command::new("docker")
        .args(["volume", "rm", "-f", &format!("berth-ws-{id}-configs")])
        .output();
}

/// Two installations on one daemon: a server's orphan sweep (at start) removes the container
/// and volumes of a workspace its database does not know only when they carry its own
/// installation label; another installation's, and those of a berth from before the label, are
/// left alone (the latter named in a warning). Not serialised with the other tests of this
/// file: their servers' sweeps must not take each other's containers either.
#[tokio::test]
async fn docker_orphan_sweep_takes_only_this_installations_orphans() {
    let root = tempfile::tempdir().expect("tempdir");
    // The first start creates the installation id in the database; it is kept across restarts.
    let mut server = docker_server(root.path()).await;
    let installation = installation_of(&server);
    server.stop().await;

    let ours = uuid_like();
    let foreign = uuid_like();
    let unlabelled = uuid_like();
    let other_installation = uuid_like();
    fake_workspace(&ours, Some(&installation));
    fake_workspace(&foreign, Some(&other_installation));
    fake_workspace(&unlabelled, None);
    let cleanup = Cleanup(vec![ours.clone(), foreign.clone(), unlabelled.clone()]);

    let server = docker_server(root.path()).await;
    assert_eq!(installation_of(&server), installation);
    wait_for(
        "this installation's orphan purged",
        Duration::from_secs(60),
        || {
            let left = containers(&ours, true).len() + volumes(&ours).len();
            async move {
                if left == 0 {
                    Ok(())
                } else {
                    Err(format!("{left} resources left"))
                }
            }
        },
    )
    .await;
    for id in [&foreign, &unlabelled] {
        assert_eq!(containers(id, true).len(), 1, "{id}\n{}", server.log_text());
        assert_eq!(volumes(id), vec![format!("berth-ws-{id}-configs")]);
    }
    let log = server.log_text();
    assert!(
        log.contains(&format!("berth-ws-{unlabelled}")) && log.contains("left alone"),
        "the unlabelled container is named in a warning:\n{log}"
    );
    assert!(
        !log.contains(&format!("berth-ws-{foreign}")),
        "another installation's container is none of this server's business:\n{log}"
    );
    drop(cleanup);
}

/// A fresh random UUID, from the kernel (`/proc/sys/kernel/random/uuid`).
fn uuid_like() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("reading /proc/sys/kernel/random/uuid")
        .trim()
        .to_owned()
}

/// Removes the fake workspaces whatever the test's outcome.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in &self.0 {
            remove_fake(id);
        }
    }
}
