//! A real berth for the client, from berth-testkit: the router served in-process on
//! `127.0.0.1:0` over SQLite (a tempdir) or a fresh PostgreSQL database, with the event tailer
//! running and the process backend starting the reference agent as this test binary (see
//! `agent_process` in `main.rs`). Loopback agent URLs are refused, as by the server binary
//! without `--dev`.

use berth_client::Client;
use berth_client::berth_api::workspaces::CreateWorkspace;
use berth_domain::WorkspaceId;
use berth_testkit::TestServer;

/// The admin token of every test server.
pub const ADMIN_TOKEN: &str = "client-test-admin-token";

/// Which store a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Whether this process is an agent a test server started (the process backend sets
/// `WORKSPACE_ID` and `BERTH_AGENT_PARENT_PID`, and clears everything else).
pub fn is_agent_process() -> bool {
    std::env::var_os("WORKSPACE_ID").is_some()
        && std::env::var_os("BERTH_AGENT_PARENT_PID").is_some()
}

/// The command that runs the reference agent: this test binary, running only `agent_process`.
fn agent_command() -> Vec<String> {
    let exe = std::env::current_exe().expect("the test binary's path");
    vec![
        exe.to_string_lossy().into_owned(),
        "agent_process".into(),
        "--exact".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
    ]
}

/// A running berth and an admin client of it.
pub struct Berth {
    /// A client with the admin token.
    pub client: Client,
    server: TestServer,
}

impl Berth {
    /// Starts a berth on `db`.
    pub async fn start(db: Db) -> Berth {
        let templates =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/templates");
        let mut builder = TestServer::builder()
            .templates_dir(templates)
            .process_runtime("echo", agent_command())
            .loopback_agents(false)
            .admin_token(ADMIN_TOKEN)
            // exec on the process backend runs on this host: these tests turn it on; a
            // `/configs` change's restart is kept out of the tests' way.
            .inside(berth_testkit::InsideConfig {
                process_shell: true,
                config_restart_delay: std::time::Duration::from_secs(600),
                ..berth_testkit::InsideConfig::default()
            });
        if db == Db::Postgres {
            builder = builder.postgres(pg_admin_url());
        }
        let server = builder.start().await.expect("start a test berth");
        Berth {
            client: server.client().clone(),
            server,
        }
    }

    /// What the agents of workspace `id` wrote (the process backend's log file).
    pub fn agent_log(&self, id: WorkspaceId) -> String {
        self.server.agent_log(id)
    }

    /// A client without a credential.
    pub fn anonymous(&self) -> Client {
        Client::new(self.server.url()).expect("client")
    }

    /// Creates an external workspace (no backend involved) named `name`.
    pub async fn external(&self, name: &str) -> WorkspaceId {
        self.client
            .create_workspace(&CreateWorkspace {
                name: name.into(),
                external: true,
                ..Default::default()
            })
            .await
            .expect("create an external workspace")
            .id
    }

    /// Stops the server and its agents.
    pub async fn stop(self) {
        self.server.shutdown().await.expect("stop the test berth");
    }
}

/// The admin URL of the test PostgreSQL, or a panic that says how to get one.
fn pg_admin_url() -> String {
    std::env::var("BERTH_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "BERTH_TEST_PG_URL is not set: run the tests with `cargo xtask test`, which starts a \
             throwaway PostgreSQL, or start one with `cargo xtask pg` and export the URL it prints"
        )
    })
}

/// Starts a berth on `db`, runs `test` against it, stops it.
pub async fn run(db: Db, test: impl AsyncFnOnce(&Berth)) {
    let berth = Berth::start(db).await;
    test(&berth).await;
    berth.stop().await;
}

/// For each `async fn name(&Berth)` named, a module `name` with a test on each store.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    $crate::harness::run($crate::harness::Db::Sqlite, super::$name).await;
                }
                #[tokio::test]
                async fn postgres() {
                    $crate::harness::run($crate::harness::Db::Postgres, super::$name).await;
                }
            }
        )*
    };
}
