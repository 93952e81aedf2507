//! Persistent state of sharing: groups and memberships, access rules and
//! roles on collections, guest collections and sharing policies, grants on
//! functions and endpoints, and the audit trail. Same pattern as the other tables: SQL
//! written once, instantiated for both back ends by `impl_sharing_store!`.
//!
//! The store keeps rows; who may change them, and what a principal may do,
//! is decided by `crate::sharing`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lattice_protocol::sharing::{
    AclRuleInfo, AuditEntry, CollectionRole, GroupPolicies, GroupRole, MembershipStatus,
    Permissions, Principal, RoleInfo, SharingPolicy,
};
use lattice_protocol::{AclRuleId, ClientId, CollectionId, GroupId, IdentityId, RoleId};

mod rows;

use rows::*;

use super::sql::{PostgresStore, SqliteStore};
use super::transfers::{CollectionRow, COLLECTION_COLUMNS};
use super::{corrupt, from_millis, to_millis, uuid_of, CollectionRecord, StoreResult};

/// A group as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    pub id: GroupId,
    pub name: String,
    pub description: String,
    pub parent_id: Option<GroupId>,
    pub policies: GroupPolicies,
    pub created_by: IdentityId,
    pub created_at: DateTime<Utc>,
}

/// One membership row: an identity's, or an invitation by email.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipRecord {
    pub group_id: GroupId,
    pub identity_id: Option<IdentityId>,
    pub email: Option<String>,
    pub role: GroupRole,
    pub status: MembershipStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An audit entry to record (the store assigns `seq`).
#[derive(Clone, Debug, PartialEq)]
pub struct NewAuditEntry {
    pub time: DateTime<Utc>,
    pub actor: IdentityId,
    pub client_id: Option<ClientId>,
    pub subject: String,
    pub action: String,
    pub detail: serde_json::Value,
}

#[async_trait]
pub trait SharingStore: Send + Sync + 'static {
    /// Creates a group with its first membership (the creator, admin).
    async fn insert_group(
        &self,
        group: &GroupRecord,
        creator: &MembershipRecord,
    ) -> StoreResult<()>;
    async fn group(&self, id: GroupId) -> StoreResult<Option<GroupRecord>>;
    /// Name, description, parent and policies; false if the group is gone.
    async fn update_group(&self, group: &GroupRecord) -> StoreResult<bool>;
    /// Deletes a group and its memberships; its subgroups lose their parent.
    async fn delete_group(&self, id: GroupId) -> StoreResult<bool>;
    /// The group's parent, the parent's parent, and so on (at most 64).
    async fn group_ancestors(&self, id: GroupId) -> StoreResult<Vec<GroupId>>;
    /// Groups in which one of `identities` has a membership row, with it.
    async fn groups_of(
        &self,
        identities: &[IdentityId],
    ) -> StoreResult<Vec<(GroupRecord, MembershipRecord)>>;
    /// Groups any logged-in identity may see (visibility `authenticated`).
    async fn public_groups(&self) -> StoreResult<Vec<GroupRecord>>;

    async fn membership(
        &self,
        group: GroupId,
        identity: IdentityId,
    ) -> StoreResult<Option<MembershipRecord>>;
    async fn membership_by_email(
        &self,
        group: GroupId,
        email: &str,
    ) -> StoreResult<Option<MembershipRecord>>;
    /// Inserts or replaces the row of (group, identity), or of (group,
    /// email) for an unclaimed invitation.
    async fn put_membership(&self, membership: &MembershipRecord) -> StoreResult<()>;
    /// Every membership row of a group, with the identity's username.
    async fn members(&self, group: GroupId)
        -> StoreResult<Vec<(MembershipRecord, Option<String>)>>;
    /// Groups in which one of `identities` is an active member, and their
    /// ancestors (through subgroups).
    async fn effective_groups(&self, identities: &[IdentityId]) -> StoreResult<Vec<GroupId>>;
    /// Turns invitations sent to `email` into invitations of `identity`
    /// (skipping groups where it already has a row); returns how many.
    async fn claim_email_invitations(
        &self,
        identity: IdentityId,
        email: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// Inserts a rule unless the collection already has `limit` rules
    /// (false then); the count and the insert are one transaction.
    async fn insert_acl_rule(&self, rule: &AclRuleInfo, limit: u64) -> StoreResult<bool>;
    async fn acl_rule(&self, id: AclRuleId) -> StoreResult<Option<AclRuleInfo>>;
    async fn acl_rules(&self, collection: CollectionId) -> StoreResult<Vec<AclRuleInfo>>;
    /// Permissions and expiry; false if the rule is gone.
    async fn update_acl_rule(&self, rule: &AclRuleInfo) -> StoreResult<bool>;
    async fn delete_acl_rule(&self, id: AclRuleId) -> StoreResult<bool>;
    /// Collections with a rule or a role for one of `principals`.
    async fn collections_shared_with(
        &self,
        principals: &[Principal],
    ) -> StoreResult<Vec<CollectionRecord>>;

    async fn insert_role(&self, role: &RoleInfo) -> StoreResult<()>;
    async fn role(&self, id: RoleId) -> StoreResult<Option<RoleInfo>>;
    async fn roles(&self, collection: CollectionId) -> StoreResult<Vec<RoleInfo>>;
    async fn delete_role(&self, id: RoleId) -> StoreResult<bool>;

    /// Creates a guest collection (`guest_of` set); `Conflict` if the
    /// owner already has a collection of that name.
    async fn insert_guest_collection(&self, collection: &CollectionRecord) -> StoreResult<()>;
    /// Marks a collection withdrawn (a deleted guest collection).
    async fn withdraw_collection(&self, id: CollectionId, at: DateTime<Utc>) -> StoreResult<bool>;
    async fn set_sharing_policy(
        &self,
        collection: CollectionId,
        policy: &SharingPolicy,
    ) -> StoreResult<()>;

    /// Grants `principal` use of `resource` (`function:ID`, `endpoint:ID`);
    /// granting twice is no error.
    async fn insert_grant(
        &self,
        resource: &str,
        principal: Principal,
        by: IdentityId,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn delete_grant(&self, resource: &str, principal: Principal) -> StoreResult<bool>;
    async fn grants(&self, resource: &str) -> StoreResult<Vec<Principal>>;

    /// Identities whose username is `name` or whose email is `name`
    /// (case-insensitive), for resolving principals typed by people.
    async fn identities_named(&self, name: &str) -> StoreResult<Vec<IdentityId>>;

    async fn insert_audit(&self, entry: &NewAuditEntry) -> StoreResult<()>;
    /// Entries of `subject` with `seq > after`, oldest first.
    async fn audit(&self, subject: &str, after: i64, limit: u32) -> StoreResult<Vec<AuditEntry>>;
}

fn text_of<T: serde::Serialize>(value: &T) -> String {
    // Unit enums serialize as a JSON string; the column holds it bare.
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .expect("a unit enum serializes as a string")
}

fn parse_text<T: serde::de::DeserializeOwned>(table: &'static str, text: &str) -> StoreResult<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|e| corrupt(table, format!("`{text}`: {e}")))
}

fn principal_of(table: &'static str, text: &str) -> StoreResult<Principal> {
    text.parse().map_err(|e| corrupt(table, e))
}

/// `$first, $first+1, ...` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const GROUP_COLUMNS: &str = "id, name, description, parent_id, policies, created_by, created_at";
const MEMBER_COLUMNS: &str = "group_id, identity_id, email, role, status, created_at, updated_at";
const RULE_COLUMNS: &str =
    "id, collection_id, principal, path, permissions, expires_at, created_by, created_at";
const ROLE_COLUMNS: &str = "id, collection_id, principal, role, created_by, created_at";

/// Inserts or replaces a membership row on `$conn` (a transaction): delete
/// then insert, one statement pair for both keys (identity, or the email
/// of an unclaimed invitation).
macro_rules! put_membership_in {
    ($conn:expr, $m:expr) => {{
        let m: &MembershipRecord = $m;
        match m.identity_id {
            Some(identity) => {
                sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND identity_id = $2")
                    .bind(m.group_id.to_string())
                    .bind(identity.to_string())
                    .execute(&mut *$conn)
                    .await?;
            }
            None => {
                sqlx::query(
                    "DELETE FROM group_members WHERE group_id = $1 AND identity_id IS NULL AND email = $2",
                )
                .bind(m.group_id.to_string())
                .bind(m.email.clone())
                .execute(&mut *$conn)
                .await?;
            }
        }
        sqlx::query(&format!(
            "INSERT INTO group_members ({MEMBER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(m.group_id.to_string())
        .bind(m.identity_id.map(|i| i.to_string()))
        .bind(m.email.clone())
        .bind(text_of(&m.role))
        .bind(text_of(&m.status))
        .bind(to_millis(m.created_at))
        .bind(to_millis(m.updated_at))
        .execute(&mut *$conn)
        .await?;
    }};
}

macro_rules! impl_sharing_store {
    ($store:ty) => {
        #[async_trait]
        impl SharingStore for $store {
            async fn insert_group(
                &self,
                group: &GroupRecord,
                creator: &MembershipRecord,
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(&format!(
                    "INSERT INTO sharing_groups ({GROUP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(group.id.to_string())
                .bind(&group.name)
                .bind(&group.description)
                .bind(group.parent_id.map(|p| p.to_string()))
                .bind(serde_json::to_string(&group.policies).expect("policies serialize"))
                .bind(group.created_by.to_string())
                .bind(to_millis(group.created_at))
                .execute(&mut *tx)
                .await?;
                put_membership_in!(tx, creator);
                tx.commit().await?;
                Ok(())
            }

            async fn group(&self, id: GroupId) -> StoreResult<Option<GroupRecord>> {
                let row: Option<GroupRow> = sqlx::query_as(&format!(
                    "SELECT {GROUP_COLUMNS} FROM sharing_groups WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(GroupRow::into_record).transpose()
            }

            async fn update_group(&self, group: &GroupRecord) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE sharing_groups SET name = $2, description = $3, parent_id = $4, policies = $5 WHERE id = $1",
                )
                .bind(group.id.to_string())
                .bind(&group.name)
                .bind(&group.description)
                .bind(group.parent_id.map(|p| p.to_string()))
                .bind(serde_json::to_string(&group.policies).expect("policies serialize"))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_group(&self, id: GroupId) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                // Explicit rather than through ON DELETE: SQLite applies
                // those only with foreign keys on, and this must not depend
                // on a connection setting.
                sqlx::query("UPDATE sharing_groups SET parent_id = NULL WHERE parent_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM group_members WHERE group_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                let done = sqlx::query("DELETE FROM sharing_groups WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn group_ancestors(&self, id: GroupId) -> StoreResult<Vec<GroupId>> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "WITH RECURSIVE up(id, depth) AS (
                         SELECT parent_id, 1 FROM sharing_groups WHERE id = $1 AND parent_id IS NOT NULL
                         UNION ALL
                         SELECT g.parent_id, up.depth + 1 FROM sharing_groups g JOIN up ON g.id = up.id
                         WHERE g.parent_id IS NOT NULL AND up.depth < 64
                     )
                     SELECT id FROM up ORDER BY depth",
                )
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(g,)| uuid_of("sharing_groups", &g).map(GroupId))
                    .collect()
            }

            async fn groups_of(
                &self,
                identities: &[IdentityId],
            ) -> StoreResult<Vec<(GroupRecord, MembershipRecord)>> {
                if identities.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "SELECT {MEMBER_COLUMNS} FROM group_members WHERE identity_id IN ({}) ORDER BY created_at",
                    placeholders(1, identities.len())
                );
                let mut query = sqlx::query_as::<_, MemberRow>(&sql);
                for id in identities {
                    query = query.bind(id.to_string());
                }
                let rows = query.fetch_all(&self.pool).await?;
                let mut out = Vec::new();
                for row in rows {
                    let membership = row.into_record()?;
                    if let Some(group) = self.group(membership.group_id).await? {
                        out.push((group, membership));
                    }
                }
                Ok(out)
            }

            async fn public_groups(&self) -> StoreResult<Vec<GroupRecord>> {
                let rows: Vec<GroupRow> = sqlx::query_as(&format!(
                    "SELECT {GROUP_COLUMNS} FROM sharing_groups ORDER BY name"
                ))
                .fetch_all(&self.pool)
                .await?;
                let mut out = Vec::new();
                for row in rows {
                    let group = row.into_record()?;
                    if group.policies.visibility
                        == lattice_protocol::sharing::GroupVisibility::Authenticated
                    {
                        out.push(group);
                    }
                }
                Ok(out)
            }

            async fn membership(
                &self,
                group: GroupId,
                identity: IdentityId,
            ) -> StoreResult<Option<MembershipRecord>> {
                let row: Option<MemberRow> = sqlx::query_as(&format!(
                    "SELECT {MEMBER_COLUMNS} FROM group_members WHERE group_id = $1 AND identity_id = $2"
                ))
                .bind(group.to_string())
                .bind(identity.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(MemberRow::into_record).transpose()
            }

            async fn membership_by_email(
                &self,
                group: GroupId,
                email: &str,
            ) -> StoreResult<Option<MembershipRecord>> {
                let row: Option<MemberRow> = sqlx::query_as(&format!(
                    "SELECT {MEMBER_COLUMNS} FROM group_members WHERE group_id = $1 AND identity_id IS NULL AND email = $2"
                ))
                .bind(group.to_string())
                .bind(email)
                .fetch_optional(&self.pool)
                .await?;
                row.map(MemberRow::into_record).transpose()
            }

            async fn put_membership(&self, membership: &MembershipRecord) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                put_membership_in!(tx, membership);
                tx.commit().await?;
                Ok(())
            }

            async fn members(
                &self,
                group: GroupId,
            ) -> StoreResult<Vec<(MembershipRecord, Option<String>)>> {
                #[derive(sqlx::FromRow)]
                struct Row {
                    #[sqlx(flatten)]
                    member: MemberRow,
                    username: Option<String>,
                }
                let rows: Vec<Row> = sqlx::query_as(
                    "SELECT m.group_id, m.identity_id, m.email, m.role, m.status, m.created_at, m.updated_at, i.username
                     FROM group_members m LEFT JOIN identities i ON i.id = m.identity_id
                     WHERE m.group_id = $1 ORDER BY m.created_at",
                )
                .bind(group.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|r| Ok((r.member.into_record()?, r.username)))
                    .collect()
            }

            async fn effective_groups(&self, identities: &[IdentityId]) -> StoreResult<Vec<GroupId>> {
                if identities.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "WITH RECURSIVE eff(id, depth) AS (
                         SELECT group_id, 0 FROM group_members WHERE status = 'active' AND identity_id IN ({})
                         UNION ALL
                         SELECT g.parent_id, eff.depth + 1 FROM sharing_groups g JOIN eff ON g.id = eff.id
                         WHERE g.parent_id IS NOT NULL AND eff.depth < 64
                     )
                     SELECT DISTINCT id FROM eff",
                    placeholders(1, identities.len())
                );
                let mut query = sqlx::query_as::<_, (String,)>(&sql);
                for id in identities {
                    query = query.bind(id.to_string());
                }
                let rows = query.fetch_all(&self.pool).await?;
                rows.into_iter()
                    .map(|(g,)| uuid_of("group_members", &g).map(GroupId))
                    .collect()
            }

            async fn claim_email_invitations(
                &self,
                identity: IdentityId,
                email: &str,
                at: DateTime<Utc>,
            ) -> StoreResult<u64> {
                let done = sqlx::query(
                    "UPDATE group_members SET identity_id = $1, updated_at = $3
                     WHERE identity_id IS NULL AND email = $2 AND status = 'invited'
                       AND group_id NOT IN (SELECT group_id FROM group_members WHERE identity_id = $1)",
                )
                .bind(identity.to_string())
                .bind(email)
                .bind(to_millis(at))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn insert_acl_rule(&self, rule: &AclRuleInfo, limit: u64) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let (count,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM acl_rules WHERE collection_id = $1")
                        .bind(rule.collection_id.to_string())
                        .fetch_one(&mut *tx)
                        .await?;
                if count as u64 >= limit {
                    return Ok(false);
                }
                sqlx::query(&format!(
                    "INSERT INTO acl_rules ({RULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ))
                .bind(rule.id.to_string())
                .bind(rule.collection_id.to_string())
                .bind(rule.principal.to_string())
                .bind(&rule.path)
                .bind(rule.permissions.as_str())
                .bind(rule.expires_at.map(to_millis))
                .bind(rule.created_by.to_string())
                .bind(to_millis(rule.created_at))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn acl_rule(&self, id: AclRuleId) -> StoreResult<Option<AclRuleInfo>> {
                let row: Option<RuleRow> = sqlx::query_as(&format!(
                    "SELECT {RULE_COLUMNS} FROM acl_rules WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(RuleRow::into_info).transpose()
            }

            async fn acl_rules(&self, collection: CollectionId) -> StoreResult<Vec<AclRuleInfo>> {
                let rows: Vec<RuleRow> = sqlx::query_as(&format!(
                    "SELECT {RULE_COLUMNS} FROM acl_rules WHERE collection_id = $1 ORDER BY created_at, id"
                ))
                .bind(collection.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(RuleRow::into_info).collect()
            }

            async fn update_acl_rule(&self, rule: &AclRuleInfo) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE acl_rules SET permissions = $2, expires_at = $3 WHERE id = $1",
                )
                .bind(rule.id.to_string())
                .bind(rule.permissions.as_str())
                .bind(rule.expires_at.map(to_millis))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_acl_rule(&self, id: AclRuleId) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM acl_rules WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn collections_shared_with(
                &self,
                principals: &[Principal],
            ) -> StoreResult<Vec<CollectionRecord>> {
                if principals.is_empty() {
                    return Ok(Vec::new());
                }
                let list = placeholders(1, principals.len());
                let sql = format!(
                    "SELECT {COLLECTION_COLUMNS} FROM collections WHERE withdrawn_at IS NULL AND id IN (
                         SELECT collection_id FROM acl_rules WHERE principal IN ({list})
                         UNION SELECT collection_id FROM collection_roles WHERE principal IN ({list})
                     ) ORDER BY name"
                );
                let mut query = sqlx::query_as::<_, CollectionRow>(&sql);
                for p in principals {
                    query = query.bind(p.to_string());
                }
                let rows = query.fetch_all(&self.pool).await?;
                rows.into_iter().map(CollectionRow::into_record).collect()
            }

            async fn insert_role(&self, role: &RoleInfo) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO collection_roles ({ROLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
                ))
                .bind(role.id.to_string())
                .bind(role.collection_id.to_string())
                .bind(role.principal.to_string())
                .bind(role.role.as_str())
                .bind(role.created_by.to_string())
                .bind(to_millis(role.created_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn role(&self, id: RoleId) -> StoreResult<Option<RoleInfo>> {
                let row: Option<RoleRow> = sqlx::query_as(&format!(
                    "SELECT {ROLE_COLUMNS} FROM collection_roles WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(RoleRow::into_info).transpose()
            }

            async fn roles(&self, collection: CollectionId) -> StoreResult<Vec<RoleInfo>> {
                let rows: Vec<RoleRow> = sqlx::query_as(&format!(
                    "SELECT {ROLE_COLUMNS} FROM collection_roles WHERE collection_id = $1 ORDER BY created_at, id"
                ))
                .bind(collection.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(RoleRow::into_info).collect()
            }

            async fn delete_role(&self, id: RoleId) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM collection_roles WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn insert_guest_collection(&self, c: &CollectionRecord) -> StoreResult<()> {
                let guest = c
                    .guest_of
                    .as_ref()
                    .expect("a guest collection names its host");
                // A withdrawn collection of that name (e.g. a deleted
                // guest) gives its name back.
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "DELETE FROM collections WHERE owner_id = $1 AND name = $2 AND withdrawn_at IS NOT NULL AND host_collection_id IS NOT NULL
                       AND id NOT IN (SELECT source_collection FROM transfers UNION SELECT destination_collection FROM transfers)
                       AND id NOT IN (SELECT collection_id FROM acl_rules UNION SELECT collection_id FROM collection_roles)",
                )
                .bind(c.owner_id.to_string())
                .bind(&c.name)
                .execute(&mut *tx)
                .await?;
                sqlx::query(&format!(
                    "INSERT INTO collections ({COLLECTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, NULL)"
                ))
                .bind(c.id.to_string())
                .bind(c.owner_id.to_string())
                .bind(c.endpoint_id.to_string())
                .bind(&c.name)
                .bind(&c.root)
                .bind(to_millis(c.created_at))
                .bind(to_millis(c.announced_at))
                .bind(guest.host.to_string())
                .bind(&guest.path)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn withdraw_collection(&self, id: CollectionId, at: DateTime<Utc>) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE collections SET withdrawn_at = $2 WHERE id = $1 AND withdrawn_at IS NULL",
                )
                .bind(id.to_string())
                .bind(to_millis(at))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn set_sharing_policy(
                &self,
                collection: CollectionId,
                policy: &SharingPolicy,
            ) -> StoreResult<()> {
                sqlx::query("UPDATE collections SET sharing_policy = $2 WHERE id = $1")
                    .bind(collection.to_string())
                    .bind(serde_json::to_string(policy).expect("policy serializes"))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn insert_grant(
                &self,
                resource: &str,
                principal: Principal,
                by: IdentityId,
                at: DateTime<Utc>,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO resource_grants (resource, principal, created_by, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (resource, principal) DO NOTHING",
                )
                .bind(resource)
                .bind(principal.to_string())
                .bind(by.to_string())
                .bind(to_millis(at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn delete_grant(&self, resource: &str, principal: Principal) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM resource_grants WHERE resource = $1 AND principal = $2")
                    .bind(resource)
                    .bind(principal.to_string())
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn grants(&self, resource: &str) -> StoreResult<Vec<Principal>> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT principal FROM resource_grants WHERE resource = $1 ORDER BY created_at, principal",
                )
                .bind(resource)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|(p,)| principal_of("resource_grants", p))
                    .collect()
            }

            async fn identities_named(&self, name: &str) -> StoreResult<Vec<IdentityId>> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT id FROM identities WHERE username = $1 OR LOWER(email) = LOWER($1) ORDER BY created_at LIMIT 20",
                )
                .bind(name)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|(id,)| uuid_of("identities", id).map(IdentityId))
                    .collect()
            }

            async fn insert_audit(&self, entry: &NewAuditEntry) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO audit_log (time, actor, client_id, subject, action, detail) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(to_millis(entry.time))
                .bind(entry.actor.to_string())
                .bind(entry.client_id.map(|c| c.to_string()))
                .bind(&entry.subject)
                .bind(&entry.action)
                .bind(entry.detail.to_string())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn audit(
                &self,
                subject: &str,
                after: i64,
                limit: u32,
            ) -> StoreResult<Vec<AuditEntry>> {
                let rows: Vec<AuditRow> = sqlx::query_as(
                    "SELECT seq, time, actor, client_id, subject, action, detail FROM audit_log
                     WHERE subject = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .bind(subject)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(AuditRow::into_entry).collect()
            }
        }
    };
}

impl_sharing_store!(SqliteStore);
impl_sharing_store!(PostgresStore);
