-- A transfer task's engine tuning as JSON (TransferTuning; `{}` takes the
-- engine's defaults).
ALTER TABLE transfers ADD COLUMN tuning TEXT NOT NULL DEFAULT '{}';
