//! Warm pools on the Docker backend, against the real daemon and the locally built image
//! `berth-agent:test` (`cargo xtask image`): the release binary's `berth serve` with
//! `--warm-pool echo=2`. The members run at the default tier (3, off the host network: they
//! reach the server through its Docker bridge listener, and the server reaches them on their
//! published loopback port). A member's container holds no secret and no token until a create
//! claims it; the claimed container is the workspace's, and purge and a clean stop leave no
//! container or volume of this installation behind.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::docker::{DOCKER_SERVERS, docker, installation_of, require_image};
use crate::pool::echo_pool;
use crate::server::{Server, wait_for};

/// Bound of every wait on a container (never a timing assertion).
const WAIT: Duration = Duration::from_secs(90);

/// The running containers of `installation`, as `(container id, workspace id)`.
fn containers_of(installation: &str) -> Vec<(String, String)> {
    docker(&[
        "ps",
        "--no-trunc",
        "--filter",
        &format!("label=berth.installation={installation}"),
        "--format",
        "{{.ID}} {{.Label \"berth.workspace_id\"}}",
    ])
    .lines()
    .filter_map(|l| l.split_once(' '))
    .map(|(c, w)| (c.to_owned(), w.to_owned()))
    .collect()
}

/// Every container (running or not) and volume labelled with `installation`.
fn resources_of(installation: &str) -> (Vec<String>, Vec<String>) {
    let label = format!("label=berth.installation={installation}");
    let list = |args: &[&str]| -> Vec<String> {
        docker(args)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    (
        list(&["ps", "-aq", "--filter", &label]),
        list(&["volume", "ls", "-q", "--filter", &label]),
    )
}

/// The names in a container's `/configs`.
fn config_names(container: &str) -> BTreeSet<String> {
    docker(&["exec", container, "ls", "-a", "/configs"])
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The container's environment, one `KEY=value` a line.
fn container_env(container: &str) -> Vec<String> {
    docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        container,
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Removes every container and volume of one installation when the test ends, passing or not.
struct RemoveInstallation(String);

impl Drop for RemoveInstallation {
    fn drop(&mut self) {
        let label = format!("label=berth.installation={}", self.0);
        let script = format!(
            "docker ps -aq --filter {label} | xargs -r docker rm -f >/dev/null; \
             docker volume ls -q --filter {label} | xargs -r docker volume rm -f >/dev/null"
        );
        let _ = Command::new("sh").args(["-c", &script]).status();
    }
}

#[tokio::test]
async fn docker_warm_pool_claim_isolation_and_cleanup() {
    let _serial = DOCKER_SERVERS.lock().await;
    require_image();
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let docker_flags = [
        "--provisioner",
        "docker",
        "--docker-image",
        "echo=berth-agent:test",
    ];

    // A global secret first, so that a leak into a member would show.
    let value = format!("pool-probe-{}", uuid::Uuid::new_v4());
    let mut first = Server::start_release(&data, &docker_flags).await;
    let installation = installation_of(&first);
    let _cleanup = RemoveInstallation(installation.clone());
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

    let mut args = docker_flags.to_vec();
    args.extend(["--warm-pool", "echo=2"]);
    let mut server = Server::start_release(&data, &args).await;
    assert_eq!(installation_of(&server), installation);
    let members: Vec<(String, String)> = wait_for("two ready members", WAIT, || async {
        let pool = echo_pool(&server).await;
        let running = containers_of(&installation);
        if pool["ready"] == 2 && pool["starting"] == 0 && running.len() == 2 {
            Ok(running)
        } else {
            Err(format!("{pool}; containers {running:?}"))
        }
    })
    .await;
    assert_eq!(echo_pool(&server).await["backend"], "docker");
    for (container, id) in &members {
        let env = container_env(container);
        assert!(
            env.iter().any(|kv| *kv == format!("WORKSPACE_ID={id}")),
            "{env:?}"
        );
        assert!(
            !env.iter().any(|kv| kv.contains(&value)
                || kv.starts_with("POOL_PROBE=")
                || kv.starts_with("WORKSPACE_AUTH_TOKEN=")
                || kv.contains(&server.admin_token)),
            "member {id} holds a secret or a token: {env:?}"
        );
        let files = config_names(container);
        assert!(files.contains(".pool_secret"), "{id}: {files:?}");
        assert!(
            !files.contains(".auth_token") && !files.contains(".platform_inbound_secret"),
            "member {id} holds a workspace credential: {files:?}"
        );
    }

    let (status, created) = server
        .admin_post(
            "/workspaces",
            &json!({"name": "pooled", "template": "echo"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let container = members
        .iter()
        .find_map(|(c, m)| (*m == id).then(|| c.clone()))
        .unwrap_or_else(|| panic!("{id} is not a member of {members:?}\n{}", server.log_text()));
    let w = server.wait_status(&id, "online", WAIT).await;
    assert_eq!(w["runtime"], "echo");
    // The workspace runs in the member's container, now with its credentials.
    let running: Vec<(String, String)> = containers_of(&installation)
        .into_iter()
        .filter(|(_, w)| *w == id)
        .collect();
    assert_eq!(running, [(container.clone(), id.clone())]);
    let files = config_names(&container);
    assert!(files.contains(".auth_token"), "{files:?}");
    assert!(!files.contains(".pool_secret"), "{files:?}");
    let message = json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": {"message": {"role": "user", "messageId": "m-1",
                               "parts": [{"kind": "text", "text": "boxed"}]}}});
    let (status, reply) = server
        .call(
            Method::POST,
            &format!("/workspaces/{id}/a2a"),
            Some(&server.admin_token),
            Some(&message),
        )
        .await;
    assert_eq!(status, 200, "{reply}\n{}", server.log_text());
    assert_eq!(
        reply["result"]["parts"][0]["text"], "echo: boxed",
        "{reply}"
    );
    let pool = echo_pool(&server).await;
    assert_eq!(
        (&pool["claims"], &pool["misses"]),
        (&json!(1), &json!(0)),
        "{pool}"
    );

    // Purge: the workspace's container and volumes are gone, and the pool's are others.
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/workspaces/{id}?purge=true"),
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!((status, &body["status"]), (200, &json!("purged")), "{body}");
    let by_id = format!("label=berth.workspace_id={id}");
    assert_eq!(docker(&["ps", "-aq", "--filter", &by_id]), "");
    assert_eq!(docker(&["volume", "ls", "-q", "--filter", &by_id]), "");
    let refilled = wait_for("the pool to refill", WAIT, || async {
        let pool = echo_pool(&server).await;
        let running = containers_of(&installation);
        if pool["ready"] == 2 && pool["starting"] == 0 && running.len() == 2 {
            Ok(running)
        } else {
            Err(format!("{pool}; containers {running:?}"))
        }
    })
    .await;
    assert!(
        refilled.iter().all(|(_, m)| *m != id),
        "{refilled:?} holds the purged {id}"
    );

    // A clean stop drains the pool: nothing of this installation is left.
    let status = server.stop().await;
    assert!(status.success(), "{status}: {}", server.log_text());
    assert_eq!(
        resources_of(&installation),
        (Vec::new(), Vec::new()),
        "containers and volumes left after the stop\n{}",
        server.log_text()
    );
}
