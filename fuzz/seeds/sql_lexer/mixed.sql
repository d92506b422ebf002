SET search_path = app; /* shardgate: shard=1 */ SELECT 'a;b', E'\';', "x;y" -- c;
; DO $fn$ BEGIN; END $fn$; DEALLOCATE PREPARE s1; RESET ALL;