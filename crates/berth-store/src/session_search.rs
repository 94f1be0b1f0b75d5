//! The SQL of `GET /workspaces/{id}/session-search` (REFERENCE-2.md §2.6): one workspace's
//! activity rows, optionally filtered by a case-insensitive substring, newest first.
//!
//! berth fixes the reference's filter: `%`, `_` and `\` inside the term are escaped, so they
//! match themselves instead of acting as wildcards.

/// Largest page of the search.
pub const SESSION_SEARCH_MAX: i64 = 200;

/// The term as a `LIKE … ESCAPE '\'` pattern: lower-cased (the columns are lower-cased in SQL),
/// `\`, `%` and `_` escaped, wrapped in `%…%`.
pub(crate) fn like_pattern(term: &str) -> String {
    let mut p = String::with_capacity(term.len() + 8);
    p.push('%');
    for c in term.to_lowercase().chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

const COLUMNS: &str = "SELECT seq, id, workspace_id, activity_type, source_id, target_id, method, \
    summary, request_body, response_body, tool_trace, duration_ms, status, error_detail, created_at \
    FROM activity_logs WHERE workspace_id = $1";

/// Every row of the workspace, newest first; binds: workspace, limit.
pub(crate) fn search_sql(filtered: bool) -> String {
    if filtered {
        // Binds: workspace, pattern, limit. `CAST(… AS TEXT)` renders the JSONB documents on
        // PostgreSQL and is the identity on SQLite's TEXT columns.
        format!(
            "{COLUMNS} AND (LOWER(COALESCE(summary, '')) LIKE $2 ESCAPE '\\' \
             OR LOWER(activity_type) LIKE $2 ESCAPE '\\' \
             OR LOWER(COALESCE(method, '')) LIKE $2 ESCAPE '\\' \
             OR LOWER(status) LIKE $2 ESCAPE '\\' \
             OR LOWER(COALESCE(CAST(request_body AS TEXT), '')) LIKE $2 ESCAPE '\\' \
             OR LOWER(COALESCE(CAST(response_body AS TEXT), '')) LIKE $2 ESCAPE '\\') \
             ORDER BY seq DESC LIMIT $3"
        )
    } else {
        format!("{COLUMNS} ORDER BY seq DESC LIMIT $2")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_in_the_term_are_escaped() {
        assert_eq!(like_pattern("50%_off\\x"), "%50\\%\\_off\\\\x%");
        assert_eq!(like_pattern("DeLiVeR"), "%deliver%");
        assert!(search_sql(true).ends_with("ORDER BY seq DESC LIMIT $3"));
        assert!(search_sql(false).ends_with("ORDER BY seq DESC LIMIT $2"));
    }
}
