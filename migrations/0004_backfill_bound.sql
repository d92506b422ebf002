-- Backfill copies up to the last primary key the moved buckets had when the table's copy
-- started; rows written after it are moved by the change copier (the capture trigger was in
-- place by then). NULL (jobs started before this migration) copies to the end.
ALTER TABLE shardgate.reshard_checkpoints ADD COLUMN IF NOT EXISTS end_key text[];
