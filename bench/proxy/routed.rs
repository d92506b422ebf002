//! The routed scenario (`BENCH_SCENARIO=routed`, issue 3): pgbench's key-routed script through
//! shardgate across two shards, each a cluster of its own holding only the `pgbench_accounts` rows
//! it owns under shardgate's hash, next to the same script against the unsharded server.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use shardgate::cluster::{Cluster, PgBinaries};
use shardgate::router::hash::{bucket_of, hash_int};

use crate::pgbench::{Login, Pgbench};

/// Shard clusters.
pub const SHARDS: usize = 2;
/// Hash buckets, split into `SHARDS` contiguous ranges.
pub const BUCKETS: u32 = 1024;
/// One key-routed point read per transaction: pgbench's `-S` script, run from a file.
pub const SCRIPT: &str = "\\set aid random(1, 100000 * :scale)\n\
                          SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n";
/// Rows per `pgbench -i` scale unit in `pgbench_accounts`.
const ACCOUNTS_PER_SCALE: i64 = 100_000;

/// Writes the script where pgbench can read it (`-f`).
pub fn write_script(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("routed.sql");
    std::fs::write(&path, SCRIPT).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The first bucket of shard `i`.
fn first_bucket(i: usize) -> u32 {
    (i as u64 * u64::from(BUCKETS) / SHARDS as u64) as u32
}

/// The shard that owns `aid`, as shardgate decides it: PostgreSQL's partition hash of the key
/// (`key_type: bigint`), its bucket, the bucket's range in the map.
fn shard_of(aid: i64) -> usize {
    let bucket = bucket_of(hash_int(aid), BUCKETS);
    (0..SHARDS)
        .rev()
        .find(|&i| first_bucket(i) <= bucket)
        .unwrap_or(0)
}

/// The database's `sharding:` and `tables:` lines in shardgate's config (under `databases.<db>`).
pub fn sharding_yaml() -> String {
    let map: Vec<String> = (0..SHARDS)
        .map(|i| {
            let last = first_bucket(i + 1) - 1;
            format!("{{ buckets: {}-{last}, shard: s{i} }}", first_bucket(i))
        })
        .collect();
    format!(
        "    sharding: {{ key_type: bigint, function: hash, buckets: {BUCKETS}, map: [{}] }}\n    \
         tables: {{ pgbench_accounts: aid }}\n",
        map.join(", ")
    )
}

/// The script, for the results' header.
pub fn describe_script() -> String {
    let lines: Vec<String> = SCRIPT.lines().map(|l| format!("`{l}`")).collect();
    format!("routed.sql: {}", lines.join(" then "))
}

/// The targets, for the results' header.
pub fn describe_targets() -> String {
    format!(
        "direct and pgbouncer as in the foundation scenario; shardgate: one shard in front of \
         direct (pass-through, the foundation's configuration); shardgate-routed: {SHARDS} shard \
         clusters on this machine, configured like direct, pgbench_accounts hash-sharded on aid \
         (bigint, {BUCKETS} buckets split evenly), each loaded by pgbench -i and left with only \
         the rows shardgate routes to it (counts checked)"
    )
}

/// Starts the shard clusters and loads each with `pgbench -i -s scale`, less the accounts other
/// shards own. Returns them in shard order with their logins.
pub fn start_shards(
    bins: &PgBinaries,
    base: &Path,
    pgbench: &Pgbench,
    scale: u32,
) -> anyhow::Result<Vec<(Cluster, Login)>> {
    let mut shards = Vec::new();
    for i in 0..SHARDS {
        let pg = crate::start_postgres(bins, base, &format!("s{i}"))?;
        let login = crate::login(&pg);
        eprintln!("bench: shard s{i}: pgbench -i -s {scale}, keeping its own rows …");
        pgbench
            .initialize(&login, scale)
            .map_err(anyhow::Error::msg)?;
        keep_owned(&pg, i, scale)?;
        shards.push((pg, login));
    }
    Ok(shards)
}

/// Deletes the accounts shard `shard` does not own, decided by shardgate's own hash: their keys
/// are copied in, then deleted by a join; the table is rewritten compact. Then checks the count.
fn keep_owned(pg: &Cluster, shard: usize, scale: u32) -> anyhow::Result<()> {
    let accounts = 1..=ACCOUNTS_PER_SCALE * i64::from(scale);
    let mut sql = String::from("CREATE TEMP TABLE gone (aid int);\nCOPY gone FROM STDIN;\n");
    let mut owned = 0usize;
    for aid in accounts {
        if shard_of(aid) == shard {
            owned += 1;
        } else {
            let _ = writeln!(sql, "{aid}");
        }
    }
    sql.push_str(
        "\\.\nDELETE FROM pgbench_accounts a USING gone g WHERE a.aid = g.aid;\n\
         VACUUM FULL ANALYZE pgbench_accounts;\n\
         SELECT count(*) FROM pgbench_accounts;\n",
    );
    let count = pg.psql(crate::DB, &sql)?;
    if count.trim() != owned.to_string() {
        bail!("shard s{shard} kept {count} accounts, shardgate's hash gives it {owned}");
    }
    eprintln!("bench: shard s{shard} holds {owned} accounts");
    Ok(())
}
