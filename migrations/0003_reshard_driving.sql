-- What the job driver needs beside the phase: whether a job that ended has had its triggers and
-- marks removed from the shards, and the options it was started with (throttle).
ALTER TABLE shardgate.reshard_jobs
    ADD COLUMN IF NOT EXISTS cleaned boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS options jsonb NOT NULL DEFAULT '{}';

-- An operator asked for a verification run outside the verify phase (after cutover or finish).
ALTER TABLE shardgate.reshard_jobs
    ADD COLUMN IF NOT EXISTS verify_requested boolean NOT NULL DEFAULT false;

-- Backfill's progress as a share of the table: its rows in the moved buckets when the copy
-- started, and when that was (for rows/s and the ETA).
ALTER TABLE shardgate.reshard_checkpoints
    ADD COLUMN IF NOT EXISTS rows_total bigint,
    ADD COLUMN IF NOT EXISTS started_at timestamptz NOT NULL DEFAULT now();

-- Each verification run's summary: tables and buckets compared, differences, repairs, samples.
CREATE TABLE IF NOT EXISTS shardgate.reshard_verification_runs (
    job_id bigint NOT NULL REFERENCES shardgate.reshard_jobs ON DELETE CASCADE,
    run integer NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    summary jsonb NOT NULL,
    PRIMARY KEY (job_id, run)
);
