//! Schema parity: the two migrated schemas have the same tables, columns and nullability.

use std::collections::BTreeSet;

use crate::harness::{Backend, fresh_pg_database, test_keys};

type Columns = BTreeSet<(String, String, bool)>;

#[tokio::test]
async fn sqlite_and_postgres_schemas_match() {
    let Backend::Sqlite(sqlite, _dir) = Backend::sqlite().await else {
        unreachable!()
    };
    let pg = berth_store::PgStore::connect(&fresh_pg_database().await, test_keys())
        .await
        .unwrap();

    let mut lite = Columns::new();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'",
    )
    .fetch_all(sqlite.pool())
    .await
    .unwrap();
    for t in &tables {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT name, \"notnull\", pk FROM pragma_table_xinfo('{t}')"
        )))
        .fetch_all(sqlite.pool())
        .await
        .unwrap();
        for (col, notnull, pk) in rows {
            // SQLite allows NULL in a non-INTEGER primary key column unless declared NOT NULL;
            // berth never writes one, so a primary key counts as NOT NULL like in PostgreSQL.
            lite.insert((t.clone(), col, notnull == 1 || pk > 0));
        }
    }

    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, is_nullable::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name NOT LIKE '_sqlx%'",
    )
    .fetch_all(pg.pool())
    .await
    .unwrap();
    let pgcols: Columns = rows
        .into_iter()
        .map(|(t, c, n)| (t, c, n == "NO"))
        .collect();

    let only_lite: Vec<_> = lite.difference(&pgcols).collect();
    let only_pg: Vec<_> = pgcols.difference(&lite).collect();
    assert!(
        only_lite.is_empty() && only_pg.is_empty(),
        "schemas differ:\n only sqlite: {only_lite:?}\n only postgres: {only_pg:?}"
    );
    assert!(
        lite.len() > 60,
        "parity check saw too few columns: {}",
        lite.len()
    );
}
