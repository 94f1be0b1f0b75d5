//! Per-table row count and checksum of berth's database, to check that a refused request
//! changed nothing. SQLite is read through a read-only connection to `<data-dir>/berth.db`
//! (WAL lets it read beside the server); PostgreSQL through its own connection.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use sha2::{Digest, Sha256};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, SqliteConnection};

/// Columns left out of the checksum, with why: `last_used_at` records that a live token was
/// presented. Authentication succeeds before a handler refuses the request (a token of another
/// workspace on a per-workspace route answers 401, a bad body 400), and the store notes the use
/// (at most once per interval). That is bookkeeping of the credential, not a change the refused
/// request asked for.
pub const IGNORED_COLUMNS: &[(&str, &str)] = &[("workspace_auth_tokens", "last_used_at")];

/// Whether `table.column` is left out of the checksum.
fn ignored(table: &str, column: &str) -> bool {
    IGNORED_COLUMNS.contains(&(table, column))
}

/// Table name → (rows, checksum of the rows).
pub type Snapshot = BTreeMap<String, (i64, String)>;

/// A connection that takes snapshots; the per-table queries are built once.
pub enum Db {
    /// SQLite, with `(table, query returning one text per row)`.
    Sqlite(SqliteConnection, Vec<(String, String)>),
    /// PostgreSQL, with the one query that checksums every table.
    Postgres(PgConnection, String),
}

impl Db {
    /// Opens the SQLite file read-only.
    pub async fn sqlite(path: &Path) -> Result<Db> {
        let options = SqliteConnectOptions::new().filename(path).read_only(true);
        let mut conn = SqliteConnection::connect_with(&options).await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await?;
        let mut queries = Vec::new();
        for table in tables {
            let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                .bind(&table)
                .fetch_all(&mut conn)
                .await?;
            let row = columns
                .iter()
                .filter(|c| !ignored(&table, c))
                .map(|c| format!("quote(\"{c}\")"))
                .collect::<Vec<_>>()
                .join(" || ',' || ");
            queries.push((table.clone(), format!("SELECT {row} FROM \"{table}\"")));
        }
        Ok(Db::Sqlite(conn, queries))
    }

    /// Connects to the PostgreSQL database at `url`.
    pub async fn postgres(url: &str) -> Result<Db> {
        let mut conn = PgConnection::connect(url).await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
        )
        .fetch_all(&mut conn)
        .await?;
        let mut parts = Vec::new();
        for t in &tables {
            let columns: Vec<String> = sqlx::query_scalar(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
            )
            .bind(t)
            .fetch_all(&mut conn)
            .await?;
            let row = columns
                .iter()
                .filter(|c| !ignored(t, c))
                .map(|c| format!("t.\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ");
            parts.push(format!(
                "SELECT '{t}'::text, count(*)::bigint, coalesce(md5(string_agg(ROW({row})::text, E'\\n' ORDER BY ROW({row})::text)), '') FROM \"{t}\" t"
            ));
        }
        let query = parts.join(" UNION ALL ");
        Ok(Db::Postgres(conn, query))
    }

    /// Counts and checksums every table.
    pub async fn snapshot(&mut self) -> Result<Snapshot> {
        let mut out = Snapshot::new();
        match self {
            Db::Sqlite(conn, queries) => {
                for (table, query) in queries.iter() {
                    let mut rows: Vec<Option<String>> =
                        sqlx::query_scalar(AssertSqlSafe(query.as_str()))
                            .fetch_all(&mut *conn)
                            .await?;
                    rows.sort();
                    let mut hash = Sha256::new();
                    for row in &rows {
                        hash.update(row.as_deref().unwrap_or("NULL").as_bytes());
                        hash.update(b"\n");
                    }
                    let digest: String =
                        hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
                    out.insert(table.clone(), (rows.len() as i64, digest));
                }
            }
            Db::Postgres(conn, query) => {
                let rows: Vec<(String, i64, String)> =
                    sqlx::query_as(AssertSqlSafe(query.as_str()))
                        .fetch_all(&mut *conn)
                        .await?;
                for (table, count, sum) in rows {
                    out.insert(table, (count, sum));
                }
            }
        }
        Ok(out)
    }
}

/// The tables whose count or checksum differ, with the counts.
pub fn diff(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    after
        .iter()
        .filter_map(|(table, (n, sum))| match before.get(table) {
            Some((m, old)) if old == sum && m == n => None,
            Some((m, _)) => Some(format!("{table} ({m} → {n} rows)")),
            None => Some(format!("{table} (new)")),
        })
        .collect()
}
