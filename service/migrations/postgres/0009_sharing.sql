-- Groups and sharing: groups with memberships (subgroups through parent_id),
-- access rules and roles on collections, guest collections, grants on
-- functions and endpoints, and the audit trail of every change to them.
-- Principals are stored in their wire form (identity:ID, group:ID,
-- all_authenticated_users, public).

CREATE TABLE sharing_groups (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    -- Active members of this group are effective members of the parent.
    parent_id TEXT REFERENCES sharing_groups(id) ON DELETE SET NULL,
    -- JSON GroupPolicies.
    policies TEXT NOT NULL,
    created_by TEXT NOT NULL REFERENCES identities(id),
    created_at BIGINT NOT NULL
);
CREATE INDEX sharing_groups_parent ON sharing_groups(parent_id);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES sharing_groups(id) ON DELETE CASCADE,
    -- NULL for an invitation by email nobody has claimed yet.
    identity_id TEXT REFERENCES identities(id),
    email TEXT,
    role TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (group_id, identity_id),
    UNIQUE (group_id, email)
);
CREATE INDEX group_members_identity ON group_members(identity_id, status);
CREATE INDEX group_members_email ON group_members(email);

CREATE TABLE acl_rules (
    id TEXT PRIMARY KEY NOT NULL,
    collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    principal TEXT NOT NULL,
    -- A directory (ending in /) or a file, from the collection's root.
    path TEXT NOT NULL,
    permissions TEXT NOT NULL,
    expires_at BIGINT,
    created_by TEXT NOT NULL REFERENCES identities(id),
    created_at BIGINT NOT NULL
);
CREATE INDEX acl_rules_collection ON acl_rules(collection_id);
CREATE INDEX acl_rules_principal ON acl_rules(principal);

CREATE TABLE collection_roles (
    id TEXT PRIMARY KEY NOT NULL,
    collection_id TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    principal TEXT NOT NULL,
    role TEXT NOT NULL,
    created_by TEXT NOT NULL REFERENCES identities(id),
    created_at BIGINT NOT NULL,
    UNIQUE (collection_id, principal, role)
);
CREATE INDEX collection_roles_principal ON collection_roles(principal);

-- Grants on functions and endpoints: resource is function:ID or endpoint:ID.
CREATE TABLE resource_grants (
    resource TEXT NOT NULL,
    principal TEXT NOT NULL,
    created_by TEXT NOT NULL REFERENCES identities(id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (resource, principal)
);

CREATE TABLE audit_log (
    seq BIGSERIAL PRIMARY KEY,
    time BIGINT NOT NULL,
    actor TEXT NOT NULL,
    client_id TEXT,
    -- group:ID, collection:ID, function:ID or endpoint:ID.
    subject TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_subject ON audit_log(subject, seq);

-- A guest collection is rooted at host_path of its host collection and
-- reaches files with its creator's access there.
ALTER TABLE collections ADD COLUMN host_collection_id TEXT REFERENCES collections(id);
ALTER TABLE collections ADD COLUMN host_path TEXT;
-- JSON SharingPolicy; NULL is the default policy.
ALTER TABLE collections ADD COLUMN sharing_policy TEXT;
CREATE INDEX collections_host ON collections(host_collection_id);
