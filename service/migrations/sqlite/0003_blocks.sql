-- Worker blocks reported by an endpoint's agent (its provider's batch jobs
-- or pods, JSON) and the last block failure in the scheduler's words.
ALTER TABLE endpoints ADD COLUMN blocks TEXT;
ALTER TABLE endpoints ADD COLUMN provider_error TEXT;
