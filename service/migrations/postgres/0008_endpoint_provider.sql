-- The kind of worker-block provider the endpoint's agent last reported
-- (local, slurm, pbs, lsf, kubernetes; NULL: none).
ALTER TABLE endpoints ADD COLUMN provider TEXT;
