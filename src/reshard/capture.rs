//! Dual-write's capture (DESIGN §3.2): which rows of the moved keys a transaction changed,
//! recorded by the shard itself in that transaction, so that the target's copy of exactly those
//! rows is brought up to date from their row images — whatever statement, function or cascade
//! changed them, and without re-running anything.
//!
//! While a move is dual-written, each sharded table on the authoritative side has a row trigger
//! that, for a row of the moved keys (old and new row alike):
//! 1. takes the move's *fence* in shared mode: cutover takes it exclusively, so it waits for the
//!    writers in flight and holds new ones;
//! 2. checks the side is still authoritative for the move (a writer the fence held while the
//!    keys were cut over gets `40001`, never a write the new owner would not see);
//! 3. takes the per-key lock (`pg_advisory_xact_lock` on (table, key)) that serializes the key's
//!    writers — clients, backfill, the sync and repair — until commit;
//! 4. appends the row's primary key to `shardgate.reshard_changes`, a logged table, in the same
//!    transaction: a committed change is durably marked for copying the moment it commits.
//!
//! [`super::sync`] copies the marked rows to the other side. Writes by shardgate's own copiers
//! set `shardgate.syncing` and are not captured.
//!
//! The copies must not be read as rows of their own: a statement sent to every shard (no
//! sharding key) would count a moved row twice, or update it twice. So each table also gets a
//! row-security policy on both sides that hides the moved keys' rows on the shadow side (the
//! target until cutover, the source after it) from the statements shardgate sends to several
//! shards: it runs them with `shardgate.fanout` on. Keyed statements see every row, so a
//! client's write that reaches the shadow still meets the trigger's refusal. At cutover the new
//! owner becomes authoritative and the old one the shadow while every shardgate holds the
//! statements across shards (with the slice's), so none of them sees the roles half switched.

use super::backfill::{key_lock_sql, literal, quote_ident, TableCopy};

/// The tables the triggers use, created on both sides when dual-write starts.
pub const SETUP_SQL: &str = "CREATE SCHEMA IF NOT EXISTS shardgate; \
    CREATE TABLE IF NOT EXISTS shardgate.reshard_changes ( \
        id bigserial PRIMARY KEY, \
        job_id bigint NOT NULL, \
        table_name text NOT NULL, \
        sharding_key text NOT NULL, \
        pk jsonb NOT NULL); \
    CREATE INDEX IF NOT EXISTS reshard_changes_job ON shardgate.reshard_changes (job_id, id); \
    CREATE TABLE IF NOT EXISTS shardgate.reshard_roles ( \
        job_id bigint PRIMARY KEY, \
        role text NOT NULL CHECK (role IN ('authoritative', 'shadow')))";

/// What a side is for a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes the clients' writes of the moved keys, captured for the other side.
    Authoritative,
    /// Receives copies only; a client's write of the moved keys is refused.
    Shadow,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Authoritative => "authoritative",
            Role::Shadow => "shadow",
        }
    }
}

/// Sets this side's role for `job` (run where the fence is held exclusively, at cutover).
pub fn role_sql(job: i64, role: Role) -> String {
    format!(
        "INSERT INTO shardgate.reshard_roles VALUES ({job}, '{0}') \
         ON CONFLICT (job_id) DO UPDATE SET role = '{0}'",
        role.name()
    )
}

/// The fence of `job` (an advisory lock key pair), in the form `pg_advisory_*lock*` take.
pub fn fence_key(job: i64) -> String {
    format!("pg_catalog.hashtext('shardgate:fence'), {}", fence_low(job))
}

/// The job id folded into the advisory lock's 32-bit second key.
fn fence_low(job: i64) -> i32 {
    (job % i64::from(i32::MAX)) as i32
}

/// What installs the capture of `job` on one table: its trigger function and trigger.
pub fn install_sql(job: i64, t: &TableCopy, elsewhere: &str) -> String {
    let key = quote_ident(&t.key_column);
    let moved = |row: &str| moved_sql(t, &format!("{row}.{key}"));
    let pk = |row: &str| {
        let fields: Vec<String> = t
            .primary_key
            .iter()
            .map(|c| format!("{}, {row}.{}", literal(c), quote_ident(c)))
            .collect();
        format!("pg_catalog.jsonb_build_object({})", fields.join(", "))
    };
    let record = |row: &str| {
        format!(
            "PERFORM {lock}; \
             INSERT INTO shardgate.reshard_changes (job_id, table_name, sharding_key, pk) \
             VALUES ({job}, {name}, ({row}.{key})::text, {pk});",
            lock = key_lock_sql(&t.table, &format!("{row}.{key}")),
            name = literal(&t.table),
            pk = pk(row),
        )
    };
    let refusal = literal(&format!(
        "{} of table {} moved to shard \"{elsewhere}\" while this transaction was writing them",
        t.slice.describe(),
        t.table
    ));
    let function = function_name(&t.table);
    format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $sg$ \
         DECLARE old_moved boolean := TG_OP <> 'INSERT' AND {old_moved}; \
                 new_moved boolean := TG_OP <> 'DELETE' AND {new_moved}; \
         BEGIN \
           IF pg_catalog.current_setting('shardgate.syncing', true) = 'on' \
              OR NOT (old_moved OR new_moved) THEN RETURN NULL; END IF; \
           PERFORM pg_catalog.pg_advisory_xact_lock_shared({fence}); \
           IF NOT EXISTS (SELECT FROM shardgate.reshard_roles \
                          WHERE job_id = {job} AND role = 'authoritative') THEN \
             RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = {refusal}, \
               HINT = 'Retry the transaction: shardgate routes it to the shard that owns the rows now.'; \
           END IF; \
           IF old_moved THEN {record_old} END IF; \
           IF new_moved THEN {record_new} END IF; \
           RETURN NULL; \
         END $sg$; \
         DROP TRIGGER IF EXISTS shardgate_capture ON {table}; \
         CREATE TRIGGER shardgate_capture AFTER INSERT OR UPDATE OR DELETE ON {table} \
           FOR EACH ROW EXECUTE FUNCTION {function}(); {hide}",
        old_moved = moved("OLD"),
        new_moved = moved("NEW"),
        fence = fence_key(job),
        record_old = record("OLD"),
        record_new = record("NEW"),
        table = t.table,
        hide = hide_sql(job, t, &moved_sql(t, &key)),
    )
}

/// Whether the key `column` is in the move's slice.
fn moved_sql(t: &TableCopy, column: &str) -> String {
    format!("{column} IS NOT NULL AND {}", t.within(column))
}

/// The row-security policies that hide a side's copies of the moved keys (`moved`: whether
/// a row of the table is in them) from statements sent to several shards. The permissive policy
/// lets everything else through, as before row security was on. Forced, so the tables' owner is
/// subject to it too (superusers and roles with BYPASSRLS never are: pre-flight refuses them).
fn hide_sql(job: i64, t: &TableCopy, moved: &str) -> String {
    format!(
        "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; \
         ALTER TABLE {table} FORCE ROW LEVEL SECURITY; \
         DROP POLICY IF EXISTS shardgate_rows ON {table}; \
         CREATE POLICY shardgate_rows ON {table} USING (true) WITH CHECK (true); \
         DROP POLICY IF EXISTS shardgate_copies ON {table}; \
         CREATE POLICY shardgate_copies ON {table} AS RESTRICTIVE USING ( \
           coalesce(pg_catalog.current_setting('shardgate.fanout', true), '') <> 'on' \
           OR (SELECT role FROM shardgate.reshard_roles WHERE job_id = {job}) IS DISTINCT FROM 'shadow' \
           OR NOT coalesce({moved}, false)) WITH CHECK (true)",
        table = t.table,
    )
}

/// What removes a table's capture again (at finish, rollback or abort).
pub fn remove_sql(table: &str) -> String {
    format!(
        "DROP TRIGGER IF EXISTS shardgate_capture ON {table}; DROP FUNCTION IF EXISTS {}(); \
         DROP POLICY IF EXISTS shardgate_copies ON {table}; \
         DROP POLICY IF EXISTS shardgate_rows ON {table}; \
         ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY; \
         ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
        function_name(table)
    )
}

/// Forgets `job` on a side once no trigger of it is left (its changes all copied).
pub fn forget_sql(job: i64) -> String {
    format!(
        "DELETE FROM shardgate.reshard_roles WHERE job_id = {job}; \
         DELETE FROM shardgate.reshard_changes WHERE job_id = {job}"
    )
}

fn function_name(table: &str) -> String {
    format!("shardgate.{}", quote_ident(&format!("capture_{table}")))
}
