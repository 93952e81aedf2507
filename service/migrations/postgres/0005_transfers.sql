-- Collections hosted by endpoint agents, and managed transfer tasks with
-- their events and recorded checksums. (0004 is the multi-user migration.)

CREATE TABLE collections (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES identities(id),
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    name TEXT NOT NULL,
    root TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    announced_at BIGINT NOT NULL,
    -- Set when the hosting agent stopped announcing it.
    withdrawn_at BIGINT,
    UNIQUE (owner_id, name)
);
CREATE INDEX collections_endpoint ON collections(endpoint_id);

CREATE TABLE transfers (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES identities(id),
    label TEXT,
    status TEXT NOT NULL,
    status_message TEXT,
    source_collection TEXT NOT NULL REFERENCES collections(id),
    destination_collection TEXT NOT NULL REFERENCES collections(id),
    items TEXT NOT NULL,
    options TEXT NOT NULL,
    deadline BIGINT,
    submission_id TEXT,
    submitted_at BIGINT NOT NULL,
    completed_at BIGINT,
    items_done BIGINT NOT NULL DEFAULT 0,
    attempts BIGINT NOT NULL DEFAULT 0,
    counters TEXT NOT NULL,
    UNIQUE (owner_id, submission_id)
);
CREATE INDEX transfers_owner ON transfers(owner_id, submitted_at);
CREATE INDEX transfers_status ON transfers(status);

CREATE TABLE transfer_events (
    seq BIGSERIAL PRIMARY KEY,
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    time BIGINT NOT NULL,
    code TEXT NOT NULL,
    fault BIGINT NOT NULL,
    side TEXT,
    path TEXT,
    message TEXT NOT NULL,
    item BIGINT NOT NULL,
    attempt BIGINT NOT NULL
);
CREATE INDEX transfer_events_transfer ON transfer_events(transfer_id, seq);

CREATE TABLE transfer_checksums (
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    item BIGINT NOT NULL,
    path TEXT NOT NULL,
    size BIGINT NOT NULL,
    blake3 TEXT NOT NULL,
    PRIMARY KEY (transfer_id, item, path)
);
