//! The test harness: an [`AppState`] wired exactly as `bins/berth` wires it, over a real store
//! (a SQLite file in a tempdir, or a fresh PostgreSQL database), a templates tempdir, a scripted
//! DNS resolver and a chosen provisioner; plus small request and assertion helpers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use berth_core::{CoreConfig, HostResolver, TemplateCatalog, WorkspaceService};
use berth_domain::WorkspaceId;
use berth_domain::ssrf::SsrfPolicy;
use berth_http::{AdminAuth, AppState, HttpConfig};
use berth_provision::{NoBackend, Provisioner};
use berth_store::{KeyRing, PgStore, SqliteStore, WorkspaceStore};
use http_body_util::BodyExt as _;
use secrecy::SecretString;
use serde_json::Value;
use tower::ServiceExt as _;

/// The admin credential every test app is configured with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Where one test's log lines go.
type LogBuffer = Arc<std::sync::Mutex<Vec<u8>>>;

/// The logs one test captures (see [`capture_logs`]); stops capturing when dropped.
pub struct LogCapture(LogBuffer);

impl LogCapture {
    /// Everything captured so far, as text (no colours).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        LOG_SINK.with(|sink| *sink.borrow_mut() = None);
    }
}

thread_local! {
    /// Where the events of this thread go, and from which level, while a test captures.
    static LOG_SINK: std::cell::RefCell<Option<(LogBuffer, tracing::Level)>> =
        const { std::cell::RefCell::new(None) };
}

/// The writer of the one global subscriber: this thread's capture buffer.
struct ThreadSink;

impl std::io::Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG_SINK.with(|sink| {
            if let Some((out, _)) = sink.borrow().as_ref() {
                out.lock().expect("log buffer").extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures the events this test's thread emits at `level` and above until the capture is
/// dropped. A `#[tokio::test]` runs the app and every task it spawns on its own thread, so the
/// capture sees the test's requests and background work, and nothing of other tests.
///
/// One global subscriber serves every capture: its filter asks, per event, whether the thread
/// captures. Per-test `set_default` dispatchers were flaky here: tracing caches each callsite's
/// interest globally, and dispatchers created and dropped by concurrent tests left a capture
/// missing events (seen in CI and in `cargo xtask test` runs).
pub fn capture_logs(level: tracing::Level) -> LogCapture {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Dynamic: asked for every event (interest "sometimes"), never cached per callsite.
        let capturing = tracing_subscriber::filter::dynamic_filter_fn(|meta, _| {
            LOG_SINK.with(|sink| {
                sink.borrow()
                    .as_ref()
                    .is_some_and(|(_, level)| meta.level() <= level)
            })
        });
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(|| ThreadSink)
            .with_filter(capturing);
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the test binary's only global subscriber");
    });
    let out = Arc::new(std::sync::Mutex::new(Vec::new()));
    LOG_SINK.with(|sink| *sink.borrow_mut() = Some((out.clone(), level)));
    LogCapture(out)
}

/// The git sha `/buildinfo` reports in tests.
pub const GIT_SHA: &str = "0123abcd";

/// Tables a create writes to; after a rejected create all of them must be empty.
pub const CREATE_TABLES: &[&str] = &[
    "workspaces",
    "workspace_secrets",
    "structure_events",
    "canvas_layouts",
    "workspace_auth_tokens",
    "workspace_config",
    "idempotency_keys",
];

/// `echo/config.yaml`: a template that declares a runtime, a model and a provision timeout.
const ECHO_MANIFEST: &str = "name: Echo\nruntime: echo\nruntime_config:\n  model: echo/echo-1\n  provision_timeout_seconds: 60\n";
/// `plain/config.yaml`: a template with a model but no runtime.
const PLAIN_MANIFEST: &str = "name: Plain\nruntime_config:\n  model: openai/gpt-4o\n";
/// `broken/config.yaml`: not YAML at all.
const BROKEN_MANIFEST: &str = "runtime: [unclosed\n  model: {\n";

/// A DNS resolver answering from a fixed table; unknown names fail like NXDOMAIN.
#[derive(Debug, Default)]
pub struct TableResolver(HashMap<String, Vec<IpAddr>>);

#[async_trait]
impl HostResolver for TableResolver {
    async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        self.0
            .get(host)
            .cloned()
            .ok_or_else(|| "no such host".to_owned())
    }
}

/// The names the test resolver knows.
fn test_resolver() -> TableResolver {
    let mut table = HashMap::new();
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    table.insert("agent.example.com".to_owned(), vec![ip("93.184.216.34")]);
    table.insert("internal.example.com".to_owned(), vec![ip("10.1.2.3")]);
    table.insert(
        "mixed.example.com".to_owned(),
        vec![ip("93.184.216.34"), ip("169.254.169.254")],
    );
    TableResolver(table)
}

/// The real store under test, kept concrete for raw SQL.
pub enum Db {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Db {
    /// Runs raw SQL (fault injection).
    pub async fn exec(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Db::Sqlite(s) => {
                sqlx::raw_sql(sql).execute(s.pool()).await.expect("raw sql");
            }
            Db::Postgres(s) => {
                sqlx::raw_sql(sql).execute(s.pool()).await.expect("raw sql");
            }
        }
    }

    /// `SELECT COUNT(*)` of one table.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
        match self {
            Db::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await,
            Db::Postgres(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await,
        }
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
    }

    /// Every stored secret blob, raw.
    pub async fn raw_secret_blobs(&self) -> Vec<Vec<u8>> {
        let sql = "SELECT encrypted_value FROM workspace_secrets";
        match self {
            Db::Sqlite(s) => sqlx::query_scalar(sql).fetch_all(s.pool()).await,
            Db::Postgres(s) => sqlx::query_scalar(sql).fetch_all(s.pool()).await,
        }
        .expect("secret blobs")
    }
}

/// The admin URL of the test PostgreSQL cluster, or a panic that says how to get one.
fn pg_admin_url() -> String {
    std::env::var("BERTH_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "BERTH_TEST_PG_URL is not set: run the tests with `cargo xtask test`, which starts a \
             throwaway PostgreSQL, or point BERTH_TEST_PG_URL at an admin URL of a PostgreSQL you own"
        )
    })
}

/// Creates an empty database on the test cluster and returns its URL.
pub async fn fresh_pg_database() -> String {
    use sqlx::Connection as _;
    let admin = pg_admin_url();
    let name = format!("berth_http_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to BERTH_TEST_PG_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

/// How to build a [`TestApp`].
pub struct Setup {
    /// `--dev`: admin routes open, loopback agent URLs allowed.
    pub dev: bool,
    /// Request body limit.
    pub body_limit: usize,
    /// The provisioning backend.
    pub provisioner: Arc<dyn Provisioner>,
    /// PostgreSQL instead of SQLite.
    pub postgres: bool,
    /// With `postgres`: connect to this database (URL) instead of a fresh one.
    pub postgres_url: Option<String>,
    /// `(liveness_window, remote_stale_after)` instead of the binary's defaults.
    pub windows: Option<(Duration, Duration)>,
    /// `GET /metrics` without the admin bearer.
    pub metrics_open: bool,
    /// Loopback agent URLs allowed without `--dev` (A2A tests target servers on 127.0.0.1).
    pub loopback: bool,
    /// The A2A proxy's limits instead of the defaults.
    pub a2a: Option<berth_core::A2aSettings>,
    /// Every workspace gets this tier (the reference's SaaS rule).
    pub forced_tier: Option<berth_domain::validation::Tier>,
    /// The request limiter (`None`: none, so tests are never throttled).
    pub rate_limit: Option<berth_http::RateLimit>,
    /// Proxies whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: berth_http::TrustedProxies,
    /// Allowed browser origins (default: the binary's default list).
    pub cors_origins: berth_http::CorsOrigins,
    /// The files, exec and terminal limits (default: the binary's defaults).
    pub inside: berth_core::InsideConfig,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            dev: false,
            body_limit: berth_http::DEFAULT_BODY_LIMIT,
            provisioner: Arc::new(NoBackend),
            postgres: false,
            postgres_url: None,
            windows: None,
            loopback: false,
            metrics_open: false,
            a2a: None,
            forced_tier: None,
            rate_limit: None,
            trusted_proxies: berth_http::TrustedProxies::default(),
            cors_origins: berth_http::CorsOrigins::default(),
            inside: berth_core::InsideConfig::default(),
        }
    }
}

impl Setup {
    /// Builds the app.
    pub async fn start(self) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let templates = dir.path().join("templates");
        for (name, manifest) in [
            ("echo", ECHO_MANIFEST),
            ("plain", PLAIN_MANIFEST),
            ("broken", BROKEN_MANIFEST),
        ] {
            std::fs::create_dir_all(templates.join(name)).expect("template dir");
            std::fs::write(templates.join(name).join("config.yaml"), manifest)
                .expect("template manifest");
        }
        let keys = KeyRing::parse(&KeyRing::generate_line("test")).expect("key ring");
        let (db, store): (Db, Arc<dyn WorkspaceStore>) = if self.postgres {
            let url = match self.postgres_url {
                Some(url) => url,
                None => fresh_pg_database().await,
            };
            let s = PgStore::connect(&url, keys)
                .await
                .expect("connect postgres");
            (Db::Postgres(s.clone()), Arc::new(s))
        } else {
            let s = SqliteStore::open(&dir.path().join("berth.db"), keys)
                .await
                .expect("open sqlite");
            (Db::Sqlite(s.clone()), Arc::new(s))
        };
        let defaults = CoreConfig::default();
        let (liveness_window, remote_stale_after) = self
            .windows
            .unwrap_or((defaults.liveness_window, defaults.remote_stale_after));
        let core = CoreConfig {
            dev: self.dev,
            liveness_window,
            remote_stale_after,
            ssrf: SsrfPolicy {
                allow_private: false,
                allow_loopback: self.dev || self.loopback,
            },
            forced_tier: self.forced_tier,
            agent_platform_url: "http://127.0.0.1:8080".to_owned(),
            inside: self.inside,
            // Fields the binary takes from its flags (sweep interval, …) keep their defaults.
            ..defaults
        };
        let mut service = WorkspaceService::new(
            store.clone(),
            self.provisioner,
            Arc::new(test_resolver()),
            TemplateCatalog::load(&templates),
            core,
        );
        if let Some(a2a) = self.a2a {
            service = service.with_a2a_settings(a2a);
        }
        let token = SecretString::from(ADMIN_TOKEN.to_owned());
        let state = AppState {
            service: service.clone(),
            admin: Arc::new(AdminAuth::new(&token, self.dev)),
            config: Arc::new(HttpConfig {
                dev: self.dev,
                platform_url: None,
                trusted_proxies: self.trusted_proxies,
                cors_origins: self.cors_origins,
                rate_limit: self.rate_limit,
                body_limit: self.body_limit,
                git_sha: GIT_SHA.to_owned(),
                metrics_open: self.metrics_open,
            }),
        };
        TestApp {
            router: crate::openapi::checked(berth_http::router(state)),
            service,
            store,
            db,
            _dir: dir,
        }
    }
}

/// A router over a real store, with handles for checking what it wrote.
pub struct TestApp {
    /// The whole API.
    pub router: Router,
    /// The core behind it (for `drain`).
    pub service: WorkspaceService,
    /// The store, through the port.
    pub store: Arc<dyn WorkspaceStore>,
    /// The store, concrete.
    pub db: Db,
    _dir: tempfile::TempDir,
}

/// A response, read fully.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub json: Value,
    /// The body as text.
    pub text: String,
}

impl Resp {
    /// The value of a response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The JSON error body `{"error": message}` every refusal carries.
pub fn err(message: &str) -> Value {
    serde_json::json!({ "error": message })
}

/// A SQLite or PostgreSQL app whose provisioner is a fresh [`Recorder`].
pub async fn recorder_app(postgres: bool) -> (TestApp, Arc<Recorder>) {
    let rec = Recorder::new();
    let app = Setup {
        provisioner: rec.clone(),
        postgres,
        ..Setup::default()
    }
    .start()
    .await;
    (app, rec)
}

/// SQLite, NoBackend, not dev.
pub async fn app() -> TestApp {
    Setup::default().start().await
}

/// PostgreSQL, NoBackend, not dev.
pub async fn pg_app() -> TestApp {
    Setup {
        postgres: true,
        ..Setup::default()
    }
    .start()
    .await
}

/// A request builder preset with the admin bearer.
pub fn admin(method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
}

/// A JSON `POST /workspaces` request with the admin bearer.
pub fn create_request(body: &Value) -> Request<Body> {
    admin(Method::POST, "/workspaces")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

/// Sends one request through `router`.
pub async fn send(router: &Router, req: Request<Body>) -> Resp {
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        json,
        text,
    }
}

impl TestApp {
    /// Sends one request.
    pub async fn send(&self, req: Request<Body>) -> Resp {
        send(&self.router, req).await
    }

    /// `POST /workspaces` with a JSON body, as admin.
    pub async fn create(&self, body: Value) -> Resp {
        self.send(create_request(&body)).await
    }

    /// `POST /workspaces` with a raw body, as admin.
    pub async fn create_raw(&self, body: impl Into<Body>) -> Resp {
        let req = admin(Method::POST, "/workspaces")
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .expect("request");
        self.send(req).await
    }

    /// A create that must succeed; returns its 201 body.
    pub async fn create_ok(&self, body: Value) -> Value {
        let resp = self.create(body.clone()).await;
        assert_eq!(
            resp.status,
            StatusCode::CREATED,
            "create {body} answered {}",
            resp.text
        );
        resp.json
    }

    /// A create that must succeed; returns the new id.
    pub async fn create_id(&self, body: Value) -> WorkspaceId {
        id_of(&self.create_ok(body).await)
    }

    /// `GET` as admin.
    pub async fn get(&self, uri: &str) -> Resp {
        self.send(
            admin(Method::GET, uri)
                .body(Body::empty())
                .expect("request"),
        )
        .await
    }

    /// `GET` without any credential.
    pub async fn get_anon(&self, uri: &str) -> Resp {
        let req = Request::builder()
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        self.send(req).await
    }

    /// `GET /workspaces` as admin; must be 200 with an array.
    pub async fn list(&self) -> Vec<Value> {
        let resp = self.get("/workspaces").await;
        assert_eq!(resp.status, StatusCode::OK, "list answered {}", resp.text);
        resp.json.as_array().expect("list is an array").clone()
    }

    /// The list entry of one workspace.
    pub async fn listed(&self, id: WorkspaceId) -> Value {
        let id = id.to_string();
        self.list()
            .await
            .into_iter()
            .find(|w| w["id"] == id.as_str())
            .unwrap_or_else(|| panic!("workspace {id} not in the list"))
    }

    /// Asserts that nothing at all is stored: the list is `[]` and every create table is empty.
    pub async fn assert_nothing_written(&self, context: &str) {
        let resp = self.get("/workspaces").await;
        assert_eq!(resp.status, StatusCode::OK, "{context}: list failed");
        assert_eq!(resp.text, "[]", "{context}: list is not empty");
        for table in CREATE_TABLES {
            assert_eq!(
                self.db.count(table).await,
                0,
                "{context}: rows left in {table}"
            );
        }
    }

    /// Posts `body`, expects exactly `status` and `expected` as the JSON body, and that nothing
    /// was written.
    pub async fn assert_rejected(&self, body: Value, status: StatusCode, expected: Value) {
        let resp = self.create(body.clone()).await;
        assert_eq!(resp.status, status, "status of {body}: {}", resp.text);
        assert_eq!(resp.json, expected, "body of {body}");
        self.assert_nothing_written(&body.to_string()).await;
    }

    /// Like [`Self::assert_rejected`] with a 400 `{"error": message}`.
    pub async fn assert_bad_request(&self, body: Value, message: &str) {
        self.assert_rejected(
            body,
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": message }),
        )
        .await;
    }
}

/// The `id` of a 201 body.
pub fn id_of(body: &Value) -> WorkspaceId {
    WorkspaceId::parse(body["id"].as_str().expect("id is a string")).expect("id is a uuid")
}

/// The sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

/// The sorted list of `strs`.
pub fn sorted(strs: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = strs.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

// ---- Registry, token and liveness helpers -------------------------------------------------

/// A request with an optional bearer and an optional JSON body.
pub fn request(
    method: Method,
    uri: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = bearer {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string())),
        None => b.body(Body::empty()),
    }
    .expect("request")
}

/// The URL the test provisioners report for `id`'s agent: a loopback port where nothing
/// listens (port 1), as a process-backend agent's URL would look.
pub fn agent_url(id: WorkspaceId) -> String {
    format!("http://127.0.0.1:1/{id}")
}

/// A mock provisioner of kind `Process` whose starts succeed (reporting a loopback URL where
/// nothing listens, as the process backend reports its agent's port) and whose `is_running`
/// answers with `running`.
pub fn started_provisioner(
    running: impl Fn(WorkspaceId) -> Result<bool, berth_provision::Error> + Send + Sync + 'static,
) -> berth_provision::MockProvisioner {
    let mut mock = berth_provision::MockProvisioner::new();
    mock.expect_kind()
        .return_const(berth_provision::BackendKind::Process);
    mock.expect_start().returning(|request| {
        Ok(berth_provision::Started {
            url: Some(agent_url(request.workspace_id)),
            instance_id: Some("proc-1".into()),
        })
    });
    mock.expect_wait_exit().returning(|_| Ok(None));
    mock.expect_stop().returning(|_| Ok(()));
    mock.expect_is_running().returning(running);
    mock
}

impl TestApp {
    /// `POST uri` with a JSON body and an optional bearer.
    pub async fn post(&self, uri: &str, bearer: Option<&str>, body: &Value) -> Resp {
        self.send(request(Method::POST, uri, bearer, Some(body)))
            .await
    }

    /// `POST uri` with a raw body and an optional bearer.
    pub async fn post_raw(&self, uri: &str, bearer: Option<&str>, body: &'static str) -> Resp {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = bearer {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.send(b.body(Body::from(body)).expect("request")).await
    }

    /// A body-less request with an optional bearer.
    pub async fn call(&self, method: Method, uri: &str, bearer: Option<&str>) -> Resp {
        self.send(request(method, uri, bearer, None)).await
    }

    /// The status `GET /workspaces/{id}` shows (`removed` for its 410).
    pub async fn status_of(&self, id: WorkspaceId) -> String {
        let resp = self.get(&format!("/workspaces/{id}")).await;
        if resp.status == StatusCode::GONE {
            assert_eq!(resp.json["error"], "workspace removed");
            return "removed".to_owned();
        }
        assert_eq!(resp.status, StatusCode::OK, "get {id}: {}", resp.text);
        resp.json["status"]
            .as_str()
            .expect("status is a string")
            .to_owned()
    }

    /// Events of one workspace as `(type, payload)`, oldest first.
    pub async fn events_of(&self, id: WorkspaceId) -> Vec<(String, Value)> {
        self.store
            .events(berth_store::EventFilter {
                workspace_id: Some(id),
                ..berth_store::EventFilter::default()
            })
            .await
            .expect("events")
            .into_iter()
            .map(|e| (e.event_type, e.payload))
            .collect()
    }

    /// The payloads of one workspace's events of one type.
    pub async fn events_named(&self, id: WorkspaceId, event_type: &str) -> Vec<Value> {
        self.events_of(id)
            .await
            .into_iter()
            .filter(|(t, _)| t == event_type)
            .map(|(_, p)| p)
            .collect()
    }

    /// Creates an external workspace without a URL (`awaiting_agent`); returns its id and the
    /// token of its connection payload.
    pub async fn external(&self, body: Value) -> (WorkspaceId, String) {
        let created = self.create_ok(body).await;
        assert_eq!(created["status"], "awaiting_agent", "{created}");
        let token = created["connection"]["auth_token"]
            .as_str()
            .expect("connection token")
            .to_owned();
        assert!(!token.is_empty());
        (id_of(&created), token)
    }

    /// Creates a container workspace, waits for its (mock) provisioning and mints a token for
    /// it with the admin credential.
    pub async fn container(&self, name: &str) -> (WorkspaceId, String) {
        let id = self
            .create_id(serde_json::json!({"name": name, "model": "openai/gpt-4o"}))
            .await;
        self.service.drain().await;
        let token = self.admin_mint(id).await;
        (id, token)
    }

    /// `POST /admin/workspaces/{id}/tokens`; must be 201.
    pub async fn admin_mint(&self, id: WorkspaceId) -> String {
        let resp = self
            .call(
                Method::POST,
                &format!("/admin/workspaces/{id}/tokens"),
                Some(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(
            resp.status,
            StatusCode::CREATED,
            "admin mint: {}",
            resp.text
        );
        resp.json["auth_token"]
            .as_str()
            .expect("auth_token")
            .to_owned()
    }

    /// `POST /registry/register` for `id` with a minimal card, in `mode` (when given).
    pub async fn register(&self, id: WorkspaceId, token: Option<&str>, mode: Option<&str>) -> Resp {
        let mut body = serde_json::json!({"id": id.to_string(), "agent_card": {"name": "agent"}});
        if let Some(m) = mode {
            body["delivery_mode"] = Value::from(m);
        }
        self.post("/registry/register", token, &body).await
    }

    /// `POST /registry/heartbeat` for `id` with `extra` merged into the body.
    pub async fn heartbeat(&self, id: WorkspaceId, token: Option<&str>, extra: Value) -> Resp {
        let mut body = serde_json::json!({"workspace_id": id.to_string()});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        self.post("/registry/heartbeat", token, &body).await
    }

    /// A heartbeat that must answer 200.
    pub async fn heartbeat_ok(&self, id: WorkspaceId, token: &str, extra: Value) -> Value {
        let resp = self.heartbeat(id, Some(token), extra).await;
        assert_eq!(resp.status, StatusCode::OK, "heartbeat: {}", resp.text);
        resp.json
    }

    /// Applies transitions through the store, each of which must change the row.
    pub async fn force(&self, id: WorkspaceId, transitions: &[berth_domain::status::Transition]) {
        for t in transitions {
            let changed = self
                .store
                .transition(id, berth_store::StatusChange::new(*t))
                .await
                .expect("transition");
            assert!(changed, "{t:?} did not apply to {id}");
        }
    }
}

// ---- Lifecycle helpers ------------------------------------------------------------------

/// One call a [`Recorder`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Start(WorkspaceId),
    Stop(WorkspaceId),
    Purge(WorkspaceId),
}

/// A provisioner of kind `Process` that records every call in order, keeps every start request,
/// and can hold starts until the test releases them (to observe a restart cycle mid-flight).
pub struct Recorder {
    calls: std::sync::Mutex<Vec<Call>>,
    requests: std::sync::Mutex<Vec<berth_provision::ProvisionRequest>>,
    /// While set, every start waits for one permit of this semaphore.
    gate: std::sync::Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// How many starts were entered so far.
    starts: tokio::sync::watch::Sender<usize>,
    /// How many of the next starts to pass the gate fail (as a start whose container a
    /// concurrent stop removed does).
    fail_next: std::sync::atomic::AtomicUsize,
}

impl Recorder {
    /// A recorder whose calls all succeed at once.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            calls: std::sync::Mutex::default(),
            requests: std::sync::Mutex::default(),
            gate: std::sync::Mutex::default(),
            starts: tokio::sync::watch::Sender::new(0),
            fail_next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The next `n` starts to get past the gate fail with a backend error.
    pub fn fail_next_starts(&self, n: usize) {
        self.fail_next.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }

    /// The calls about one workspace, in order.
    pub fn calls_for(&self, id: WorkspaceId) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| match c {
                Call::Start(w) | Call::Stop(w) | Call::Purge(w) => *w == id,
            })
            .collect()
    }

    /// The start requests of one workspace, in order.
    pub fn requests_for(&self, id: WorkspaceId) -> Vec<berth_provision::ProvisionRequest> {
        self.requests
            .lock()
            .expect("requests")
            .iter()
            .filter(|r| r.workspace_id == id)
            .cloned()
            .collect()
    }

    /// The `.auth_token` secret file of the `n`-th start request of `id`.
    pub fn auth_token_of_start(&self, id: WorkspaceId, n: usize) -> String {
        use secrecy::ExposeSecret as _;
        let requests = self.requests_for(id);
        let request = requests
            .get(n)
            .unwrap_or_else(|| panic!("no start #{n} of {id}: {} starts", requests.len()));
        request
            .secret_files
            .iter()
            .find(|(name, _)| name == ".auth_token")
            .map(|(_, v)| v.expose_secret().to_owned())
            .unwrap_or_else(|| panic!("start #{n} of {id} carries no .auth_token file"))
    }

    /// From now on every start waits until [`Self::release_starts`].
    pub fn hold_starts(&self) {
        *self.gate.lock().expect("gate") = Some(Arc::new(tokio::sync::Semaphore::new(0)));
    }

    /// Lets every held and future start through.
    pub fn release_starts(&self) {
        if let Some(gate) = self.gate.lock().expect("gate").take() {
            gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
        }
    }

    /// Waits (with a generous deadline) until `n` starts in total have been entered.
    pub async fn wait_for_starts(&self, n: usize) {
        let mut rx = self.starts.subscribe();
        tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|seen| *seen >= n))
            .await
            .unwrap_or_else(|_| panic!("waited 30 s for {n} starts; saw {}", *self.starts.borrow()))
            .expect("recorder alive");
    }
}

#[async_trait]
impl Provisioner for Recorder {
    fn kind(&self) -> berth_provision::BackendKind {
        berth_provision::BackendKind::Process
    }

    async fn start(
        &self,
        request: berth_provision::ProvisionRequest,
    ) -> Result<berth_provision::Started, berth_provision::Error> {
        let id = request.workspace_id;
        self.calls.lock().expect("calls").push(Call::Start(id));
        self.requests.lock().expect("requests").push(request);
        let gate = self.gate.lock().expect("gate").clone();
        self.starts.send_modify(|n| *n += 1);
        if let Some(gate) = gate {
            gate.acquire().await.expect("gate open").forget();
        }
        let fail = self
            .fail_next
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok();
        if fail {
            return Err(berth_provision::Error::Backend(format!(
                "inspecting container of {id}: No such container"
            )));
        }
        Ok(berth_provision::Started {
            url: Some(agent_url(id)),
            instance_id: Some(format!("proc-{id}")),
        })
    }

    async fn stop(&self, id: WorkspaceId) -> Result<(), berth_provision::Error> {
        self.calls.lock().expect("calls").push(Call::Stop(id));
        Ok(())
    }

    async fn is_running(&self, _id: WorkspaceId) -> Result<bool, berth_provision::Error> {
        Ok(true)
    }

    async fn purge(&self, id: WorkspaceId) -> Result<(), berth_provision::Error> {
        self.calls.lock().expect("calls").push(Call::Purge(id));
        Ok(())
    }
}

impl Db {
    /// `SELECT COUNT(*) FROM table WHERE column = id` (raw SQL, past every port).
    pub async fn count_for(&self, table: &str, column: &str, id: WorkspaceId) -> i64 {
        let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1"));
        let id = uuid::Uuid::from(id);
        match self {
            Db::Sqlite(s) => sqlx::query_scalar(sql).bind(id).fetch_one(s.pool()).await,
            Db::Postgres(s) => sqlx::query_scalar(sql).bind(id).fetch_one(s.pool()).await,
        }
        .unwrap_or_else(|e| panic!("count {table}.{column}: {e}"))
    }

    /// `workspaces.hibernation_idle_minutes` of one row (no port reads it back).
    pub async fn hibernation_idle_minutes(&self, id: WorkspaceId) -> Option<i64> {
        let sql = "SELECT hibernation_idle_minutes FROM workspaces WHERE id = $1";
        let id = uuid::Uuid::from(id);
        match self {
            Db::Sqlite(s) => sqlx::query_scalar(sql).bind(id).fetch_one(s.pool()).await,
            Db::Postgres(s) => sqlx::query_scalar(sql).bind(id).fetch_one(s.pool()).await,
        }
        .expect("hibernation_idle_minutes")
    }
}

impl TestApp {
    /// `PATCH /workspaces/{id}` with a JSON body and an optional bearer.
    pub async fn patch(
        &self,
        id: impl std::fmt::Display,
        bearer: Option<&str>,
        body: &Value,
    ) -> Resp {
        self.send(request(
            Method::PATCH,
            &format!("/workspaces/{id}"),
            bearer,
            Some(body),
        ))
        .await
    }

    /// An admin `PATCH` that must answer 200; returns its body.
    pub async fn patch_ok(&self, id: WorkspaceId, body: Value) -> Value {
        let resp = self.patch(id, Some(ADMIN_TOKEN), &body).await;
        assert_eq!(resp.status, StatusCode::OK, "patch {body}: {}", resp.text);
        resp.json
    }

    /// `DELETE /workspaces/{id}{query}` with the admin bearer.
    pub async fn delete(&self, id: impl std::fmt::Display, query: &str) -> Resp {
        self.call(
            Method::DELETE,
            &format!("/workspaces/{id}{query}"),
            Some(ADMIN_TOKEN),
        )
        .await
    }

    /// `POST /workspaces/{id}/{action}` (restart, pause, resume) with the admin bearer.
    pub async fn lifecycle(&self, id: impl std::fmt::Display, action: &str) -> Resp {
        self.call(
            Method::POST,
            &format!("/workspaces/{id}/{action}"),
            Some(ADMIN_TOKEN),
        )
        .await
    }

    /// The stored row of `id` (it must exist).
    pub async fn row(&self, id: WorkspaceId) -> berth_store::Workspace {
        self.store
            .get_workspace(id)
            .await
            .expect("get workspace")
            .unwrap_or_else(|| panic!("no row for {id}"))
    }
}

// ---- "Nothing was written" ----------------------------------------------------------------

/// What a refused request must leave as it was: the row count of every table, and the rows and
/// config of the workspaces a test names (removed ones included).
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    counts: Vec<(String, i64)>,
    rows: Vec<Option<berth_store::Workspace>>,
    configs: Vec<Value>,
}

impl Db {
    /// The names of the schema's tables (migration bookkeeping excluded), sorted.
    pub async fn tables(&self) -> Vec<String> {
        let mut names: Vec<String> = match self {
            Db::Sqlite(s) => {
                sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'",
                )
                .fetch_all(s.pool())
                .await
            }
            Db::Postgres(s) => {
                sqlx::query_scalar(
                    "SELECT tablename::TEXT FROM pg_tables WHERE schemaname = current_schema() \
                 AND tablename NOT LIKE '_sqlx%'",
                )
                .fetch_all(s.pool())
                .await
            }
        }
        .expect("list tables");
        names.sort();
        assert!(names.iter().any(|n| n == "workspaces"), "{names:?}");
        names
    }
}

impl TestApp {
    /// The [`Snapshot`] of the database now, with the rows and config of `ids`.
    pub async fn snapshot(&self, ids: &[WorkspaceId]) -> Snapshot {
        let mut counts = Vec::new();
        for table in self.db.tables().await {
            let n = self.db.count(&table).await;
            counts.push((table, n));
        }
        let mut rows = Vec::new();
        let mut configs = Vec::new();
        for id in ids {
            rows.push(self.store.get_workspace(*id).await.expect("get workspace"));
            configs.push(self.get(&format!("/workspaces/{id}/config")).await.json);
        }
        Snapshot {
            counts,
            rows,
            configs,
        }
    }
}
