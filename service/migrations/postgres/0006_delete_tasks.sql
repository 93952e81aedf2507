-- Delete tasks share the transfers table: `kind` is the task's TaskKind as
-- JSON ({"type":"transfer"} or {"type":"delete","ignore_missing":...}).
ALTER TABLE transfers ADD COLUMN kind TEXT NOT NULL DEFAULT '{"type":"transfer"}';
