-- Online resharding (DESIGN §3): jobs and what they have done, the shard-map epochs several
-- shardgate instances agree on, and each instance's heartbeat with the epoch it has taken.

-- One job moves sets of buckets (or ranges, or list values) of one database to other shards.
CREATE TABLE IF NOT EXISTS shardgate.reshard_jobs (
    id bigserial PRIMARY KEY,
    database text NOT NULL,
    -- [{"buckets": "512-767", "from": "s1", "to": "s2"}, …], as accepted.
    moves jsonb NOT NULL,
    -- preflight, dual_write, backfill, verify, ready, cutover, reverse_dual_write, finishing,
    -- finished, rolled_back, aborted, failed (DESIGN §2.6); `paused` is a flag beside it.
    phase text NOT NULL,
    paused boolean NOT NULL DEFAULT false,
    -- What pre-flight found (tables, columns, primary keys, sequences).
    preflight jsonb,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- At most one unfinished job per database.
CREATE UNIQUE INDEX IF NOT EXISTS reshard_jobs_one_active
    ON shardgate.reshard_jobs (database)
    WHERE phase NOT IN ('finished', 'rolled_back', 'aborted', 'failed');

-- Every phase change and operator action, in order.
CREATE TABLE IF NOT EXISTS shardgate.reshard_history (
    job_id bigint NOT NULL REFERENCES shardgate.reshard_jobs ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    phase text NOT NULL,
    note text NOT NULL
);
CREATE INDEX IF NOT EXISTS reshard_history_job ON shardgate.reshard_history (job_id, at);

-- Backfill's progress per table: the last primary key copied (text form of each column).
CREATE TABLE IF NOT EXISTS shardgate.reshard_checkpoints (
    job_id bigint NOT NULL REFERENCES shardgate.reshard_jobs ON DELETE CASCADE,
    table_name text NOT NULL,
    last_key text[],
    rows_copied bigint NOT NULL DEFAULT 0,
    done boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, table_name)
);

-- Keys whose copy on the target may be stale (a failed dual-write), to re-sync before cutover.
CREATE TABLE IF NOT EXISTS shardgate.reshard_dirty_keys (
    job_id bigint NOT NULL REFERENCES shardgate.reshard_jobs ON DELETE CASCADE,
    table_name text NOT NULL,
    sharding_key text NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, table_name, sharding_key)
);

-- Verification per table and chunk: counts and checksums on both sides, and repairs.
CREATE TABLE IF NOT EXISTS shardgate.reshard_verification (
    job_id bigint NOT NULL REFERENCES shardgate.reshard_jobs ON DELETE CASCADE,
    run integer NOT NULL,
    table_name text NOT NULL,
    chunk integer NOT NULL,
    source_rows bigint NOT NULL,
    target_rows bigint NOT NULL,
    source_checksum text NOT NULL,
    target_checksum text NOT NULL,
    repaired_keys text[] NOT NULL DEFAULT '{}',
    checked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, run, table_name, chunk)
);

-- Per database, the shard-map epoch in force: the config's map with the moves cut over so far
-- (so a restarted shardgate comes back with it, and a reload cannot undo it), and the overlay
-- of a move in progress (which buckets are dual-written, and which way).
CREATE TABLE IF NOT EXISTS shardgate.epochs (
    database text PRIMARY KEY,
    epoch bigint NOT NULL,
    map jsonb NOT NULL,
    overlay jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Each live shardgate instance: the epoch of each database it has taken, refreshed every few
-- seconds. A phase that needs every proxy to follow waits for their acknowledgements.
CREATE TABLE IF NOT EXISTS shardgate.proxy_heartbeats (
    proxy_id text PRIMARY KEY,
    started_at timestamptz NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    epochs jsonb NOT NULL DEFAULT '{}'
);
