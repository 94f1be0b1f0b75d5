//! [`TestServer`]: berth's core and HTTP API on a random loopback port, in this process.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_core::berth_provision::{NoBackend, ProcessConfig, ProcessProvisioner, Provisioner};
use berth_core::berth_store::{KeyRing, PgStore, SqliteStore, WorkspaceStore};
use berth_core::{CoreConfig, SystemResolver, TemplateCatalog, WorkspaceService};
use berth_domain::ssrf::SsrfPolicy;
use berth_http::{AdminAuth, AppState, HttpConfig};
use secrecy::SecretString;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Error, Result, io};

/// How long a process agent gets between SIGTERM and SIGKILL when the server goes (the binary's
/// default is 10 s; a test should not wait that long for an agent that ignores SIGTERM).
const PROCESS_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long [`TestServer::shutdown`] waits for the core's background work.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Which provisioner the server runs workspaces with.
enum Backend {
    /// None: every start fails with `NO_BACKEND`; external workspaces (and [`crate::FakeAgent`])
    /// need none.
    None,
    /// Local child processes, runtime name → command line.
    Process(HashMap<String, Vec<String>>),
    /// The caller's own.
    Custom(Arc<dyn Provisioner>),
}

/// How to build a [`TestServer`]; from [`TestServer::builder`].
pub struct Builder {
    postgres: Option<String>,
    backend: Backend,
    templates_dir: Option<PathBuf>,
    templates: Vec<(String, String)>,
    loopback_agents: bool,
    admin_token: Option<String>,
    inside: berth_core::InsideConfig,
}

impl Builder {
    /// Runs on PostgreSQL: `admin_url` is a URL of a role that may create databases; the kit
    /// creates a fresh database through it and drops it again when the server goes. Default:
    /// SQLite in the server's temporary directory.
    #[must_use]
    pub fn postgres(mut self, admin_url: impl Into<String>) -> Self {
        self.postgres = Some(admin_url.into());
        self
    }

    /// Runs agents of `runtime` as local child processes with this command line (program and
    /// arguments); may be called for several runtimes. Switches to the process provisioner.
    #[must_use]
    pub fn process_runtime<S: Into<String>>(
        mut self,
        runtime: impl Into<String>,
        argv: impl IntoIterator<Item = S>,
    ) -> Self {
        let argv = argv.into_iter().map(Into::into).collect();
        match &mut self.backend {
            Backend::Process(commands) => {
                commands.insert(runtime.into(), argv);
            }
            other => *other = Backend::Process(HashMap::from([(runtime.into(), argv)])),
        }
        self
    }

    /// Runs workspaces with the caller's own provisioner.
    #[must_use]
    pub fn provisioner(mut self, provisioner: Arc<dyn Provisioner>) -> Self {
        self.backend = Backend::Custom(provisioner);
        self
    }

    /// Loads the templates of an existing directory (one sub-directory with a `config.yaml`
    /// each) instead of the server's own temporary one; [`Builder::template`] then writes into
    /// this directory, so use one or the other.
    #[must_use]
    pub fn templates_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.templates_dir = Some(dir.into());
        self
    }

    /// Adds a template: `name` is its directory, `config_yaml` its `config.yaml`
    /// (e.g. `"name: Echo\nruntime: echo\nruntime_config:\n  model: echo/v1\n"`).
    #[must_use]
    pub fn template(mut self, name: impl Into<String>, config_yaml: impl Into<String>) -> Self {
        self.templates.push((name.into(), config_yaml.into()));
        self
    }

    /// Whether agents may live at loopback URLs (default `true`: a test's agents run on this
    /// machine; the server binary allows that only with `--dev`).
    #[must_use]
    pub fn loopback_agents(mut self, allowed: bool) -> Self {
        self.loopback_agents = allowed;
        self
    }

    /// The admin credential (default: a random one, see [`TestServer::admin_token`]).
    #[must_use]
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// The limits and switches of the files, exec and terminal routes (default:
    /// [`berth_core::InsideConfig::default`], with the process backend's shell off).
    #[must_use]
    pub fn inside(mut self, inside: berth_core::InsideConfig) -> Self {
        self.inside = inside;
        self
    }

    /// Opens the store, binds `127.0.0.1:0` and serves the API until the server is dropped.
    pub async fn start(self) -> Result<TestServer> {
        let dir = tempfile::tempdir().map_err(io("creating the temporary directory"))?;
        let templates = self
            .templates_dir
            .unwrap_or_else(|| dir.path().join("templates"));
        std::fs::create_dir_all(&templates).map_err(io("creating the templates directory"))?;
        for (name, manifest) in &self.templates {
            let at = templates.join(name);
            std::fs::create_dir_all(&at).map_err(io("creating a template"))?;
            std::fs::write(at.join("config.yaml"), manifest).map_err(io("writing a template"))?;
        }
        let keys = KeyRing::parse(&KeyRing::generate_line("testkit"))
            .map_err(|e| Error::Store(e.to_string()))?;
        let (store, database): (Arc<dyn WorkspaceStore>, Option<Database>) = match self.postgres {
            Some(admin) => {
                let database = Database::create(&admin).await?;
                let store = PgStore::connect(&database.url, keys)
                    .await
                    .map_err(|e| Error::Store(e.to_string()))?;
                (Arc::new(store), Some(database))
            }
            None => {
                let store = SqliteStore::open(&dir.path().join("berth.db"), keys)
                    .await
                    .map_err(|e| Error::Store(e.to_string()))?;
                (Arc::new(store), None)
            }
        };
        let mut processes = None;
        let provisioner: Arc<dyn Provisioner> = match self.backend {
            Backend::None => Arc::new(NoBackend),
            Backend::Custom(p) => p,
            Backend::Process(commands) => {
                let mut config = ProcessConfig::new(dir.path().join("workspaces"));
                config.commands = commands;
                config.stop_grace = PROCESS_STOP_GRACE;
                let p = Arc::new(ProcessProvisioner::new(config));
                processes = Some(p.clone());
                p
            }
        };

        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(io("binding a loopback port"))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the bound port"))?;
        let url = format!("http://{addr}");
        let core = CoreConfig {
            ssrf: SsrfPolicy {
                allow_private: false,
                allow_loopback: self.loopback_agents,
            },
            agent_platform_url: url.clone(),
            inside: self.inside.clone(),
            ..CoreConfig::default()
        };
        let service = WorkspaceService::new(
            store,
            provisioner,
            Arc::new(SystemResolver::default()),
            TemplateCatalog::load(&templates),
            core,
        );
        service
            .spawn_event_tailer()
            .await
            .map_err(|e| Error::Store(e.to_string()))?;
        let admin_token = match self.admin_token {
            Some(token) => token,
            None => random_token()?,
        };
        let state = AppState {
            service: service.clone(),
            admin: Arc::new(AdminAuth::new(
                &SecretString::from(admin_token.clone()),
                false,
            )),
            config: Arc::new(HttpConfig {
                platform_url: Some(url.clone()),
                // What `GET /buildinfo` reports.
                git_sha: "berth-testkit".into(),
                ..HttpConfig::default()
            }),
        };
        let (stop, mut stopped) = watch::channel(false);
        let router = berth_http::router(state);
        let serving = tokio::spawn(async move {
            let until = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = berth_http::serve(listener, router, until).await {
                tracing::error!(error = %e, "berth-testkit: the server failed");
            }
        });
        let client = berth_client::Client::new(&url)?.with_token(admin_token.clone());
        Ok(TestServer {
            url,
            addr,
            admin_token,
            client,
            service,
            stop,
            serving: Some(serving),
            processes,
            database,
            dir,
        })
    }
}

/// A real berth — the workspace core and the whole HTTP API, over a real store — serving on a
/// random loopback port inside the test's process, with the admin token and a ready
/// [`berth_client::Client`]. Dropping it stops the server, the agents it started and removes its
/// files (and its PostgreSQL database); [`TestServer::shutdown`] does the same and waits for it.
///
/// Build it inside a Tokio runtime (`#[tokio::test]`).
pub struct TestServer {
    url: String,
    addr: SocketAddr,
    admin_token: String,
    client: berth_client::Client,
    service: WorkspaceService,
    stop: watch::Sender<bool>,
    serving: Option<JoinHandle<()>>,
    /// The process provisioner, to stop its agents when the server goes.
    processes: Option<Arc<ProcessProvisioner>>,
    database: Option<Database>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("url", &self.url)
            .field("postgres", &self.database.is_some())
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// A server on SQLite with no provisioner (external workspaces and [`crate::FakeAgent`]s
    /// need none).
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    /// A [`Builder`] with SQLite, no provisioner, loopback agents allowed and a random admin
    /// token.
    pub fn builder() -> Builder {
        Builder {
            postgres: None,
            backend: Backend::None,
            templates_dir: None,
            templates: Vec::new(),
            loopback_agents: true,
            admin_token: None,
            inside: berth_core::InsideConfig::default(),
        }
    }

    /// The server's base URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A client of this server holding the admin token.
    pub fn client(&self) -> &berth_client::Client {
        &self.client
    }

    /// The workspace core behind the API, for what a test wants to drive without HTTP.
    pub fn service(&self) -> &WorkspaceService {
        &self.service
    }

    /// The server's temporary directory (the SQLite file, templates, process agents' files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the agent of workspace `id` wrote to its log, for a server with process agents
    /// (`""` when there is none).
    pub fn agent_log(&self, id: berth_domain::WorkspaceId) -> String {
        self.processes
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p.log_path(id)).ok())
            .unwrap_or_default()
    }

    /// Stops serving (in-flight requests finish), waits (up to 10 s) for the core's background
    /// work (starts in flight), stops the process agents, then drops the store's PostgreSQL
    /// database and the files.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        if let Some(serving) = self.serving.take() {
            let _ = serving.await;
        }
        let _ = tokio::time::timeout(SHUTDOWN_DRAIN, self.service.drain()).await;
        if let Some(processes) = self.processes.take() {
            processes.shutdown().await;
        }
        if let Some(database) = self.database.take() {
            database.drop_now().await?;
        }
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
        if let Some(processes) = self.processes.take() {
            processes.kill_all();
        }
        if let Some(database) = self.database.take() {
            // Drop cannot await: drop the database from a thread with a runtime of its own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    let _ = runtime.block_on(database.drop_now());
                }
            })
            .join();
        }
    }
}

/// A database created for one server.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    async fn create(admin: &str) -> Result<Self> {
        use sqlx::Connection as _;
        let name = format!("berth_testkit_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .map_err(|e| Error::Store(format!("connecting to the PostgreSQL admin URL: {e}")))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| Error::Store(format!("creating database {name}: {e}")))?;
        let base = admin.split(['?', '#']).next().unwrap_or(admin);
        let query = &admin[base.len()..];
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        Ok(Self {
            admin: admin.to_owned(),
            url: format!("{base}/{name}{query}"),
            name,
        })
    }

    async fn drop_now(self) -> Result<()> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.admin)
            .await
            .map_err(|e| Error::Store(e.to_string()))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .map_err(|e| Error::Store(format!("dropping database {}: {e}", self.name)))?;
        Ok(())
    }
}

/// 32 random bytes, hex: an admin token nobody else knows.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Unexpected(format!("the system's random source failed: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
