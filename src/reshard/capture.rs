//! Dual-write's capture on the source shard (DESIGN §3.2): which sharding keys of the moved
//! buckets a transaction changed, recorded by the source itself, so that before the transaction
//! commits shardgate can copy exactly those keys' rows to the target — whatever statement,
//! function or cascade changed them, and without re-running anything.
//!
//! While a move is in dual-write, each sharded table on the source has a row trigger that, for
//! a row whose key is in the moved buckets (old and new row alike), inserts the key into
//! `shardgate.changed_keys` under the transaction's id. The table is unlogged (a crash aborts the
//! transactions whose rows it held anyway) and transactional: a rolled-back write leaves nothing.
//! shardgate reads and deletes its transaction's rows just before COMMIT.

use crate::config::KeyType;
use crate::router::hash::bucket_sql;

use super::backfill::{literal, quote_ident};

/// The schema and table the triggers write to, created on the source when dual-write starts.
pub const SETUP_SQL: &str = "CREATE SCHEMA IF NOT EXISTS shardgate; \
    CREATE UNLOGGED TABLE IF NOT EXISTS shardgate.changed_keys ( \
        xid xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(), \
        table_name text NOT NULL, \
        sharding_key text NOT NULL, \
        PRIMARY KEY (xid, table_name, sharding_key))";

/// The keys the current transaction changed, per table (run inside it, just before COMMIT).
pub const CHANGED_SQL: &str = "DELETE FROM shardgate.changed_keys \
    WHERE xid = pg_catalog.pg_current_xact_id_if_assigned() \
    RETURNING table_name, sharding_key";

/// What installs the capture on one table: its trigger function and trigger.
pub fn install_sql(
    table: &str,
    key_column: &str,
    key_type: KeyType,
    buckets: u32,
    (first, last): (u32, u32),
) -> String {
    let key = quote_ident(key_column);
    let moved = |row: &str| {
        let expr = bucket_sql(&format!("{row}.{key}"), key_type, buckets);
        format!("{row}.{key} IS NOT NULL AND {expr} BETWEEN {first} AND {last}")
    };
    let record = |row: &str| {
        format!(
            "INSERT INTO shardgate.changed_keys (table_name, sharding_key) \
             VALUES ({}, ({row}.{key})::text) ON CONFLICT DO NOTHING;",
            literal(table)
        )
    };
    let function = function_name(table);
    format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $sg$ \
         BEGIN \
           IF TG_OP <> 'INSERT' AND {old_moved} THEN {record_old} END IF; \
           IF TG_OP <> 'DELETE' AND {new_moved} THEN {record_new} END IF; \
           RETURN NULL; \
         END $sg$; \
         DROP TRIGGER IF EXISTS shardgate_capture ON {table}; \
         CREATE TRIGGER shardgate_capture AFTER INSERT OR UPDATE OR DELETE ON {table} \
           FOR EACH ROW EXECUTE FUNCTION {function}()",
        old_moved = moved("OLD"),
        new_moved = moved("NEW"),
        record_old = record("OLD"),
        record_new = record("NEW"),
    )
}

/// What removes it again (at finish, rollback or abort).
pub fn remove_sql(table: &str) -> String {
    format!(
        "DROP TRIGGER IF EXISTS shardgate_capture ON {table}; DROP FUNCTION IF EXISTS {}()",
        function_name(table)
    )
}

fn function_name(table: &str) -> String {
    format!("shardgate.{}", quote_ident(&format!("capture_{table}")))
}
