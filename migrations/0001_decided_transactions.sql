-- Two-phase commit of transactions that wrote on several shards (cross_shard_writes: allow).
-- A row here is the commit decision: it is inserted, in one transaction, after every shard has
-- prepared and before any commits. A prepared transaction `sg:<txid>:<shard>` left on a shard is
-- committed if its txid is here, and rolled back otherwise (once its coordinator is gone).
CREATE SCHEMA IF NOT EXISTS shardgate;
CREATE TABLE IF NOT EXISTS shardgate.decided_transactions (
    txid text PRIMARY KEY,
    decided_at timestamptz NOT NULL DEFAULT now()
);
