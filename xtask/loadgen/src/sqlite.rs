//! The database limit of the SQLite store: the statements berth runs for one create, one list and
//! one heartbeat, replayed with sqlx against a berth SQLite file, with berth's connection settings
//! (WAL, `synchronous=NORMAL`, foreign keys, a pool of 8 without a ping on every acquire,
//! `BEGIN IMMEDIATE` for writes).
//!
//! The SQL is copied from `crates/berth-store/src/sql.rs` (the crate's constants are private);
//! when those statements change, change these too, or the baseline measures something else.
//! `sqlite-heartbeat` replays the statements of one heartbeat as berth ran them before heartbeats
//! were group-committed (one transaction each); `sqlite-heartbeat-batch` runs berth's batched
//! statements (`heartbeat_before_sql`, `heartbeat_update_sql`) at a given batch size.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use chrono::Utc;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, SqlitePool};
use uuid::Uuid;

use crate::args::Args;
use crate::stats::{Plan, Report, drive};

/// berth's `SELECT_WORKSPACE` + `list_sql(false, false)`.
pub const LIST: &str = "\
SELECT w.id, w.name, w.role, w.tier, w.status, w.agent_card, w.url, w.parent_id, w.active_tasks, \
w.max_concurrent_tasks, w.last_error_rate, w.last_sample_error, w.failure_code, w.uptime_seconds, \
w.current_task, w.runtime, w.workspace_dir, w.workspace_access, w.delivery_mode, cl.x, cl.y, \
cl.collapsed, w.budget_limit, w.monthly_spend, w.broadcast_enabled, w.talk_to_user_enabled, \
w.compute, w.last_outbound_at, w.created_at, w.updated_at \
FROM workspaces w LEFT JOIN canvas_layouts cl ON cl.workspace_id = w.id \
WHERE w.status <> 'removed' ORDER BY w.created_at, w.id";

const INSERT_WORKSPACE: &str = "\
INSERT INTO workspaces (id, name, role, tier, runtime, status, url, parent_id, workspace_dir, \
workspace_access, budget_limit, max_concurrent_tasks, delivery_mode, compute, \
provisioning_started_at, created_at, updated_at) \
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16) \
ON CONFLICT DO NOTHING";
const INSERT_LAYOUT: &str = "INSERT INTO canvas_layouts (workspace_id, x, y) VALUES ($1, $2, $3)";
const INSERT_TOKEN: &str = "\
INSERT INTO workspace_auth_tokens (id, workspace_id, token_hash, prefix, created_at) \
VALUES ($1, $2, $3, $4, $5)";
const INSERT_EVENT: &str = "\
INSERT INTO structure_events (id, event_type, workspace_id, payload, created_at) \
VALUES ($1, $2, $3, $4, $5)";
const VALIDATE_TOKEN: &str = "\
SELECT t.id, t.workspace_id, t.last_used_at FROM workspace_auth_tokens t \
JOIN workspaces w ON w.id = t.workspace_id \
WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND w.status <> 'removed'";
const HEARTBEAT_BEFORE: &str = "SELECT status, current_task, max_concurrent_tasks, \
inbound_secret, inbound_secret_key_id, \
(SELECT COUNT(*) FROM a2a_queue q WHERE q.workspace_id = workspaces.id AND q.status = 'queued') \
FROM workspaces WHERE id = $1";
const HEARTBEAT: &str = "\
UPDATE workspaces SET last_heartbeat_at = $1, last_error_rate = $2, last_sample_error = $3, \
active_tasks = $4, uptime_seconds = $5, current_task = $6, \
monthly_spend = CASE WHEN $7 IS NULL THEN monthly_spend ELSE $7 END, updated_at = $1 \
WHERE id = $8 AND status <> 'removed'";
/// The live agents to heartbeat as (registered, so `online`).
const AGENTS: &str = "\
SELECT w.id, t.token_hash FROM workspaces w JOIN workspace_auth_tokens t ON t.workspace_id = w.id \
WHERE w.status = 'online' AND t.revoked_at IS NULL ORDER BY w.created_at, w.id";

/// berth's `NAME_ATTEMPTS`: a create first asks which of this many candidate names are taken.
const NAME_ATTEMPTS: usize = 21;

/// Opens berth's database file the way berth does (the file must exist: berth migrated it).
async fn open(args: &Args, concurrency: usize) -> Result<SqlitePool> {
    let path = Path::new(args.str("db")?);
    ensure!(path.is_file(), "{} does not exist", path.display());
    let options = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    Ok(SqlitePoolOptions::new()
        .max_connections(8.min(concurrency as u32).max(1))
        // berth pings a pooled connection before use only after 30 s idle: never in a run.
        .test_before_acquire(false)
        .connect_with(options)
        .await?)
}

fn plan(args: &Args) -> Result<Plan> {
    Ok(Plan {
        count: args.count()?,
        concurrency: args.concurrency()?,
        max_time: args.max_time()?,
        rate: None,
    })
}

/// `sqlite-create --db FILE --prefix P`: the statements of one external create.
pub async fn create(args: &Args) -> Result<Report> {
    let plan = plan(args)?;
    let pool = open(args, plan.concurrency).await?;
    let prefix = args.opt("prefix").unwrap_or("sqlb").to_owned();
    let list: Vec<String> = (2..=NAME_ATTEMPTS + 1).map(|i| format!("${i}")).collect();
    let taken = Arc::new(format!(
        "SELECT name FROM workspaces WHERE COALESCE(parent_id, X'00000000000000000000000000000000') = $1 \
         AND status <> 'removed' AND name IN ({})",
        list.join(", ")
    ));
    Ok(drive(plan, move |i| {
        let (pool, taken) = (pool.clone(), Arc::clone(&taken));
        let name = format!("{prefix}-{i}");
        async move {
            let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(taken.as_str()))
                .bind(Uuid::nil())
                .bind(&name);
            for k in 1..NAME_ATTEMPTS {
                q = q.bind(format!("{name} ({})", k + 1));
            }
            q.fetch_all(&pool).await?;

            let (id, now) = (Uuid::new_v4(), Utc::now());
            let mut hash = Uuid::new_v4().as_bytes().to_vec();
            hash.extend_from_slice(Uuid::new_v4().as_bytes());
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let inserted = sqlx::query(INSERT_WORKSPACE)
                .bind(id)
                .bind(&name)
                .bind(Option::<String>::None)
                .bind(3i64)
                .bind("external")
                .bind("awaiting_agent")
                .bind(Option::<String>::None)
                .bind(Option::<Uuid>::None)
                .bind(Option::<String>::None)
                .bind("none")
                .bind(Option::<i64>::None)
                .bind(1i64)
                .bind("push")
                .bind(Json(json!({})))
                .bind(Option::<chrono::DateTime<Utc>>::None)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            ensure!(inserted.rows_affected() == 1, "name {name} taken");
            sqlx::query(INSERT_LAYOUT)
                .bind(id)
                .bind(0.0f64)
                .bind(0.0f64)
                .execute(&mut *tx)
                .await?;
            sqlx::query(INSERT_TOKEN)
                .bind(Uuid::new_v4())
                .bind(id)
                .bind(&hash)
                .bind("benchpfx")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            for (event, payload) in [
                (
                    "WORKSPACE_PROVISIONING",
                    json!({"name": name, "tier": 3, "runtime": "external"}),
                ),
                (
                    "WORKSPACE_AWAITING_AGENT",
                    json!({"name": name, "external": true}),
                ),
            ] {
                sqlx::query(INSERT_EVENT)
                    .bind(Uuid::new_v4())
                    .bind(event)
                    .bind(id)
                    .bind(Json(payload))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(None)
        }
    })
    .await)
}

/// `sqlite-list --db FILE`: berth's list SELECT, all rows fetched (not decoded).
pub async fn list(args: &Args) -> Result<Report> {
    let plan = plan(args)?;
    let pool = open(args, plan.concurrency).await?;
    let mut report = drive(plan, move |_| {
        let pool = pool.clone();
        async move {
            sqlx::query(LIST).fetch_all(&pool).await?;
            Ok(None)
        }
    })
    .await;
    report.extra.insert("sql".into(), json!("list"));
    Ok(report)
}

/// `sqlite-heartbeat --db FILE`: the statements of one heartbeat (token check, then the status,
/// inbound-secret and queue-depth read and the UPDATE in a write transaction), round-robin over
/// online agents.
pub async fn heartbeat(args: &Args) -> Result<Report> {
    let plan = plan(args)?;
    let pool = open(args, plan.concurrency).await?;
    let agents = online_agents(&pool).await?;
    let count = agents.len();
    let mut report = drive(plan, move |i| {
        let (pool, agents) = (pool.clone(), Arc::clone(&agents));
        async move {
            let (id, hash) = &agents[i % agents.len()];
            let found: Option<(Uuid, Uuid, Option<chrono::DateTime<Utc>>)> =
                sqlx::query_as(VALIDATE_TOKEN)
                    .bind(hash)
                    .fetch_optional(&pool)
                    .await?;
            ensure!(found.is_some(), "token of {id} not found");
            let now = Utc::now();
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            type Before = (
                String,
                Option<String>,
                i64,
                Option<Vec<u8>>,
                Option<String>,
                i64,
            );
            let _: Option<Before> = sqlx::query_as(HEARTBEAT_BEFORE)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            sqlx::query(HEARTBEAT)
                .bind(now)
                .bind(0.0f64)
                .bind("")
                .bind(0i64)
                .bind(i as i64)
                .bind("")
                .bind(Option::<i64>::None)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(None)
        }
    })
    .await;
    report.extra.insert("agents".into(), json!(count));
    Ok(report)
}

/// The online agents (id, token hash) to heartbeat as; at least one.
async fn online_agents(pool: &SqlitePool) -> Result<Arc<Vec<(Uuid, Vec<u8>)>>> {
    let agents: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(AGENTS)
        .fetch_all(pool)
        .await
        .context("reading the registered agents")?;
    ensure!(!agents.is_empty(), "no online workspaces to heartbeat as");
    Ok(Arc::new(agents))
}

/// berth's `heartbeat_before_sql(n)`.
fn batch_before_sql(n: usize) -> String {
    let ids: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    format!(
        "SELECT id, status, current_task, max_concurrent_tasks, inbound_secret, \
         inbound_secret_key_id, \
         (SELECT COUNT(*) FROM a2a_queue q WHERE q.workspace_id = workspaces.id AND q.status = 'queued') \
         FROM workspaces WHERE id IN ({})",
        ids.join(", ")
    )
}

/// berth's `heartbeat_update_sql(rows)`.
fn batch_update_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let p: Vec<String> = (0..7).map(|c| format!("${}", 2 + r * 7 + c)).collect();
            format!("({})", p.join(", "))
        })
        .collect();
    format!(
        "UPDATE workspaces SET last_heartbeat_at = $1, updated_at = $1, \
         last_error_rate = v.column2, last_sample_error = v.column3, active_tasks = v.column4, \
         uptime_seconds = v.column5, current_task = v.column6, \
         monthly_spend = COALESCE(v.column7, workspaces.monthly_spend) \
         FROM (VALUES {}) AS v \
         WHERE workspaces.id = v.column1 AND workspaces.status <> 'removed'",
        values.join(", ")
    )
}

/// `sqlite-heartbeat-batch --db FILE --batch B`: berth's group commit of `B` heartbeats (the
/// batched read and UPDATE in one write transaction; each heartbeat's token check from berth's
/// cache, so none), one batch after another as berth's single flush does. `count` and
/// `throughput` are heartbeats; the latencies are of whole batches.
pub async fn heartbeat_batch(args: &Args) -> Result<Report> {
    let mut plan = plan(args)?;
    let batch: usize = args.num("batch", 64)?.max(1);
    plan.count = plan.count.div_ceil(batch);
    plan.concurrency = 1;
    let pool = open(args, 1).await?;
    let agents = online_agents(&pool).await?;
    let count = agents.len();
    let (before, update) = (
        Arc::new(batch_before_sql(batch.min(count))),
        Arc::new(batch_update_sql(batch.min(count))),
    );
    let mut report = drive(plan, move |i| {
        let (pool, agents) = (pool.clone(), Arc::clone(&agents));
        let (before, update) = (Arc::clone(&before), Arc::clone(&update));
        async move {
            let n = batch.min(agents.len());
            let ids: Vec<Uuid> = (0..n)
                .map(|k| agents[(i * n + k) % agents.len()].0)
                .collect();
            let now = Utc::now();
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let mut q = sqlx::query(AssertSqlSafe(before.as_str()));
            for id in &ids {
                q = q.bind(id);
            }
            q.fetch_all(&mut *tx).await?;
            let mut q = sqlx::query(AssertSqlSafe(update.as_str())).bind(now);
            for id in &ids {
                q = q
                    .bind(id)
                    .bind(0.0f64)
                    .bind("")
                    .bind(0i64)
                    .bind(i as i64)
                    .bind("")
                    .bind(Option::<i64>::None);
            }
            q.execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(None)
        }
    })
    .await;
    report.count *= batch;
    report.extra.insert("agents".into(), json!(count));
    report.extra.insert("batch".into(), json!(batch));
    Ok(report)
}
