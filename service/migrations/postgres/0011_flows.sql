-- Flows: flows with their roles, runs (the serialized state machine, who
-- may see and manage it, and the lease of the replica driving it), each
-- run's log, and the actions the built-in action providers started.
-- Principals are stored in their wire form (identity:ID, group:ID); enums
-- as their serde text; JSON values and string lists as JSON text.

CREATE TABLE flows (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES identities(id),
    title TEXT NOT NULL,
    subtitle TEXT NOT NULL,
    description TEXT NOT NULL,
    -- JSON list of strings.
    keywords TEXT NOT NULL,
    -- The flow definition, as JSON.
    definition TEXT NOT NULL,
    -- The JSON schema of a run's input, as JSON.
    input_schema TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX flows_owner ON flows(owner_id);

CREATE TABLE flow_roles (
    flow_id TEXT NOT NULL REFERENCES flows(id) ON DELETE CASCADE,
    -- administrator, starter, viewer, run_manager or run_monitor
    role TEXT NOT NULL,
    principal TEXT NOT NULL,
    UNIQUE (flow_id, role, principal)
);
CREATE INDEX flow_roles_principal ON flow_roles(principal);

-- No foreign key to flows: a run outlives its flow (flow_title keeps the
-- name it had).
CREATE TABLE flow_runs (
    id TEXT PRIMARY KEY NOT NULL,
    flow_id TEXT NOT NULL,
    flow_title TEXT NOT NULL,
    starter_id TEXT NOT NULL,
    -- The starter's request id; runs without one never collide (NULLs are
    -- distinct in the UNIQUE below).
    request_id TEXT,
    label TEXT,
    -- JSON lists of strings (principals for managers and monitors).
    tags TEXT NOT NULL,
    run_managers TEXT NOT NULL,
    run_monitors TEXT NOT NULL,
    -- ACTIVE, INACTIVE, SUCCEEDED or FAILED
    status TEXT NOT NULL,
    transitions BIGINT NOT NULL,
    -- The serialized state machine (JSON text).
    machine TEXT NOT NULL,
    -- What the API shows as the run's details, as JSON.
    details TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    completed_at BIGINT,
    -- The replica driving the run, and until when (NULL: nobody).
    lease_owner TEXT,
    lease_until BIGINT,
    UNIQUE (flow_id, starter_id, request_id)
);
CREATE INDEX flow_runs_lease ON flow_runs(status, lease_until);
CREATE INDEX flow_runs_created ON flow_runs(created_at, id);

-- Who a run names: its starter (identity:ID) and every run manager and
-- monitor; kept with the run, for listing the runs a principal may see.
CREATE TABLE flow_run_principals (
    run_id TEXT NOT NULL REFERENCES flow_runs(id) ON DELETE CASCADE,
    principal TEXT NOT NULL,
    PRIMARY KEY (run_id, principal)
);
CREATE INDEX flow_run_principals_principal ON flow_run_principals(principal);

CREATE TABLE flow_run_log (
    run_id TEXT NOT NULL REFERENCES flow_runs(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    state TEXT NOT NULL,
    code TEXT NOT NULL,
    -- JSON.
    details TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Actions of the built-in providers. run_id has no foreign key: an action
-- may outlive the run that started it.
CREATE TABLE flow_actions (
    id TEXT PRIMARY KEY NOT NULL,
    -- compute, transfer, approval, ...
    provider TEXT NOT NULL,
    request_id TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    run_id TEXT,
    -- ACTIVE, INACTIVE, SUCCEEDED or FAILED
    status TEXT NOT NULL,
    label TEXT,
    -- JSON lists of principals.
    monitor_by TEXT NOT NULL,
    manage_by TEXT NOT NULL,
    -- JSON: the request's body, what the API shows, what the provider keeps.
    body TEXT NOT NULL,
    details TEXT NOT NULL,
    internal TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    completed_at BIGINT,
    -- Seconds after completion the action may be released.
    release_after BIGINT,
    UNIQUE (provider, creator_id, request_id)
);
CREATE INDEX flow_actions_run ON flow_actions(run_id);
