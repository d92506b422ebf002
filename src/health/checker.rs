//! The task that checks every server once per interval, each over its own long-lived control
//! connection, and publishes what the round found.
//!
//! Order of one round: read the config from the current snapshot (so servers added or removed
//! by a reload are followed), drop the connections of servers no longer named, check every
//! server at once (each check bounded by `health.timeout_ms`), update each server's state, then
//! build the report (the shard's primary now, each replica's lag from the same round) and swap
//! it in.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};
use tokio_util::sync::CancellationToken;

use super::lsn::Lsn;
use super::state::{self, choose_primary, Kind, Observation, Role, Tracker};
use super::{Monitor, Overrides, Report, ServerHealth, ServerKey, ShardHealth};
use crate::backend::control::describe;
use crate::config::Config;
use crate::topology::Store;

/// One round trip, valid on a primary and on a replica: `CASE` calls only the function that
/// the server's role allows (`pg_current_wal_lsn()` fails in recovery). The replay age is
/// computed on the server, so shardgate's clock does not enter it.
const QUERY: &str = "SELECT r, \
     CASE WHEN r THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, \
     pg_last_wal_receive_lsn(), \
     (extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::bigint \
     FROM pg_is_in_recovery() AS r";

/// Checks every server of every database until `stop`, publishing each round in `monitor`.
pub async fn run(store: Arc<Store>, monitor: Arc<Monitor>, stop: CancellationToken) {
    let mut checker = Checker::default();
    loop {
        let config = store.load().config.clone();
        let overrides = monitor.overrides();
        let report = tokio::select! {
            report = checker.round(&config, &overrides) => report,
            _ = stop.cancelled() => return,
        };
        monitor.publish(report);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(config.health.interval_ms)) => {}
            _ = stop.cancelled() => return,
        }
    }
    // Dropping `checker` drops every control connection.
}

/// One server and its control connection, kept across rounds.
struct Server {
    /// The URL it was configured with (password included); a reload that changes it reconnects.
    url: String,
    /// What the first shard naming it calls it, to flag a server that is something else now.
    configured: Role,
    /// `None` before the first check and after any failure: the next check connects anew.
    client: Option<Client>,
    tracker: Tracker,
}

/// One shard as the config names its servers: index 0 the primary, then the replicas.
struct Planned {
    database: String,
    shard: String,
    servers: Vec<ServerKey>,
}

#[derive(Default)]
struct Checker {
    servers: HashMap<ServerKey, Server>,
    /// Per (database, shard): the server that took writes last round, so a failover sticks
    /// (see [`choose_primary`]) and a change is logged once.
    primaries: HashMap<(String, String), Option<ServerKey>>,
    round: u64,
}

impl Checker {
    async fn round(&mut self, config: &Config, overrides: &Overrides) -> Report {
        let plan = self.follow(config);
        let timeout = Duration::from_millis(config.health.timeout_ms);
        let checks = self
            .servers
            .iter_mut()
            .map(|(key, server)| async move { (key.clone(), server.check(timeout).await) });
        let outcomes = join_all(checks).await;
        let now = SystemTime::now();
        for (key, outcome) in outcomes {
            let server = self.servers.get_mut(&key).expect("checked servers stay");
            let change = server
                .tracker
                .record(outcome, now, config.health.failures_to_ban);
            if let Some((before, after)) = change {
                log_change(&key, server, before, after);
            }
        }
        self.round += 1;
        let mut report = Report {
            round: self.round,
            databases: Default::default(),
        };
        for shard in &plan {
            let health = self.shard_health(shard, overrides);
            report
                .databases
                .entry(shard.database.clone())
                .or_default()
                .insert(shard.shard.clone(), health);
        }
        report
    }

    /// Takes in the servers `config` names and drops the others with their connections.
    fn follow(&mut self, config: &Config) -> Vec<Planned> {
        let mut plan = Vec::new();
        let mut named: HashMap<ServerKey, (String, Role)> = HashMap::new();
        for (database, db) in &config.databases {
            for (shard, cfg) in &db.shards {
                let urls = std::iter::once((&cfg.primary, Role::Primary))
                    .chain(cfg.replicas.iter().map(|u| (u, Role::Replica)));
                let mut servers = Vec::new();
                for (url, role) in urls {
                    // Validated with the config: a URL that does not parse never gets here.
                    let Some(key) = ServerKey::of_url(url) else {
                        continue;
                    };
                    named.entry(key.clone()).or_insert((url.clone(), role));
                    servers.push(key);
                }
                plan.push(Planned {
                    database: database.clone(),
                    shard: shard.clone(),
                    servers,
                });
            }
        }
        self.servers.retain(|key, _| named.contains_key(key));
        for (key, (url, configured)) in named {
            let server = self.servers.entry(key).or_insert_with(|| Server {
                url: url.clone(),
                configured,
                client: None,
                tracker: Tracker::default(),
            });
            if server.url != url {
                server.url = url;
                server.client = None;
            }
            server.configured = configured;
        }
        self.primaries.retain(|id, _| {
            plan.iter()
                .any(|p| (&p.database, &p.shard) == (&id.0, &id.1))
        });
        plan
    }

    /// The shard's servers as this round left them, its primary now and each replica's lag.
    fn shard_health(&mut self, shard: &Planned, overrides: &Overrides) -> ShardHealth {
        let states: Vec<_> = shard
            .servers
            .iter()
            .map(|key| self.servers[key].tracker.state().clone())
            .collect();
        // A demoted server is never the primary again, writable or not.
        let roles: Vec<Option<Role>> = states
            .iter()
            .map(|s| s.observed().map(|o| o.role))
            .zip(&shard.servers)
            .map(|(role, key)| role.filter(|_| !overrides.demoted.contains(key)))
            .collect();
        let id = (shard.database.clone(), shard.shard.clone());
        let promoted = overrides.promoted.get(&id).cloned();
        let last = promoted.or_else(|| self.primaries.get(&id).cloned().flatten());
        let previous = last
            .as_ref()
            .and_then(|k| shard.servers.iter().position(|s| s == k));
        let primary = choose_primary(&roles, previous);
        let now = primary.map(|i| shard.servers[i].clone());
        if self.primaries.get(&id) != Some(&now) {
            log_primary(&shard.database, &shard.shard, now.as_ref());
        }
        self.primaries.insert(id, now);
        let primary_lsn = primary.and_then(|i| states[i].observed().and_then(|o| o.lsn));
        let servers = shard
            .servers
            .iter()
            .zip(states)
            .enumerate()
            .map(|(i, (key, state))| {
                let replica = state.observed().filter(|o| o.role == Role::Replica);
                let lag = primary_lsn.zip(replica).and_then(|(p, r)| state::lag(p, r));
                ServerHealth {
                    key: key.clone(),
                    configured: if i == 0 { Role::Primary } else { Role::Replica },
                    state,
                    lag,
                    demoted: overrides.demoted.contains(key),
                }
            })
            .collect();
        ShardHealth { servers, primary }
    }
}

impl Server {
    /// One check: the query on the open connection, or on a new one.
    async fn check(&mut self, timeout: Duration) -> Result<Observation, String> {
        let outcome = match tokio::time::timeout(timeout, self.try_check(timeout)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "no answer within {} ms (health.timeout_ms)",
                timeout.as_millis()
            )),
        };
        if outcome.is_err() {
            // Its state is unknown (a reply may still come): never reuse it.
            self.client = None;
        }
        outcome
    }

    async fn try_check(&mut self, timeout: Duration) -> Result<Observation, String> {
        if let Some(client) = self.client.as_ref().filter(|c| !c.is_closed()) {
            match observe(client).await {
                Ok(observed) => return Ok(observed),
                // The server closed our idle connection (a restart, an idle timeout, someone
                // ran pg_terminate_backend): a fresh connection decides, not the stale one.
                Err(Failure::Closed) => {}
                Err(Failure::Failed(why)) => return Err(why),
            }
        }
        self.client = None;
        let client = connect(&self.url, timeout).await?;
        let observed = observe(&client).await.map_err(|f| match f {
            Failure::Closed => "the server closed the connection right after login".to_string(),
            Failure::Failed(why) => why,
        });
        self.client = Some(client);
        observed
    }
}

async fn connect(url: &str, timeout: Duration) -> Result<Client, String> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| describe(&e))?;
    config.connect_timeout(timeout);
    config.application_name("shardgate-health");
    let (client, connection) = config.connect(NoTls).await.map_err(|e| describe(&e))?;
    // Ends when the client is dropped or the server goes away.
    tokio::spawn(connection);
    Ok(client)
}

/// Why a check on an open connection failed.
enum Failure {
    /// The connection was closed under us: try a fresh one before counting a failure.
    Closed,
    Failed(String),
}

async fn observe(client: &Client) -> Result<Observation, Failure> {
    let messages = client.simple_query(QUERY).await.map_err(|e| {
        if e.is_closed() {
            Failure::Closed
        } else {
            Failure::Failed(describe(&e))
        }
    })?;
    let row = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    // A server that answers with no row or unreadable values is not healthy either.
    let row = row.ok_or_else(|| Failure::Failed("the health query returned no row".into()))?;
    parse_row(row)
        .map_err(|problem| Failure::Failed(format!("unexpected health query answer: {problem}")))
}

/// The query's one row, as text.
fn parse_row(row: &tokio_postgres::SimpleQueryRow) -> Result<Observation, String> {
    let role = match row.get(0) {
        Some("f") => Role::Primary,
        Some("t") => Role::Replica,
        other => return Err(format!("pg_is_in_recovery() returned {other:?}")),
    };
    let lsn = |i: usize| row.get(i).map(Lsn::parse).transpose();
    let since_last_replay_ms = match row.get(3) {
        None => None,
        // Negative when the replica's clock is behind the primary's: call it no age.
        Some(ms) => Some(
            ms.parse::<i64>()
                .map_err(|e| format!("replay age {ms:?}: {e}"))?,
        ),
    };
    Ok(Observation {
        role,
        lsn: lsn(1)?,
        receive_lsn: lsn(2)?,
        since_last_replay_ms: since_last_replay_ms.map(|ms| ms.max(0).unsigned_abs()),
    })
}

/// The error with its causes: tokio-postgres' own text is only the kind ("db error").
fn log_change(key: &ServerKey, server: &Server, before: Kind, after: Kind) {
    match (after, server.tracker.state()) {
        (
            Kind::Banned,
            super::ServerState::Banned {
                reason, failures, ..
            },
        ) => tracing::warn!(
            server = %key, %reason, failures,
            "server banned: its health checks fail; it is checked again every health.interval_ms"
        ),
        (Kind::Up(role), _) if role != server.configured => tracing::warn!(
            server = %key, role = role.name(), configured = server.configured.name(), was = ?before,
            "server up, but not in the role the config gives it (a failover or a promotion?)"
        ),
        (Kind::Up(role), _) => {
            tracing::info!(server = %key, role = role.name(), was = ?before, "server up")
        }
        _ => tracing::info!(server = %key, state = ?after, was = ?before, "server state changed"),
    }
}

fn log_primary(database: &str, shard: &str, primary: Option<&ServerKey>) {
    match primary {
        Some(server) => {
            tracing::info!(%database, %shard, %server, "shard primary (writable server) found")
        }
        None => tracing::warn!(
            %database, %shard,
            "no server of this shard is up and out of recovery: it has no writable primary now"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(s0: &str) -> Config {
        let yaml = format!(
            "listen: 127.0.0.1:0\nusers: [{{ name: a, password: b }}]\n\
             databases:\n  app:\n    shards:\n      s0: {s0}\n"
        );
        Config::parse_with_env(&yaml, &|_| None).expect("valid config")
    }

    const PAIR: &str = "{ primary: \"postgres://u:p@10.0.0.1:5432/app\", \
                        replicas: [\"postgres://u:p@10.0.0.2:5432/app\"] }";

    fn observed(role: Role, lsn: u64, since_last_replay_ms: Option<u64>) -> Observation {
        Observation {
            role,
            lsn: Some(Lsn(lsn)),
            receive_lsn: None,
            since_last_replay_ms,
        }
    }

    /// Records one outcome per server of s0, in config order, and builds the shard's health.
    fn round(
        checker: &mut Checker,
        config: &Config,
        outcomes: Vec<Result<Observation, String>>,
    ) -> ShardHealth {
        let plan = checker.follow(config);
        for (key, outcome) in plan[0].servers.iter().zip(outcomes) {
            let server = checker.servers.get_mut(key).unwrap();
            server.tracker.record(outcome, SystemTime::now(), 1);
        }
        checker.shard_health(&plan[0], &Overrides::default())
    }

    #[test]
    fn lag_is_against_the_current_primary_of_the_same_round() {
        let (mut checker, config) = (Checker::default(), config(PAIR));
        let shard = round(
            &mut checker,
            &config,
            vec![
                Ok(observed(Role::Primary, 1000, None)),
                Ok(observed(Role::Replica, 400, Some(70))),
            ],
        );
        assert_eq!(shard.current_primary(), Some(0));
        assert_eq!(shard.servers[0].lag, None, "a primary has no lag");
        assert_eq!(
            shard.servers[1].lag,
            Some(state::Lag { bytes: 600, ms: 70 })
        );
        assert!(
            shard.servers[1].is_usable_for_reads(70) && !shard.servers[1].is_usable_for_reads(69)
        );

        // The primary down: no primary, and a lag that cannot be measured is no lag of 0.
        let shard = round(
            &mut checker,
            &config,
            vec![
                Err("refused".into()),
                Ok(observed(Role::Replica, 400, Some(90))),
            ],
        );
        assert_eq!(shard.current_primary(), None);
        assert_eq!(shard.servers[1].lag, None);
        assert!(!shard.servers[1].is_usable_for_reads(u64::MAX));

        // Promoted: the replica is the primary, flagged as not what the config says.
        let shard = round(
            &mut checker,
            &config,
            vec![
                Err("refused".into()),
                Ok(observed(Role::Primary, 500, None)),
            ],
        );
        assert_eq!(shard.current_primary(), Some(1));
        assert!(shard.servers[1].role_mismatch() && !shard.servers[0].role_mismatch());
    }

    /// The shard of [`PAIR`] as a snapshot holds it: pools for both servers.
    fn pair_shard() -> crate::topology::Shard {
        let pool = |host: &str| {
            let target = crate::backend::Target {
                host: host.into(),
                port: 5432,
                user: "u".into(),
                password: Some("p".into()),
                database: "app".into(),
            };
            let settings = crate::pool::PoolSettings {
                size: 1,
                checkout_timeout: std::time::Duration::from_secs(1),
                connect_timeout: std::time::Duration::from_secs(1),
                workers: 1,
            };
            crate::pool::Pool::new("s0", target, settings)
        };
        crate::topology::Shard {
            name: "s0".into(),
            primary: pool("10.0.0.1"),
            replicas: vec![pool("10.0.0.2")],
            writer: Default::default(),
        }
    }

    #[test]
    fn writes_follow_each_report_the_decision_kept_until_the_next() {
        // Building a pool starts bb8's reaper: give it a runtime.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let (mut checker, config) = (Checker::default(), config(PAIR));
        let (monitor, shard) = (crate::health::Monitor::new(), pair_shard());
        // Where writes to `shard` of `database` go, asked twice: the second answer is the memo's.
        let writes_to = |database: &str, shard: &crate::topology::Shard| {
            let host = |pool: Option<&crate::pool::Pool>| pool.map(|p| p.target().host.clone());
            let first = host(monitor.writable(database, shard));
            assert_eq!(
                host(monitor.writable(database, shard)),
                first,
                "the memo agrees"
            );
            first.unwrap_or_default()
        };
        let publish = |health: ShardHealth, round: u64| {
            let mut report = Report {
                round,
                databases: Default::default(),
            };
            report
                .databases
                .entry("app".into())
                .or_default()
                .insert("s0".into(), health);
            monitor.publish(report);
        };
        // No round yet: the configured primary.
        assert_eq!(writes_to("app", &shard), "10.0.0.1");

        let promoted = vec![
            Err("refused".into()),
            Ok(observed(Role::Primary, 500, None)),
        ];
        publish(round(&mut checker, &config, promoted), 1);
        assert_eq!(writes_to("app", &shard), "10.0.0.2");

        // Another database's shard of the same name has a memo of its own.
        let other = pair_shard();
        assert_eq!(writes_to("other", &other), "10.0.0.1");

        let back = vec![
            Ok(observed(Role::Primary, 600, None)),
            Ok(observed(Role::Replica, 500, Some(1))),
        ];
        publish(round(&mut checker, &config, back), 2);
        assert_eq!(writes_to("app", &shard), "10.0.0.1");
    }

    #[test]
    fn a_reload_drops_the_servers_it_no_longer_names() {
        let mut checker = Checker::default();
        let plan = checker.follow(&config(PAIR));
        assert_eq!(plan[0].servers.len(), 2);
        assert_eq!(checker.servers.len(), 2);
        let alone = config("{ primary: \"postgres://u:p@10.0.0.1:5432/app\" }");
        let plan = checker.follow(&alone);
        assert_eq!(plan[0].servers.len(), 1);
        assert_eq!(checker.servers.len(), 1);
        assert_eq!(plan[0].servers[0].to_string(), "u@10.0.0.1:5432/app");
        // A new password is a new URL for the same server: same state, fresh connection.
        let changed = config("{ primary: \"postgres://u:q@10.0.0.1:5432/app\" }");
        checker.follow(&changed);
        let server = &checker.servers[&plan[0].servers[0]];
        assert_eq!(server.url, "postgres://u:q@10.0.0.1:5432/app");
        assert!(server.client.is_none());
    }
}
