-- Timers: what a timer starts (its kind and body, acting as its owner),
-- its schedule and where it stands (status, the next due time, counters),
-- and one row per tick (timer_runs). Every change to a timer row is a
-- compare-and-set on `version`, so that of several replicas exactly one
-- claims a due tick. Enums as their serde text; JSON as JSON text.

CREATE TABLE timers (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES identities(id),
    name TEXT NOT NULL,
    -- transfer, task or flow
    kind TEXT NOT NULL,
    -- The schedule, as JSON.
    schedule TEXT NOT NULL,
    flow_id TEXT,
    -- What each tick starts, as JSON.
    body TEXT NOT NULL,
    -- active, inactive, ended or deleted
    status TEXT NOT NULL,
    inactive_cause TEXT,
    inactive_detail TEXT,
    -- When it ticks next (NULL: never, unless resumed).
    next_due BIGINT,
    -- Ticks so far (the seq of the last timer run).
    ticks BIGINT NOT NULL,
    runs BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    skips BIGINT NOT NULL,
    last_error TEXT,
    last_ran_at BIGINT,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX timers_owner ON timers(owner_id);
CREATE INDEX timers_due ON timers(status, next_due);

CREATE TABLE timer_runs (
    timer_id TEXT NOT NULL REFERENCES timers(id),
    seq BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    ran_at BIGINT,
    -- pending, active, succeeded, failed or skipped
    status TEXT NOT NULL,
    -- action:<id> or run:<id>
    resource_id TEXT,
    -- As JSON.
    details TEXT NOT NULL,
    error TEXT,
    attempts BIGINT NOT NULL,
    -- When a replica looks at it next (pending: retry; active: poll).
    next_check_at BIGINT,
    completed_at BIGINT,
    PRIMARY KEY (timer_id, seq)
);
CREATE INDEX timer_runs_open ON timer_runs(status, next_check_at);
