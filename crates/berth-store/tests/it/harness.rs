//! Test backends: a fresh SQLite file or a fresh PostgreSQL database per test.

use berth_domain::WorkspaceId;
use berth_domain::status::WorkspaceStatus;
use berth_store::{KeyRing, NewWorkspace, PgStore, SqliteStore, WorkspaceStore};
use secrecy::SecretString;
use serde_json::json;

/// Runs each named `async fn(Backend)` of the calling module as a test on SQLite and on
/// PostgreSQL (`sqlite::name` and `postgres::name`).
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::harness::Backend::sqlite().await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::harness::Backend::postgres().await).await;
            })*
        }
    };
}
pub(crate) use both;

/// A store under test plus raw access to its database.
pub enum Backend {
    Sqlite(SqliteStore, tempfile::TempDir),
    Postgres(PgStore),
}

pub fn test_keys() -> KeyRing {
    KeyRing::parse(&KeyRing::generate_line("test")).expect("key ring")
}

/// The admin URL of the test PostgreSQL cluster, or a panic that says how to get one.
pub fn pg_admin_url() -> String {
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
    let name = format!("berth_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to BERTH_TEST_PG_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(b, _)| b)
        .to_owned();
    format!("{base}/{name}")
}

impl Backend {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("berth.db"), test_keys())
            .await
            .expect("open sqlite");
        Backend::Sqlite(store, dir)
    }

    pub async fn postgres() -> Self {
        let url = fresh_pg_database().await;
        Backend::Postgres(
            PgStore::connect(&url, test_keys())
                .await
                .expect("connect postgres"),
        )
    }

    pub fn store(&self) -> &dyn WorkspaceStore {
        match self {
            Backend::Sqlite(s, _) => s,
            Backend::Postgres(s) => s,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Backend::Postgres(_))
    }

    pub async fn exec(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Backend::Sqlite(s, _) => {
                sqlx::raw_sql(sql).execute(s.pool()).await.expect("raw sql");
            }
            Backend::Postgres(s) => {
                sqlx::raw_sql(sql).execute(s.pool()).await.expect("raw sql");
            }
        }
    }

    pub async fn count(&self, table: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
        match self {
            Backend::Sqlite(s, _) => sqlx::query_scalar(sql)
                .fetch_one(s.pool())
                .await
                .expect("count"),
            Backend::Postgres(s) => sqlx::query_scalar(sql)
                .fetch_one(s.pool())
                .await
                .expect("count"),
        }
    }

    /// Every stored secret blob, raw.
    pub async fn raw_secret_blobs(&self) -> Vec<Vec<u8>> {
        let sql = "SELECT encrypted_value FROM workspace_secrets";
        match self {
            Backend::Sqlite(s, _) => sqlx::query_scalar(sql)
                .fetch_all(s.pool())
                .await
                .expect("blobs"),
            Backend::Postgres(s) => sqlx::query_scalar(sql)
                .fetch_all(s.pool())
                .await
                .expect("blobs"),
        }
    }

    /// The raw `external_like` column of one row.
    pub async fn external_like(&self, id: uuid::Uuid) -> bool {
        let sql = "SELECT external_like FROM workspaces WHERE id = $1";
        match self {
            Backend::Sqlite(s, _) => sqlx::query_scalar(sql)
                .bind(id)
                .fetch_one(s.pool())
                .await
                .expect("col"),
            Backend::Postgres(s) => sqlx::query_scalar(sql)
                .bind(id)
                .fetch_one(s.pool())
                .await
                .expect("col"),
        }
    }
}

pub fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

/// A plain top-level workspace to create: provisioning, no secrets, events or token. Tests that
/// need more set those fields with struct update syntax.
pub fn new_workspace(name: &str) -> NewWorkspace {
    NewWorkspace {
        id: WorkspaceId::new_v4(),
        name: name.to_owned(),
        role: None,
        tier: 2,
        runtime: "claude-code".into(),
        status: WorkspaceStatus::Provisioning,
        url: None,
        parent_id: None,
        workspace_dir: None,
        workspace_access: "none".into(),
        budget_limit: None,
        max_concurrent_tasks: 1,
        delivery_mode: "push".into(),
        compute: json!({}),
        secrets: vec![],
        canvas: (0.0, 0.0),
        token: None,
        inbound_secret: None,
        events: vec![],
        provisioning_started_at: None,
        idempotency: None,
        template: None,
        claim: None,
    }
}

/// Creates [`new_workspace`]`(name)` in `b`'s store and returns its id.
pub async fn create_workspace(b: &Backend, name: &str) -> WorkspaceId {
    let new = new_workspace(name);
    let id = new.id;
    b.store()
        .create_workspace(new)
        .await
        .expect("create workspace");
    id
}
