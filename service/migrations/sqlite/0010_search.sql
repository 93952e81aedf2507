-- Search: indexes (their entries live in the search engine, not here),
-- roles on them, and the tasks that change them. Tasks of one index are
-- applied in `seq` order; `seq` increases across the whole service.
-- Principals are stored in their wire form (identity:ID, group:ID).

CREATE TABLE search_indexes (
    id TEXT PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL,
    owner_id TEXT NOT NULL REFERENCES identities(id),
    -- open or deleted
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT,
    -- A deleted index is restorable until then, and purged after.
    purge_after BIGINT
);
CREATE INDEX search_indexes_purge ON search_indexes(status, purge_after);

CREATE TABLE search_index_roles (
    id TEXT PRIMARY KEY NOT NULL,
    index_id TEXT NOT NULL REFERENCES search_indexes(id) ON DELETE CASCADE,
    principal TEXT NOT NULL,
    -- writer, admin or owner
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (index_id, principal, role)
);
CREATE INDEX search_index_roles_principal ON search_index_roles(principal);

CREATE TABLE search_tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    index_id TEXT NOT NULL REFERENCES search_indexes(id) ON DELETE CASCADE,
    -- ingest, delete or crawl
    kind TEXT NOT NULL,
    -- pending, progress, success or failed
    state TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    -- The request to apply, as JSON (entries, or a delete target).
    payload TEXT NOT NULL,
    entries_total BIGINT NOT NULL,
    entries_applied BIGINT NOT NULL,
    -- JSON list of RejectedEntry.
    rejected TEXT NOT NULL,
    message TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    completed_at BIGINT
);
CREATE INDEX search_tasks_index ON search_tasks(index_id, seq);
CREATE INDEX search_tasks_state ON search_tasks(state, seq);
