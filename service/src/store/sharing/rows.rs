//! The sharing tables' rows as the database returns them, and their
//! conversion to records (an undecodable row is `StoreError::Corrupt`).

use super::*;

#[derive(sqlx::FromRow)]
pub(super) struct GroupRow {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) description: String,
    pub(super) parent_id: Option<String>,
    pub(super) policies: String,
    pub(super) created_by: String,
    pub(super) created_at: i64,
}

impl GroupRow {
    pub(super) fn into_record(self) -> StoreResult<GroupRecord> {
        const T: &str = "sharing_groups";
        Ok(GroupRecord {
            id: GroupId(uuid_of(T, &self.id)?),
            name: self.name,
            description: self.description,
            parent_id: self
                .parent_id
                .map(|p| uuid_of(T, &p).map(GroupId))
                .transpose()?,
            policies: serde_json::from_str(&self.policies).map_err(|e| corrupt(T, e))?,
            created_by: IdentityId(uuid_of(T, &self.created_by)?),
            created_at: from_millis(self.created_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct MemberRow {
    pub(super) group_id: String,
    pub(super) identity_id: Option<String>,
    pub(super) email: Option<String>,
    pub(super) role: String,
    pub(super) status: String,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

impl MemberRow {
    pub(super) fn into_record(self) -> StoreResult<MembershipRecord> {
        const T: &str = "group_members";
        Ok(MembershipRecord {
            group_id: GroupId(uuid_of(T, &self.group_id)?),
            identity_id: self
                .identity_id
                .map(|i| uuid_of(T, &i).map(IdentityId))
                .transpose()?,
            email: self.email,
            role: parse_text(T, &self.role)?,
            status: parse_text(T, &self.status)?,
            created_at: from_millis(self.created_at),
            updated_at: from_millis(self.updated_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RuleRow {
    pub(super) id: String,
    pub(super) collection_id: String,
    pub(super) principal: String,
    pub(super) path: String,
    pub(super) permissions: String,
    pub(super) expires_at: Option<i64>,
    pub(super) created_by: String,
    pub(super) created_at: i64,
}

impl RuleRow {
    pub(super) fn into_info(self) -> StoreResult<AclRuleInfo> {
        const T: &str = "acl_rules";
        Ok(AclRuleInfo {
            id: AclRuleId(uuid_of(T, &self.id)?),
            collection_id: CollectionId(uuid_of(T, &self.collection_id)?),
            principal: principal_of(T, &self.principal)?,
            path: self.path,
            permissions: self
                .permissions
                .parse::<Permissions>()
                .map_err(|e| corrupt(T, e))?,
            expires_at: self.expires_at.map(from_millis),
            created_by: IdentityId(uuid_of(T, &self.created_by)?),
            created_at: from_millis(self.created_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RoleRow {
    pub(super) id: String,
    pub(super) collection_id: String,
    pub(super) principal: String,
    pub(super) role: String,
    pub(super) created_by: String,
    pub(super) created_at: i64,
}

impl RoleRow {
    pub(super) fn into_info(self) -> StoreResult<RoleInfo> {
        const T: &str = "collection_roles";
        Ok(RoleInfo {
            id: RoleId(uuid_of(T, &self.id)?),
            collection_id: CollectionId(uuid_of(T, &self.collection_id)?),
            principal: principal_of(T, &self.principal)?,
            role: parse_text::<CollectionRole>(T, &self.role)?,
            created_by: IdentityId(uuid_of(T, &self.created_by)?),
            created_at: from_millis(self.created_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    pub(super) seq: i64,
    pub(super) time: i64,
    pub(super) actor: String,
    pub(super) client_id: Option<String>,
    pub(super) subject: String,
    pub(super) action: String,
    pub(super) detail: String,
}

impl AuditRow {
    pub(super) fn into_entry(self) -> StoreResult<AuditEntry> {
        const T: &str = "audit_log";
        Ok(AuditEntry {
            seq: self.seq,
            time: from_millis(self.time),
            actor: IdentityId(uuid_of(T, &self.actor)?),
            client_id: self
                .client_id
                .map(|c| uuid_of(T, &c).map(ClientId))
                .transpose()?,
            subject: self.subject,
            action: self.action,
            detail: serde_json::from_str(&self.detail).map_err(|e| corrupt(T, e))?,
        })
    }
}
