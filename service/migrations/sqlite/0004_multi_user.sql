-- Multi-user endpoints: the variables a task was submitted with for the
-- endpoint's per-user config template (JSON), whether an endpoint's agent
-- runs in multi-user mode (then any identity may submit; its agent's policy
-- decides), and that agent's per-user children from its last heartbeat (JSON).
ALTER TABLE tasks ADD COLUMN user_config TEXT;
ALTER TABLE endpoints ADD COLUMN multi_user INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN children TEXT;
