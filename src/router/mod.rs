//! Decides which shard(s) a statement goes to. Pure: no I/O. sqlparser types never leave here.
//!
//! Two steps, so that repeated statements cost a hash lookup:
//! - [`Router::plan`]: from the statement text alone (cached per text, and kept with each prepared
//!   statement) — which sharded tables it touches and where their keys come from;
//! - [`Router::resolve`]: with the bind parameters (and the shard the transaction is pinned to) —
//!   the shard or shards it goes to, or the error the client gets.

mod analyze;
mod catalog;
mod columns;
pub mod copy;
mod dml;
pub mod hash;
mod hint;
pub mod key;
pub mod lex;
mod literal;
mod map;
pub mod merge;
mod params;
mod plan;
pub mod reads;
pub mod report;
mod split;
mod statement;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use copy::{CopyFormat, CopyIn, CopyKeyError, CsvNull, Dialect};
pub use key::KeyValue;
pub use merge::MergeSpec;
pub use params::Params;
pub use plan::{Broadcast, KeyProblem, KeySource, Keyed, Merge, Plan, RouteError, Scatter, Target};
pub use split::InsertSplit;

use crate::config::{DatabaseConfig, RoutingMode};
use crate::topology::columns::Columns;
use crate::topology::{Database, Shard, Snapshot};
use catalog::Catalog;
use map::ShardMap;

/// Plans kept per router; past this the cache starts over (statements with inlined literals
/// would otherwise grow it without bound).
const PLAN_CACHE_ENTRIES: usize = 8192;

/// A statement's plan, and whether a replica may answer it.
#[derive(Clone)]
pub struct Planned {
    pub plan: Arc<Plan>,
    pub replica_safe: bool,
}

/// The router of one database under one snapshot.
pub struct Router {
    /// The [`Snapshot::version`] it was built from.
    pub version: u64,
    shard_names: Vec<Arc<str>>,
    default_shard: Option<usize>,
    catalog: Catalog,
    routing: crate::config::RoutingConfig,
    map: ShardMap,
    /// Keys a resharding cutover holds now ([`Router::holds`]).
    held: Option<map::Held>,
    /// Whether statements need routing at all (more than one shard, not in shadow mode).
    sharded: bool,
    /// `routing.mode: shadow`: statements are planned only to be reported.
    shadow: bool,
    anywhere: Arc<Plan>,
    /// Plans per text, each with whether a replica may answer it ([`Router::planned`]).
    cache: Mutex<HashMap<Box<str>, Planned>>,
    /// Shadow mode: statements already reported (each distinct text once per epoch), shared by
    /// the workers' routers of one version ([`Routers::get`]).
    reported: Arc<Mutex<std::collections::HashSet<Box<str>>>>,
}

impl Router {
    /// `columns`: the sharded tables' columns as read from the shards, if they were.
    pub fn new(
        config: &DatabaseConfig,
        db: &Database,
        version: u64,
        columns: Option<Arc<Columns>>,
    ) -> Router {
        let shard_names: Vec<Arc<str>> = db.shards.iter().map(|s| s.name.clone()).collect();
        let index = |name: &str| shard_names.iter().position(|s| &**s == name);
        Router {
            version,
            map: ShardMap::new(config, index),
            held: config
                .sharding
                .as_ref()
                .and_then(|s| Some(map::Held::new(s.held.as_ref()?, s.key_type))),
            default_shard: db.default_shard,
            catalog: Catalog::new(config, columns.unwrap_or_default()),
            routing: config.routing.clone(),
            sharded: db.shards.len() > 1 && config.routing.mode == RoutingMode::Enforce,
            shadow: config.routing.mode == RoutingMode::Shadow && !config.tables.is_empty(),
            shard_names,
            anywhere: Arc::new(Plan::Anywhere),
            cache: Mutex::new(HashMap::new()),
            reported: Arc::default(),
        }
    }

    /// Whether this database has more than one shard (else everything goes to the only one).
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// Whether the session must plan its statements: to pick a shard, or to send safe reads to
    /// replicas (`routing.read_replicas`, also with one shard).
    pub fn routes(&self) -> bool {
        self.sharded || self.routing.read_replicas
    }

    /// `routing.read_replicas`, and with it `max_replica_lag_ms` and `read_your_writes`.
    pub fn replicas(&self) -> Option<&crate::config::RoutingConfig> {
        self.routing.read_replicas.then_some(&self.routing)
    }

    /// The bucket of a key under a hash map, `None` for range and list maps (for messages and
    /// hotspot tracking, DESIGN §2.6).
    pub fn bucket(&self, key: &KeyValue) -> Option<u32> {
        self.map.bucket(key)
    }

    /// The index of the shard called `name`.
    pub fn shard_index(&self, name: &str) -> Option<usize> {
        self.shard_names.iter().position(|s| &**s == name)
    }

    pub fn shard_name(&self, index: usize) -> &str {
        self.shard_names.get(index).map_or("?", |s| s)
    }

    /// Whether a transaction may write on several shards (`routing.cross_shard_writes: allow`).
    pub fn allows_cross_shard_writes(&self) -> bool {
        self.routing.cross_shard_writes == crate::config::CrossShard::Allow
    }

    /// Whether statements are only planned to be reported (`routing.mode: shadow`).
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }

    /// Shadow mode: what `sql` would have needed, the first time it is seen in this epoch and
    /// only when that is more than one shard or a refusal.
    pub fn shadow_report(&self, sql: &str) -> Option<report::Decision> {
        let decision = report::shadow(&self.plan_listed(sql))?;
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        if reported.len() >= PLAN_CACHE_ENTRIES {
            reported.clear();
        }
        reported.insert(sql.into()).then_some(decision)
    }

    /// The plan of the text the shards get for `sql`: its own, or with an INSERT's columns
    /// listed ([`Plan::ListColumns`]).
    pub fn plan_listed(&self, sql: &str) -> Arc<Plan> {
        let plan = self.plan(sql);
        match &*plan {
            Plan::ListColumns(listed) => self.plan(listed),
            _ => plan,
        }
    }

    /// The plan for a statement text, cached.
    pub fn plan(&self, sql: &str) -> Arc<Plan> {
        self.planned(sql).plan
    }

    /// The plan for a statement text and whether a replica may answer it (worked out only with
    /// `read_replicas`: [`reads::is_replica_safe`]), cached.
    pub fn planned(&self, sql: &str) -> Planned {
        let plans = self.sharded || self.shadow;
        if !plans && !self.routing.read_replicas {
            return Planned {
                plan: self.anywhere.clone(),
                replica_safe: false,
            };
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(planned) = cache.get(sql) {
            return planned.clone();
        }
        drop(cache);
        let planned = Planned {
            plan: match self.plan_uncached(sql) {
                plan if plans => Arc::new(plan),
                // One shard with replicas: only where transactions start and end matters (a
                // BEGIN is deferred, so a READ ONLY one may start on a replica).
                plan @ (Plan::Begin | Plan::End) => Arc::new(plan),
                _ => self.anywhere.clone(),
            },
            replica_safe: self.routing.read_replicas && reads::is_replica_safe(sql),
        };
        cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= PLAN_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(sql.into(), planned.clone());
        planned
    }

    /// A simple query planned by its shape, so one cached plan serves every value: its integer
    /// literals become parameters (`WHERE id = 42` and `WHERE id = 43` share
    /// `WHERE id = $1`), and the literals are returned as those parameters' values. Only a
    /// statement whose shape then needs exactly one shard is routed this way (its own text is
    /// what the shard gets); anything else is `None`, to be planned from its own text.
    /// In a database with one shard (and replicas) every statement with a number is taken by
    /// its shape, with no parameters: its plan is the only shard anyway.
    pub fn plan_shape<'a>(&self, sql: &'a str) -> Option<(Planned, Params<'a>)> {
        if !self.sharded {
            // One shard with replicas: the shape still decides whether a replica may answer,
            // so statements that differ only in their numbers are parsed once.
            let (shape, _) = lex::integer_literals(sql).filter(|_| self.routing.read_replicas)?;
            return Some((self.planned(&shape), Params::text(Vec::new())));
        }
        let (shape, literals) = lex::integer_literals(sql)?;
        let planned = self.planned(&shape);
        let plan = &planned.plan;
        if !matches!(**plan, Plan::Keyed(_)) {
            return None;
        }
        let values = literals
            .into_iter()
            .map(|r| Some(&sql.as_bytes()[r]))
            .collect();
        let params = Params::text(values);
        let one = matches!(
            self.resolve(plan, Some(&params), None),
            Ok(Target::Shard(_))
        );
        one.then_some((planned, params))
    }

    fn plan_uncached(&self, sql: &str) -> Plan {
        if let Some(hinted) = hint::plan(sql, &self.shard_names, self.catalog.key_type) {
            return hinted;
        }
        let cx = statement::Context {
            catalog: &self.catalog,
            routing: &self.routing,
        };
        statement::plan_text(sql, &cx)
    }

    /// Where a planned statement goes, given its parameters (none for a simple query) and the
    /// shard the current transaction is pinned to.
    pub fn resolve(
        &self,
        plan: &Plan,
        params: Option<&Params>,
        pinned: Option<usize>,
    ) -> Result<Target, RouteError> {
        if !self.sharded {
            return Ok(Target::Any);
        }
        match plan {
            Plan::Anywhere | Plan::Begin | Plan::End | Plan::Reference => Ok(Target::Any),
            Plan::Home { table } => {
                self.default_shard
                    .map(Target::Shard)
                    .ok_or_else(|| RouteError::NoHome {
                        table: table.clone(),
                    })
            }
            Plan::Shard(i) => Ok(Target::Shard(*i)),
            Plan::Unparsed {
                what,
                sharded: None,
            } => pinned
                .or(self.default_shard)
                .map(Target::Shard)
                .ok_or_else(|| RouteError::Unparsed {
                    reason: what.clone(),
                }),
            Plan::Unparsed {
                what,
                sharded: Some(table),
            } => pinned
                .map(Target::Shard)
                .ok_or_else(|| RouteError::UnparsedSharded {
                    reason: what.clone(),
                    table: table.clone(),
                }),
            Plan::Keyed(k) => {
                let target = mergeable(self.keyed(k, params)?, &k.merge)?;
                match (&target, k.split.as_deref()) {
                    (Target::Shards(_), Some(Err(e))) => Err(e.clone()),
                    _ => Ok(target),
                }
            }
            // Rows live only on shards that own keys.
            Plan::Scatter(s) => {
                mergeable(shards(self.map.owners(self.shard_names.len())), &s.merge)
            }
            // Each row goes to its key's owner: every shard that owns keys takes part.
            Plan::CopyIn(_) => Ok(shards(self.map.owners(self.shard_names.len()))),
            // Schema and reference tables live on every shard, owner of keys or not.
            Plan::Broadcast(_) => Ok(shards((0..self.shard_names.len()).collect())),
            Plan::Multi(plans) => self.resolve_all(plans, pinned),
            Plan::ListColumns(listed) => match &*self.plan(listed) {
                // Listed text lists the columns: planning it again lists nothing.
                Plan::ListColumns(_) => Err(RouteError::Unsupported {
                    what: "shardgate could not list the columns of this INSERT".into(),
                    hint: "List the table's columns in the INSERT.".into(),
                }),
                plan => self.resolve(plan, params, pinned),
            },
            Plan::Reject(e) => Err(e.clone()),
        }
    }

    /// The statements of one simple query run as one implicit transaction: one shard for all.
    fn resolve_all(&self, plans: &[Plan], pinned: Option<usize>) -> Result<Target, RouteError> {
        let mut target = Target::Any;
        for plan in plans {
            let next = self.resolve(plan, None, pinned)?;
            target = match (target, next) {
                (Target::Any, t) | (t, Target::Any) => t,
                // The same shard, or the same shards for statements that all broadcast.
                (a, b) if a == b => a,
                _ => {
                    return Err(RouteError::Unsupported {
                        what: "the statements of this query go to different shards".into(),
                        hint: "Send them as separate queries, each with its own sharding key."
                            .into(),
                    })
                }
            };
        }
        Ok(target)
    }

    /// Whether a statement touches keys a cutover holds (a statement without a key, across the
    /// shards, may touch any): a transaction that would start with it waits until the new map
    /// is out (or the hold's bound passes).
    pub fn holds(&self, plan: &Plan, params: Option<&Params>) -> bool {
        let Some(hold) = &self.held else {
            return false;
        };
        match plan {
            Plan::Keyed(k) => k.keys.iter().any(|source| {
                params::keys(source, params, self.catalog.key_type)
                    .map(|keys| keys.iter().flatten().any(|key| hold.holds(&self.map, key)))
                    .unwrap_or(false)
            }),
            Plan::Multi(plans) => plans.iter().any(|p| self.holds(p, None)),
            Plan::ListColumns(listed) => match &*self.plan(listed) {
                Plan::ListColumns(_) => false,
                plan => self.holds(plan, params),
            },
            // Every shard's rows of sharded tables, the held keys' among them: while the
            // owners' roles are being switched they would count a moved row on both sides (or
            // on neither), so they wait for the new map as the held keys' statements do.
            Plan::Scatter(_) | Plan::CopyIn(_) | Plan::Broadcast(Broadcast::CrossShardWrite) => {
                hold.in_force()
            }
            _ => false,
        }
    }

    /// Whether any key is held now.
    pub fn holding(&self) -> bool {
        self.held.as_ref().is_some_and(map::Held::in_force)
    }

    /// The first key a keyed statement gives (for hotspot counting); `None` when it comes from a
    /// parameter not known yet, is NULL, or cannot be read.
    pub fn first_key(&self, k: &Keyed, params: Option<&Params>) -> Option<KeyValue> {
        let source = k.keys.first()?;
        params::keys(source, params, self.catalog.key_type)
            .ok()?
            .into_iter()
            .flatten()
            .next()
    }

    /// The shard of each row of a multi-row INSERT.
    pub fn row_shards(&self, k: &Keyed, params: Option<&Params>) -> Result<Vec<usize>, RouteError> {
        k.keys
            .iter()
            .map(|source| {
                let key = params::keys(source, params, self.catalog.key_type)?
                    .pop()
                    .flatten()
                    .ok_or_else(|| null_key(k))?;
                self.map.shard_of(&key).ok_or_else(|| unowned(&key, k))
            })
            .collect()
    }

    fn keyed(&self, k: &Keyed, params: Option<&Params>) -> Result<Target, RouteError> {
        let mut found: Vec<usize> = Vec::new();
        for source in &k.keys {
            for key in params::keys(source, params, self.catalog.key_type)? {
                let Some(key) = key else {
                    if k.write {
                        return Err(null_key(k));
                    }
                    continue; // `key = NULL` matches no row anywhere
                };
                let shard = self.map.shard_of(&key).ok_or_else(|| unowned(&key, k))?;
                if !found.contains(&shard) {
                    found.push(shard);
                }
            }
        }
        if found.len() > 1 && !k.colocated {
            return Err(RouteError::Unsupported {
                what: format!("the keys of this statement on \"{}\" and the tables joined with it live on different shards", k.table),
                hint: "Join sharded tables on their sharding keys, or query each shard's rows separately.".into(),
            });
        }
        Ok(shards(found))
    }
}

/// A read that needs several shards is refused when its rows cannot be merged.
fn mergeable(target: Target, merge: &Merge) -> Result<Target, RouteError> {
    match (&target, merge.as_deref()) {
        (Target::Shards(_), Some(Err(e))) => Err(e.clone()),
        _ => Ok(target),
    }
}

fn null_key(k: &Keyed) -> RouteError {
    let message = format!("the sharding key of \"{}\" must not be NULL", k.table);
    RouteError::BadKey(KeyProblem::Null, message)
}

fn unowned(key: &KeyValue, k: &Keyed) -> RouteError {
    let message = format!("no shard owns key {key} of \"{}\"", k.table);
    RouteError::BadKey(KeyProblem::Unowned, message)
}

fn shards(mut found: Vec<usize>) -> Target {
    found.sort_unstable();
    match found.as_slice() {
        [] => Target::Any,
        [one] => Target::Shard(*one),
        _ => Target::Shards(found),
    }
}

/// The routers of every database, rebuilt when the snapshot changes.
#[derive(Default)]
pub struct Routers {
    by_db: Mutex<HashMap<(String, usize), Arc<Router>>>,
}

impl Routers {
    /// Worker `worker`'s router of `database` under `snapshot`; `None` if the database is not
    /// configured. Each worker ([`crate::workers`]) has routers of its own: a session takes a
    /// reference to its router and to a cached plan for every statement, and locks the plan
    /// cache, and on a router shared by the workers each of those passed a cache line between
    /// the cores.
    pub fn get(&self, snapshot: &Snapshot, database: &str, worker: usize) -> Option<Arc<Router>> {
        let mut by_db = self.by_db.lock().unwrap_or_else(|p| p.into_inner());
        let key = (database.to_string(), worker);
        if let Some(r) = by_db.get(&key).filter(|r| r.version == snapshot.version) {
            return Some(r.clone());
        }
        let config = snapshot.config.databases.get(database)?;
        let db = snapshot.databases.get(database)?;
        let columns = snapshot.columns.get(database).cloned();
        let mut router = Router::new(config, db, snapshot.version, columns);
        // Another worker's router of this version: a statement is reported once, not per worker.
        let sibling = by_db
            .iter()
            .find(|((d, _), r)| d == database && r.version == snapshot.version);
        if let Some((_, sibling)) = sibling {
            router.reported = sibling.reported.clone();
        }
        let router = Arc::new(router);
        by_db.insert(key, router.clone());
        Some(router)
    }
}

/// The shard a statement with no particular target uses: pinned, else default, else the first.
pub fn fallback_shard(db: &Database, pinned: Option<usize>) -> usize {
    pinned
        .or(db.default_shard)
        .filter(|&i| i < db.shards.len())
        .unwrap_or(0)
}

/// The default shard (the single shard of an unsharded database).
pub fn default_shard(db: &Database) -> &Shard {
    &db.shards[fallback_shard(db, None)]
}
