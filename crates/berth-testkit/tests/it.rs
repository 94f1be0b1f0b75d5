//! The test kit used as a test suite would use it, on both stores.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_api::workspaces::CreateWorkspace;
use berth_core::berth_provision::{
    BackendKind, Error as ProvisionError, ProvisionRequest, Provisioner, Started,
};
use berth_domain::WorkspaceId;
use berth_testkit::{FakeAgent, TestServer};
use secrecy::ExposeSecret as _;
use tokio::sync::Mutex;

fn pg_admin_url() -> String {
    std::env::var("BERTH_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "BERTH_TEST_PG_URL is not set: run the tests with `cargo xtask test`, which starts a \
             throwaway PostgreSQL, or point it at an admin URL of a PostgreSQL you own"
        )
    })
}

/// Polls `check` every 50 ms for up to 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn fake_agent_round_trip(server: &TestServer) {
    let agent = FakeAgent::connect(server, "shouter", |text| text.to_uppercase())
        .await
        .expect("fake agent");
    let client = server.client();
    let workspace = client.workspace(agent.workspace_id()).await.expect("get");
    assert_eq!(workspace.status.as_str(), "online");
    assert_eq!(
        workspace.url,
        agent.url(),
        "the registered URL is the agent's"
    );

    let reply = client
        .send_message(agent.workspace_id(), "hello there")
        .await
        .expect("message/send through the server");
    assert_eq!(
        berth_client::reply_text(&reply).as_deref(),
        Some("HELLO THERE")
    );
    assert_eq!(agent.received(), ["hello there"]);
}

#[tokio::test]
async fn sqlite_server_with_a_fake_agent() {
    let server = TestServer::start().await.expect("server");
    fake_agent_round_trip(&server).await;
    let dir = server.dir().to_path_buf();
    assert!(dir.join("berth.db").exists());
    server.shutdown().await.expect("shutdown");
    assert!(!dir.exists(), "the server's files are removed");
}

#[tokio::test]
async fn postgres_server_with_a_fake_agent_drops_its_database() {
    use sqlx::Connection as _;
    let admin = pg_admin_url();
    let server = TestServer::builder()
        .postgres(&admin)
        .start()
        .await
        .expect("server");
    fake_agent_round_trip(&server).await;

    let count_kit_databases = || async {
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect");
        sqlx::query_scalar::<_, String>(
            "SELECT datname FROM pg_database WHERE datname LIKE 'berth_testkit_%'",
        )
        .fetch_all(&mut conn)
        .await
        .expect("list databases")
    };
    let before = count_kit_databases().await;
    assert!(
        !before.is_empty(),
        "the server runs on a database of its own"
    );
    drop(server);
    let after = count_kit_databases().await;
    assert!(
        before.iter().any(|d| !after.contains(d)),
        "dropping the server drops its database: before {before:?}, after {after:?}"
    );
}

#[tokio::test]
async fn admin_routes_need_the_token() {
    let server = TestServer::start().await.expect("server");
    let anonymous = berth_client::Client::new(server.url()).expect("client");
    let err = anonymous
        .list_workspaces()
        .await
        .expect_err("no token, no list");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
    let wrong = anonymous.with_token("not-the-token");
    let err = wrong.list_workspaces().await.expect_err("wrong token");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
    assert!(
        server
            .client()
            .list_workspaces()
            .await
            .expect("admin")
            .is_empty()
    );
    assert_eq!(server.admin_token().len(), 64, "a random 32-byte hex token");
}

/// The caller's own provisioner: it "starts" a workspace by attaching a [`FakeAgent`] with the
/// token and the platform URL the core hands to every start.
#[derive(Default)]
struct FakeAgents {
    agents: Mutex<Vec<FakeAgent>>,
}

#[async_trait]
impl Provisioner for FakeAgents {
    fn kind(&self) -> BackendKind {
        BackendKind::ControlPlane
    }

    async fn start(&self, request: ProvisionRequest) -> Result<Started, ProvisionError> {
        let token = request
            .secret_files
            .iter()
            .find(|(name, _)| name == ".auth_token")
            .map(|(_, t)| t.expose_secret().to_owned())
            .ok_or_else(|| ProvisionError::StartFailed("no .auth_token".into()))?;
        let agent = FakeAgent::attach(
            &request.platform_url,
            request.workspace_id,
            &token,
            &request.name,
            |text| format!("provisioned says {text}"),
        )
        .await
        .map_err(|e| ProvisionError::StartFailed(e.to_string()))?;
        // A provisioned workspace's URL is the one its provisioner reports (an agent's own
        // claim is never stored for it).
        let url = agent.url().to_owned();
        self.agents.lock().await.push(agent);
        Ok(Started {
            url: Some(url),
            instance_id: Some(request.workspace_id.to_string()),
        })
    }

    async fn stop(&self, id: WorkspaceId) -> Result<(), ProvisionError> {
        self.agents.lock().await.retain(|a| a.workspace_id() != id);
        Ok(())
    }

    async fn is_running(&self, id: WorkspaceId) -> Result<bool, ProvisionError> {
        Ok(self
            .agents
            .lock()
            .await
            .iter()
            .any(|a| a.workspace_id() == id))
    }
}

#[tokio::test]
async fn the_callers_own_provisioner_runs_the_workspaces() {
    let agents = Arc::new(FakeAgents::default());
    let server = TestServer::builder()
        .template(
            "echo",
            "name: Echo\nruntime: echo\nruntime_config:\n  model: echo/v1\n",
        )
        .provisioner(agents.clone())
        .start()
        .await
        .expect("server");
    let client = server.client();
    let created = client
        .create_workspace(&CreateWorkspace {
            name: "provisioned".into(),
            template: "echo".into(),
            ..CreateWorkspace::default()
        })
        .await
        .expect("create");
    eventually("the workspace online", || async {
        client
            .workspace(created.id)
            .await
            .is_ok_and(|w| w.status.as_str() == "online")
    })
    .await;
    let reply = client
        .send_message(created.id, "hi")
        .await
        .expect("message/send");
    assert_eq!(
        berth_client::reply_text(&reply).as_deref(),
        Some("provisioned says hi")
    );
    assert_eq!(agents.agents.lock().await.len(), 1);
}

#[tokio::test]
async fn process_agents_are_stopped_when_the_server_is_dropped() {
    let server = TestServer::builder()
        .template(
            "sleeper",
            "name: Sleeper\nruntime: sleeper\nruntime_config:\n  model: echo/v1\n",
        )
        .process_runtime("sleeper", ["sleep", "300"])
        .start()
        .await
        .expect("server");
    let created = server
        .client()
        .create_workspace(&CreateWorkspace {
            name: "sleepy".into(),
            template: "sleeper".into(),
            ..CreateWorkspace::default()
        })
        .await
        .expect("create");
    let pid_file = server
        .dir()
        .join("workspaces")
        .join(created.id.to_string())
        .join("agent.pid");
    eventually("the agent's pid file", || {
        let pid_file = pid_file.clone();
        async move { pid_file.exists() }
    })
    .await;
    let text = std::fs::read_to_string(&pid_file).expect("pid file");
    let pid: i32 = text
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.trim().parse().ok())
        .expect("pid= line");
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists(), "the agent runs");
    // The start has returned once the workspace shows the URL the provisioner reported.
    let client = server.client();
    eventually("the provisioner's URL on the workspace", || async {
        client
            .workspace(created.id)
            .await
            .is_ok_and(|w| w.url.starts_with("http://127.0.0.1:"))
    })
    .await;

    drop(server);
    eventually("the agent to be gone", || {
        let proc_dir = proc_dir.clone();
        async move {
            // Gone, or a zombie not yet reaped by this process.
            std::fs::read_to_string(proc_dir.join("stat"))
                .map_or(true, |stat| stat.split_whitespace().nth(2) == Some("Z"))
        }
    })
    .await;
}
