//! What `shardgate check-config` prints, and a copy of the config fit to show (admin `/v1/config`).
//! Neither ever contains a secret: user passwords, URL passwords and the admin token are replaced.

use std::fmt::Write;

use super::target::redact_url;
use super::{
    AuthMethod, Config, CrossShard, DatabaseConfig, PoolMode, ShardingConfig, ShardingFunction,
};

const REDACTED: &str = "***";

impl Config {
    /// A human-readable account of the config, without secrets.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        self.write_summary(&mut out)
            .expect("writing to a String cannot fail");
        out
    }

    fn write_summary(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "listen: {}", self.listen)?;
        let token = if self.admin.token.is_some() {
            "token set"
        } else {
            "no token"
        };
        writeln!(out, "admin: {} ({token})", self.admin.listen)?;
        match &self.tls {
            Some(tls) => writeln!(
                out,
                "tls: on (cert {}, key {})",
                tls.cert.display(),
                tls.key.display()
            )?,
            None => writeln!(out, "tls: off")?,
        }
        let users: Vec<String> = self
            .users
            .iter()
            .map(|u| format!("{} ({})", u.name, auth_name(u.auth)))
            .collect();
        writeln!(out, "users: {}", users.join(", "))?;
        let p = &self.pool;
        let mode = match p.mode {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        };
        writeln!(
            out,
            "pool: mode {mode}, size {}, checkout timeout {} ms, max clients {}, connect timeout {} ms",
            p.size, p.checkout_timeout_ms, p.max_clients, p.connect_timeout_ms
        )?;
        let h = &self.health;
        writeln!(
            out,
            "health: checks every {} ms, timeout {} ms, banned after {} failed checks",
            h.interval_ms, h.timeout_ms, h.failures_to_ban
        )?;
        match &self.control {
            Some(url) => writeln!(out, "control: {}", redact_url(url))?,
            None => writeln!(out, "control: none (resharding unavailable)")?,
        }
        for (name, db) in &self.databases {
            write_database(out, name, db)?;
        }
        Ok(())
    }

    /// A copy with every secret replaced by `***`.
    pub fn redacted(&self) -> Config {
        let mut copy = self.clone();
        if let Some(token) = &mut copy.admin.token {
            *token = REDACTED.into();
        }
        for user in &mut copy.users {
            user.password = REDACTED.into();
        }
        if let Some(url) = &mut copy.control {
            *url = redact_url(url);
        }
        for db in copy.databases.values_mut() {
            for shard in db.shards.values_mut() {
                shard.primary = redact_url(&shard.primary);
                for replica in &mut shard.replicas {
                    *replica = redact_url(replica);
                }
            }
        }
        copy
    }
}

fn auth_name(auth: AuthMethod) -> &'static str {
    match auth {
        AuthMethod::ScramSha256 => "scram-sha-256",
        AuthMethod::Md5 => "md5",
    }
}

fn write_database(out: &mut String, name: &str, db: &DatabaseConfig) -> std::fmt::Result {
    writeln!(out, "\ndatabase {name}:")?;
    writeln!(out, "  shards:")?;
    for (shard, config) in &db.shards {
        let replicas = match config.replicas.len() {
            1 => "1 replica".to_string(),
            n => format!("{n} replicas"),
        };
        writeln!(
            out,
            "    {shard}: {} ({replicas})",
            redact_url(&config.primary)
        )?;
        for replica in &config.replicas {
            writeln!(out, "      replica: {}", redact_url(replica))?;
        }
    }
    match &db.sharding {
        Some(sharding) => write_sharding(out, sharding)?,
        None => writeln!(
            out,
            "  sharding: none (every statement goes to the one shard)"
        )?,
    }
    if !db.tables.is_empty() {
        let tables: Vec<String> = db.tables.iter().map(|(t, k)| format!("{t}({k})")).collect();
        writeln!(out, "  sharded tables: {}", tables.join(", "))?;
    }
    if !db.reference_tables.is_empty() {
        writeln!(
            out,
            "  reference tables: {}",
            db.reference_tables.join(", ")
        )?;
    }
    match &db.default_shard {
        Some(shard) => writeln!(out, "  default shard: {shard}")?,
        None => writeln!(
            out,
            "  default shard: none (statements on other tables are rejected)"
        )?,
    }
    let r = &db.routing;
    let cross = |c: CrossShard| match c {
        CrossShard::Allow => "allow",
        CrossShard::Reject => "reject",
    };
    writeln!(
        out,
        "  routing: cross-shard reads {}, cross-shard writes {}, read replicas {}, max replica lag {} ms, read your writes {}",
        cross(r.cross_shard_reads),
        cross(r.cross_shard_writes),
        on_off(r.read_replicas),
        r.max_replica_lag_ms,
        on_off(r.read_your_writes)
    )
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn write_sharding(out: &mut String, s: &ShardingConfig) -> std::fmt::Result {
    let key_type = s.key_type.sql_name();
    let scalar = |v: &Option<super::serde_yaml_value::Scalar>| match v {
        None => "unbounded".to_string(),
        Some(super::serde_yaml_value::Scalar::Int(i)) => i.to_string(),
        Some(super::serde_yaml_value::Scalar::Text(t)) => format!("{t:?}"),
    };
    match s.function {
        ShardingFunction::Hash => {
            let buckets = s.buckets.unwrap_or_default();
            writeln!(out, "  sharding: hash of {key_type} key, {buckets} buckets")?;
            for entry in &s.map {
                let range = entry.buckets.as_deref().unwrap_or("?");
                writeln!(out, "    buckets {range} -> {}", entry.shard)?;
            }
        }
        ShardingFunction::Range => {
            writeln!(out, "  sharding: range of {key_type} key")?;
            for entry in &s.map {
                let (from, to) = (scalar(&entry.from), scalar(&entry.to));
                writeln!(out, "    from {from} to {to} -> {}", entry.shard)?;
            }
        }
        ShardingFunction::List => {
            writeln!(out, "  sharding: list of {key_type} key")?;
            for entry in &s.map {
                let values: Vec<String> = entry
                    .values
                    .iter()
                    .flatten()
                    .map(|v| scalar(&Some(v.clone())))
                    .collect();
                writeln!(out, "    values {} -> {}", values.join(", "), entry.shard)?;
            }
        }
    }
    Ok(())
}
