-- What the job driver needs beside the phase: whether a job that ended has had its triggers and
-- marks removed from the shards, and the options it was started with (throttle).
ALTER TABLE shardgate.reshard_jobs
    ADD COLUMN IF NOT EXISTS cleaned boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS options jsonb NOT NULL DEFAULT '{}';
