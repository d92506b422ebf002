//! What the router decides from a statement's text alone (cached per text), and what it decides
//! once the bind parameters are known.

use std::sync::Arc;

use super::copy::CopyIn;
use super::key::KeyValue;
use super::merge::MergeSpec;
use super::split::InsertSplit;

/// Where a key comes from: the statement text, or a bind parameter (0-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Value(KeyValue),
    /// `key = $n`: one key.
    Param(usize),
    /// `key = ANY($n)`: an array of keys.
    ParamArray(usize),
    /// `key = NULL`, or a NULL parameter: matches no row.
    Null,
}

/// The routing decision a statement's text allows, before its parameters are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Touches no shard's data (`SELECT 1`, `SET`, `SHOW`, catalog queries): the pinned shard,
    /// else the default shard, else the first.
    Anywhere,
    /// `BEGIN` / `START TRANSACTION`: deferred until a statement picks the shard.
    Begin,
    /// `COMMIT`, `ROLLBACK` and friends: the pinned shard.
    End,
    /// Only tables that are neither sharded nor reference tables: their home, `default_shard`.
    Home {
        table: String,
    },
    /// Reads of reference tables only: any one shard.
    Reference,
    /// Rows of sharded tables, every reference pinned by these keys.
    Keyed(Keyed),
    /// A read of sharded tables without a key: every shard, results merged.
    Scatter(Scatter),
    /// `COPY <sharded table> (…) FROM STDIN`: every shard that owns keys, each row to its owner.
    CopyIn(Arc<CopyIn>),
    /// Every shard: DDL, writes to reference tables, cross-shard writes when allowed.
    Broadcast(Broadcast),
    /// A hint named the shard.
    Shard(usize),
    /// The parser cannot read it (or shardgate does not route its kind): the pinned shard, else
    /// the default shard, else refused. When its text names a sharded table, only the pinned
    /// shard: the default shard holds only some of that table's rows.
    Unparsed {
        what: String,
        sharded: Option<Arc<str>>,
    },
    /// An INSERT without a column list into a sharded table, with its columns listed: the text
    /// the shards get instead of the client's, planned like any other (see `router::columns`).
    ListColumns(Arc<str>),
    /// A simple query with several statements: all must land on one shard.
    Multi(Vec<Plan>),
    Reject(RouteError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    /// The sharded table the keys were found for (for messages).
    pub table: Arc<str>,
    pub keys: Vec<KeySource>,
    pub write: bool,
    /// Several rows of an INSERT (for the message when they span shards).
    pub rows: bool,
    /// All references are joined on their keys; otherwise the keys must all land on one shard.
    pub colocated: bool,
    /// For a read whose keys may live on several shards: how to merge the shards' rows.
    pub merge: Merge,
    /// For an INSERT of several rows: how to split it per shard, or why it cannot be.
    pub split: Option<Arc<Result<InsertSplit, RouteError>>>,
}

/// How the rows of several shards are merged, or why they cannot be; `None` for statements
/// that are not mergeable reads.
pub type Merge = Option<Arc<Result<MergeSpec, RouteError>>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scatter {
    pub table: Arc<str>,
    pub key_column: Arc<str>,
    pub merge: Merge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broadcast {
    Ddl,
    ReferenceWrite,
    CrossShardWrite,
}

/// Why a statement cannot be routed. Each becomes a `0A000` error whose message names the table,
/// key column and shard involved, with a hint that says how to fix the query (DESIGN §2.5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{verb} on sharded table \"{table}\" must filter on its sharding key \"{column}\"")]
    WriteWithoutKey {
        verb: &'static str,
        table: Arc<str>,
        column: Arc<str>,
    },
    #[error("cannot change the sharding key \"{column}\" of table \"{table}\"")]
    KeyUpdate { table: Arc<str>, column: Arc<str> },
    #[error("INSERT into sharded table \"{table}\" must give its sharding key \"{column}\" {why}")]
    InsertKey {
        table: Arc<str>,
        column: Arc<str>,
        why: String,
    },
    #[error("{what}")]
    Unsupported { what: String, hint: String },
    #[error("the statement touches sharded tables \"{a}\" and \"{b}\" without joining them on their sharding keys")]
    NotColocated { a: Arc<str>, b: Arc<str> },
    #[error("cross-shard reads are disabled for this database (routing.cross_shard_reads: reject); the query on \"{table}\" does not filter on its sharding key \"{column}\"")]
    ReadWithoutKey { table: Arc<str>, column: Arc<str> },
    #[error("the statement cannot be parsed by shardgate's router ({reason}), and there is no pinned or default shard to send it to")]
    Unparsed { reason: String },
    #[error("the statement cannot be parsed by shardgate's router ({reason}) and names sharded table \"{table}\", whose rows are on every shard; outside a transaction pinned to one shard there is nowhere to send it")]
    UnparsedSharded { reason: String, table: Arc<str> },
    #[error("table \"{table}\" is neither sharded nor a reference table, and this database has no default_shard")]
    NoHome { table: String },
    #[error("{1}")]
    BadKey(KeyProblem, String),
    #[error("shardgate hint: {0}")]
    BadHint(String),
}

impl RouteError {
    /// What the developer can do about it.
    pub fn hint(&self) -> String {
        match self {
            RouteError::WriteWithoutKey { column, .. } => format!(
                "Add \"{column} = …\" to the WHERE clause, or set routing.cross_shard_writes: allow for this database."
            ),
            RouteError::KeyUpdate { .. } => {
                "Delete the row and insert it again with the new key; moving a row between shards is not an UPDATE.".into()
            }
            RouteError::InsertKey { column, .. } => format!(
                "List \"{column}\" in the column list and give it as a literal or a bind parameter."
            ),
            RouteError::Unsupported { hint, .. } => hint.clone(),
            RouteError::NotColocated { .. } => {
                "Join sharded tables on their sharding keys (e.g. ON o.user_id = u.id), or filter each on the same key.".into()
            }
            RouteError::ReadWithoutKey { column, .. } => {
                format!("Add \"{column} = …\" to the WHERE clause, or set routing.cross_shard_reads: allow.")
            }
            RouteError::Unparsed { .. } | RouteError::UnparsedSharded { .. } => {
                "Start the statement with /* shardgate: shard=NAME */ or /* shardgate: key=VALUE */, or run it inside a transaction that already picked its shard.".into()
            }
            RouteError::NoHome { .. } => {
                "List the table under tables: or reference_tables:, or set default_shard for this database.".into()
            }
            RouteError::BadKey(..) => "Give the sharding key as a value of the configured key_type.".into(),
            RouteError::BadHint(_) => {
                "Write /* shardgate: shard=NAME */ with a shard of this database, or /* shardgate: key=VALUE */.".into()
            }
        }
    }
}

/// What is wrong with a sharding key, so its error gets the SQLSTATE Postgres gives the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    /// Not a value of the key's type (`22P02`).
    Syntax,
    /// Out of the type's range (`22003`).
    Range,
    /// Not valid UTF-8, or a NUL in text (`22021`).
    Encoding,
    /// A binary value of the wrong shape (`22P03`).
    Binary,
    /// NULL where a row needs a key (`23502`).
    Null,
    /// The Bind has fewer parameters than the statement uses (`08P01`).
    Protocol,
    /// No shard owns it: a range or list map with a gap (`22023`).
    Unowned,
}

/// Where a statement goes once its parameters are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No shard in particular: pinned, else default, else first.
    Any,
    Shard(usize),
    /// Several shards (sorted, distinct).
    Shards(Vec<usize>),
}
