-- Functions, endpoints, tasks and the embedded per-endpoint queue.

CREATE TABLE functions (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES identities(id),
    name TEXT NOT NULL,
    description TEXT,
    kind TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    parameters TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX functions_owner_hash ON functions(owner_id, content_hash);

CREATE TABLE endpoints (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES identities(id),
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    connected_at BIGINT,
    last_seen BIGINT,
    agent_version TEXT,
    hostname TEXT,
    workers BIGINT NOT NULL DEFAULT 0,
    idle_slots BIGINT NOT NULL DEFAULT 0,
    queue_depth BIGINT NOT NULL DEFAULT 0,
    UNIQUE (owner_id, name)
);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY NOT NULL,
    batch_id TEXT NOT NULL,
    function_id TEXT NOT NULL REFERENCES functions(id),
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    owner_id TEXT NOT NULL REFERENCES identities(id),
    state TEXT NOT NULL,
    args TEXT NOT NULL,
    walltime_secs BIGINT NOT NULL,
    max_retries BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    submitted_at BIGINT NOT NULL,
    dispatched_at BIGINT,
    started_at BIGINT,
    finished_at BIGINT,
    worker TEXT,
    result TEXT,
    error TEXT,
    duplicate_results BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX tasks_batch ON tasks(batch_id, state);
CREATE INDEX tasks_owner ON tasks(owner_id, submitted_at);
CREATE INDEX tasks_endpoint_state ON tasks(endpoint_id, state);

CREATE TABLE queue_messages (
    seq BIGSERIAL PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    enqueued_at BIGINT NOT NULL,
    lease_owner TEXT,
    deliveries BIGINT NOT NULL DEFAULT 0,
    dead_at BIGINT
);
CREATE INDEX queue_endpoint ON queue_messages(endpoint_id, seq);
CREATE INDEX queue_lease ON queue_messages(lease_owner);
