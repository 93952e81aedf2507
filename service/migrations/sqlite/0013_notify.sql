-- Notifications: each identity's email preferences, webhooks with their
-- signing secrets, and the durable queue of webhook deliveries with one
-- row per attempt. Event kinds are their wire text (`transfer.failed`);
-- lists of them are JSON text. 0012 belongs to timers.

CREATE TABLE notify_preferences (
    identity_id TEXT PRIMARY KEY NOT NULL,
    -- JSON list of the event kinds sent by email.
    email_events TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE webhooks (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL,
    url TEXT NOT NULL,
    -- JSON list of the event kinds delivered.
    events TEXT NOT NULL,
    -- The HMAC key (the service signs with it, so it is kept as is).
    secret TEXT NOT NULL,
    description TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhooks_owner ON webhooks(owner_id);

-- One event to one webhook. Pending rows with next_attempt_at <= now are
-- due; a replica leases a row (lease_until) while it attempts it.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    webhook_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_kind TEXT NOT NULL,
    -- The JSON body, exactly as sent (and signed).
    body TEXT NOT NULL,
    -- pending, succeeded or failed
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT,
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    completed_at BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, created_at);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    -- The receiver's HTTP status; NULL when it did not answer.
    status_code BIGINT,
    error TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- Which ends of a transfer its owner is told about (JSON); '' for the
-- default (all) on rows from before this migration.
ALTER TABLE transfers ADD COLUMN notify_on TEXT NOT NULL DEFAULT '';
