//! A real berth for the client: the router wired as `bins/berth` wires it, over SQLite (a
//! tempdir) or a fresh PostgreSQL database, served on `127.0.0.1:0`, with the event tailer
//! running and the process backend starting the reference agent as this test binary (see
//! `agent_process` in `main.rs`).

use std::sync::Arc;
use std::time::Duration;

use berth_client::Client;
use berth_client::berth_api::workspaces::CreateWorkspace;
use berth_core::{CoreConfig, SystemResolver, TemplateCatalog, WorkspaceService};
use berth_domain::WorkspaceId;
use berth_domain::ssrf::SsrfPolicy;
use berth_http::{AdminAuth, AppState, HttpConfig};
use berth_provision::{ProcessConfig, ProcessProvisioner};
use berth_store::{KeyRing, PgStore, SqliteStore, WorkspaceStore};
use secrecy::SecretString;

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
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    process: Arc<ProcessProvisioner>,
    service: WorkspaceService,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Berth {
    /// Starts a berth on `db`.
    pub async fn start(db: Db) -> Berth {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = KeyRing::parse(&KeyRing::generate_line("test")).expect("key ring");
        let store: Arc<dyn WorkspaceStore> = match db {
            Db::Sqlite => Arc::new(
                SqliteStore::open(&dir.path().join("berth.db"), keys)
                    .await
                    .expect("open SQLite"),
            ),
            Db::Postgres => Arc::new(
                PgStore::connect(&fresh_pg_database().await, keys)
                    .await
                    .expect("connect to PostgreSQL"),
            ),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let base = format!("http://{addr}");
        let process = Arc::new(ProcessProvisioner::new(
            ProcessConfig::new(dir.path().join("workspaces")).with_command("echo", agent_command()),
        ));
        let templates =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/templates");
        let service = WorkspaceService::new(
            store,
            process.clone(),
            Arc::new(SystemResolver::default()),
            TemplateCatalog::load(&templates),
            CoreConfig {
                ssrf: SsrfPolicy {
                    allow_private: false,
                    allow_loopback: false,
                },
                agent_platform_url: base.clone(),
                ..CoreConfig::default()
            },
        );
        let state = AppState {
            service: service.clone(),
            admin: Arc::new(AdminAuth::new(
                &SecretString::from(ADMIN_TOKEN.to_owned()),
                false,
            )),
            config: Arc::new(HttpConfig {
                dev: false,
                platform_url: None,
                trusted_proxies: berth_http::TrustedProxies::default(),
                cors_origins: berth_http::CorsOrigins::default(),
                rate_limit: None,
                body_limit: berth_http::DEFAULT_BODY_LIMIT,
                metrics_open: false,
                git_sha: "test".into(),
            }),
        };
        service.spawn_event_tailer().await.expect("event tailer");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = berth_http::router(state);
        let server = tokio::spawn(async move {
            berth_http::serve(listener, router, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        let client = Client::new(&base).expect("client").with_token(ADMIN_TOKEN);
        Berth {
            client,
            base,
            process,
            service,
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }

    /// What the agents of workspace `id` wrote (the process backend's log file).
    pub fn agent_log(&self, id: WorkspaceId) -> String {
        std::fs::read_to_string(self.process.log_path(id)).unwrap_or_default()
    }

    /// A client without a credential.
    pub fn anonymous(&self) -> Client {
        Client::new(&self.base).expect("client")
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
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.service.drain()).await;
        self.process.shutdown().await;
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

/// An empty database on the test cluster; its URL.
async fn fresh_pg_database() -> String {
    use sqlx::Connection as _;
    let admin = pg_admin_url();
    let name = format!("berth_client_test_{}", uuid_simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to BERTH_TEST_PG_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create the test database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

fn uuid_simple() -> String {
    WorkspaceId::new_v4().to_string().replace('-', "")
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
