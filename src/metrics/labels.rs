//! The fixed label values of the metrics: every one a bounded enum, never client text.

/// What a statement does, from its first keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Select,
    Insert,
    Update,
    Delete,
    Ddl,
    Other,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Select,
        Kind::Insert,
        Kind::Update,
        Kind::Delete,
        Kind::Ddl,
        Kind::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Select => "select",
            Kind::Insert => "insert",
            Kind::Update => "update",
            Kind::Delete => "delete",
            Kind::Ddl => "ddl",
            Kind::Other => "other",
        }
    }
}

/// Why a statement was refused: the router's reasons, plus the session's (a transaction lives on
/// one shard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    WriteWithoutKey,
    KeyUpdate,
    InsertKey,
    Unsupported,
    NotColocated,
    ReadWithoutKey,
    Unparsed,
    UnparsedSharded,
    NoHome,
    BadKey,
    BadHint,
    /// Needs several shards, in a shape shardgate cannot run there.
    MultiShardUnsupported,
    /// A multi-shard statement inside a transaction.
    MultiShardInTransaction,
    /// A transaction pinned to one shard that needs another.
    CrossShardTransaction,
    /// A statement for the primary in an extended-protocol batch whose reads went to a replica.
    WriteAfterReplicaRead,
}

impl Rejection {
    pub const ALL: [Rejection; 15] = [
        Rejection::WriteWithoutKey,
        Rejection::KeyUpdate,
        Rejection::InsertKey,
        Rejection::Unsupported,
        Rejection::NotColocated,
        Rejection::ReadWithoutKey,
        Rejection::Unparsed,
        Rejection::UnparsedSharded,
        Rejection::NoHome,
        Rejection::BadKey,
        Rejection::BadHint,
        Rejection::MultiShardUnsupported,
        Rejection::MultiShardInTransaction,
        Rejection::CrossShardTransaction,
        Rejection::WriteAfterReplicaRead,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Rejection::WriteWithoutKey => "write_without_key",
            Rejection::KeyUpdate => "key_update",
            Rejection::InsertKey => "insert_without_key",
            Rejection::Unsupported => "unsupported",
            Rejection::NotColocated => "not_colocated",
            Rejection::ReadWithoutKey => "read_without_key",
            Rejection::Unparsed => "unparsed",
            Rejection::UnparsedSharded => "unparsed_sharded",
            Rejection::NoHome => "no_home",
            Rejection::BadKey => "bad_key",
            Rejection::BadHint => "bad_hint",
            Rejection::MultiShardUnsupported => "multi_shard_unsupported",
            Rejection::MultiShardInTransaction => "multi_shard_in_transaction",
            Rejection::CrossShardTransaction => "cross_shard_transaction",
            Rejection::WriteAfterReplicaRead => "write_after_replica_read",
        }
    }
}

/// Why a statement needs several shards (shadow mode reports these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// A read without the sharding key.
    Scatter,
    Ddl,
    ReferenceWrite,
    CrossShardWrite,
    CopyIn,
}

impl Spread {
    pub const ALL: [Spread; 5] = [
        Spread::Scatter,
        Spread::Ddl,
        Spread::ReferenceWrite,
        Spread::CrossShardWrite,
        Spread::CopyIn,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Spread::Scatter => "scatter",
            Spread::Ddl => "ddl",
            Spread::ReferenceWrite => "reference_write",
            Spread::CrossShardWrite => "cross_shard_write",
            Spread::CopyIn => "copy_in",
        }
    }
}

/// In shadow mode: what a statement would have needed, when that is more than one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowVerdict {
    MultiShard(Spread),
    Rejected(Rejection),
}

/// How a statement was routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    SingleShard,
    MultiShard,
    Rejected(Rejection),
}

/// Why a backend could not serve a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendError {
    /// The connection broke or the server closed it.
    ConnectionLost,
    /// No connection could be opened.
    Unreachable,
    /// Every connection of the pool stayed busy past `pool.checkout_timeout_ms`.
    PoolTimeout,
}

impl BackendError {
    pub(super) const ALL: [BackendError; 3] = [
        BackendError::ConnectionLost,
        BackendError::Unreachable,
        BackendError::PoolTimeout,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            BackendError::ConnectionLost => "connection_lost",
            BackendError::Unreachable => "unreachable",
            BackendError::PoolTimeout => "pool_timeout",
        }
    }
}

/// The `role` label: which server of a shard.
pub const PRIMARY: &str = "primary";
pub const REPLICA: &str = "replica";
