-- Collections hosted by endpoint agents, and managed transfer tasks with
-- their events and recorded checksums. (0004 is the multi-user migration.)

CREATE TABLE collections (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES identities(id),
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    name TEXT NOT NULL,
    root TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    announced_at INTEGER NOT NULL,
    -- Set when the hosting agent stopped announcing it.
    withdrawn_at INTEGER,
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
    deadline INTEGER,
    submission_id TEXT,
    submitted_at INTEGER NOT NULL,
    completed_at INTEGER,
    items_done INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    counters TEXT NOT NULL,
    UNIQUE (owner_id, submission_id)
);
CREATE INDEX transfers_owner ON transfers(owner_id, submitted_at);
CREATE INDEX transfers_status ON transfers(status);

CREATE TABLE transfer_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    time INTEGER NOT NULL,
    code TEXT NOT NULL,
    fault INTEGER NOT NULL,
    side TEXT,
    path TEXT,
    message TEXT NOT NULL,
    item INTEGER NOT NULL,
    attempt INTEGER NOT NULL
);
CREATE INDEX transfer_events_transfer ON transfer_events(transfer_id, seq);

CREATE TABLE transfer_checksums (
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    item INTEGER NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    blake3 TEXT NOT NULL,
    PRIMARY KEY (transfer_id, item, path)
);
