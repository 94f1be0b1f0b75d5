//! The PostgreSQL side of the baselines: berth's statements for one create, one list and one
//! heartbeat, as `pgbench` scripts and a `psql` query.
//!
//! Copied from `crates/berth-store/src/sql.rs` (xtask must not depend on the store); when those
//! statements change, change these too, or the baseline measures something else. Values berth
//! binds as parameters are computed here from pgbench variables (`:client_id`, a random `:n`), so
//! ids, names and token hashes stay unique without a round trip to fetch them.

/// berth's `SELECT_WORKSPACE` + `list_sql(false, false)`.
pub const LIST: &str = "\
SELECT w.id, w.name, w.role, w.tier, w.status, w.agent_card, w.url, w.parent_id, w.active_tasks, \
w.max_concurrent_tasks, w.last_error_rate, w.last_sample_error, w.failure_code, w.uptime_seconds, \
w.current_task, w.runtime, w.workspace_dir, w.workspace_access, w.delivery_mode, cl.x, cl.y, \
cl.collapsed, w.budget_limit, w.monthly_spend, w.broadcast_enabled, w.talk_to_user_enabled, \
w.compute, w.last_outbound_at, w.created_at, w.updated_at \
FROM workspaces w LEFT JOIN canvas_layouts cl ON cl.workspace_id = w.id \
WHERE w.status <> 'removed' ORDER BY w.created_at, w.id";

/// berth's `NAME_ATTEMPTS`: a create first asks which of this many candidate names are taken.
const NAME_ATTEMPTS: usize = 21;

/// The pgbench script of one external create: the taken-names query, then, in one transaction,
/// the workspace row, its layout, its token and its two events (what `create_workspace` runs for
/// `{"name": …, "external": true}`).
pub fn create_script() -> String {
    let key = "(:client_id::text || '-' || :n::text)";
    let name = format!("('pgb-' || {key})");
    let uuid = |salt: &str| format!("md5('{salt}' || {key})::uuid");
    let id = uuid("w");
    // berth binds the 21 candidates as parameters, which PostgreSQL compares as constants; the
    // same names built from pgbench variables inside an IN list would be recomputed for every
    // row scanned, so they come from a subquery that is evaluated once (a hashed subplan).
    let suffixes: Vec<String> = std::iter::once("''".to_owned())
        .chain((2..=NAME_ATTEMPTS).map(|k| format!("' ({k})'")))
        .collect();
    let candidates = format!(
        "SELECT {name} || s FROM unnest(ARRAY[{}]) AS s",
        suffixes.join(", ")
    );
    format!(
        "\\set n random(1, 999999999999999)\n\
         SELECT name FROM workspaces WHERE COALESCE(parent_id, '00000000-0000-0000-0000-000000000000'::uuid) = '00000000-0000-0000-0000-000000000000'::uuid AND status <> 'removed' AND name IN ({candidates});\n\
         BEGIN;\n\
         INSERT INTO workspaces (id, name, role, tier, runtime, status, url, parent_id, workspace_dir, \
         workspace_access, budget_limit, max_concurrent_tasks, delivery_mode, compute, \
         provisioning_started_at, created_at, updated_at) VALUES ({id}, {name}, NULL, 3, 'external', \
         'awaiting_agent', NULL, NULL, NULL, 'none', NULL, 1, 'push', '{{}}', NULL, now(), now()) \
         ON CONFLICT DO NOTHING;\n\
         INSERT INTO canvas_layouts (workspace_id, x, y) VALUES ({id}, 0, 0);\n\
         INSERT INTO workspace_auth_tokens (id, workspace_id, token_hash, prefix, created_at) \
         VALUES ({token_id}, {id}, sha256(convert_to('t' || {key}, 'UTF8')), 'benchpfx', now());\n\
         INSERT INTO structure_events (id, event_type, workspace_id, payload, created_at) \
         VALUES ({event1}, 'WORKSPACE_PROVISIONING', {id}, \
         jsonb_build_object('name', {name}, 'tier', 3, 'runtime', 'external'), now());\n\
         INSERT INTO structure_events (id, event_type, workspace_id, payload, created_at) \
         VALUES ({event2}, 'WORKSPACE_AWAITING_AGENT', {id}, \
         jsonb_build_object('name', {name}, 'external', true), now());\n\
         COMMIT;\n",
        token_id = uuid("t"),
        event1 = uuid("e1"),
        event2 = uuid("e2"),
    )
}

/// Builds `bench_agents (k, id, token_hash)`: the registered (online) workspaces numbered from 1,
/// so the heartbeat script can pick one by a random `k` inside its statements.
pub const AGENTS_TABLE: &str = "\
DROP TABLE IF EXISTS bench_agents; \
CREATE TABLE bench_agents AS SELECT row_number() OVER (ORDER BY w.created_at, w.id) AS k, w.id, \
t.token_hash FROM workspaces w JOIN workspace_auth_tokens t ON t.workspace_id = w.id \
WHERE w.status = 'online' AND t.revoked_at IS NULL; \
CREATE UNIQUE INDEX ON bench_agents (k); ANALYZE bench_agents; \
SELECT count(*) FROM bench_agents;";

/// The pgbench script of one heartbeat over `agents` rows of `bench_agents`: the token check,
/// then the status, inbound-secret and queue-depth read and the UPDATE in one transaction (what
/// `POST /registry/heartbeat` runs for a healthy agent).
pub fn heartbeat_script(agents: u64) -> String {
    let id = "(SELECT id FROM bench_agents WHERE k = :k)";
    format!(
        "\\set k random(1, {agents})\n\
         SELECT t.id, t.workspace_id, t.last_used_at FROM workspace_auth_tokens t \
         JOIN workspaces w ON w.id = t.workspace_id \
         WHERE t.token_hash = (SELECT token_hash FROM bench_agents WHERE k = :k) \
         AND t.revoked_at IS NULL AND w.status <> 'removed';\n\
         BEGIN;\n\
         SELECT status, current_task, max_concurrent_tasks, inbound_secret, inbound_secret_key_id, \
         (SELECT COUNT(*) FROM a2a_queue q WHERE q.workspace_id = workspaces.id AND q.status = 'queued') \
         FROM workspaces WHERE id = {id};\n\
         UPDATE workspaces SET last_heartbeat_at = now(), last_error_rate = 0, last_sample_error = '', \
         active_tasks = 0, uptime_seconds = :k, current_task = '', monthly_spend = monthly_spend, \
         updated_at = now() WHERE id = {id} AND status <> 'removed';\n\
         COMMIT;\n"
    )
}

/// The pgbench script of berth's group commit of `batch` heartbeats over `agents` rows of
/// `bench_agents`: the batched read and the `UPDATE … FROM (VALUES …)` in one transaction, with
/// the token checks answered from berth's cache (so none here).
pub fn heartbeat_batch_script(agents: u64, batch: usize) -> String {
    let mut script = String::new();
    for i in 0..batch {
        script.push_str(&format!("\\set k{i} random(1, {agents})\n"));
    }
    let id = |i: usize| format!("(SELECT id FROM bench_agents WHERE k = :k{i})");
    let ids: Vec<String> = (0..batch).map(id).collect();
    let rows: Vec<String> = (0..batch)
        .map(|i| {
            format!(
                "({}, 0::float8, '', 0::bigint, :k{i}::bigint, '', NULL::bigint)",
                id(i)
            )
        })
        .collect();
    script.push_str(&format!(
        "BEGIN;\n\
         SELECT id, status, current_task, max_concurrent_tasks, inbound_secret, inbound_secret_key_id, \
         (SELECT COUNT(*) FROM a2a_queue q WHERE q.workspace_id = workspaces.id AND q.status = 'queued') \
         FROM workspaces WHERE id IN ({});\n\
         UPDATE workspaces SET last_heartbeat_at = now(), updated_at = now(), \
         last_error_rate = v.column2, last_sample_error = v.column3, active_tasks = v.column4, \
         uptime_seconds = v.column5, current_task = v.column6, \
         monthly_spend = COALESCE(v.column7, workspaces.monthly_spend) \
         FROM (VALUES {}) AS v WHERE workspaces.id = v.column1 AND workspaces.status <> 'removed';\n\
         COMMIT;\n",
        ids.join(", "),
        rows.join(", ")
    ));
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_script_checks_every_candidate_name() {
        let script = create_script();
        assert_eq!(script.matches("' (").count(), NAME_ATTEMPTS - 1);
        assert!(script.contains("' (21)'"));
        assert_eq!(script.lines().count(), 9);
    }

    #[test]
    fn heartbeat_script_picks_among_the_agents() {
        assert!(heartbeat_script(1000).starts_with("\\set k random(1, 1000)\n"));
    }

    #[test]
    fn batch_script_reads_and_writes_every_row_once() {
        let script = heartbeat_batch_script(1000, 3);
        assert_eq!(script.matches("random(1, 1000)").count(), 3);
        assert_eq!(script.matches("::bigint, '', NULL::bigint)").count(), 3);
        assert!(script.contains(":k2"));
        assert!(!script.contains(":k3"));
    }
}
