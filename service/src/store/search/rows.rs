//! The search tables' rows as the database returns them, and their
//! conversion to records (an undecodable row is `StoreError::Corrupt`).

use super::*;

#[derive(sqlx::FromRow)]
pub(super) struct IndexRow {
    pub(super) id: String,
    pub(super) display_name: String,
    pub(super) description: String,
    pub(super) owner_id: String,
    pub(super) status: String,
    pub(super) created_at: i64,
    pub(super) deleted_at: Option<i64>,
    pub(super) purge_after: Option<i64>,
}

impl IndexRow {
    pub(super) fn into_record(self) -> StoreResult<SearchIndexRecord> {
        const T: &str = "search_indexes";
        Ok(SearchIndexRecord {
            id: SearchIndexId(uuid_of(T, &self.id)?),
            display_name: self.display_name,
            description: self.description,
            owner: IdentityId(uuid_of(T, &self.owner_id)?),
            status: parse_text::<IndexStatus>(T, &self.status)?,
            created_at: from_millis(self.created_at),
            deleted_at: self.deleted_at.map(from_millis),
            purge_after: self.purge_after.map(from_millis),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RoleRow {
    pub(super) id: String,
    pub(super) index_id: String,
    pub(super) principal: String,
    pub(super) role: String,
    pub(super) created_at: i64,
}

impl RoleRow {
    pub(super) fn into_role(self) -> StoreResult<IndexRole> {
        const T: &str = "search_index_roles";
        Ok(IndexRole {
            id: uuid_of(T, &self.id)?,
            index_id: SearchIndexId(uuid_of(T, &self.index_id)?),
            principal: self.principal,
            role: parse_text::<IndexRoleName>(T, &self.role)?,
            created_at: from_millis(self.created_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct TaskRow {
    pub(super) seq: i64,
    pub(super) id: String,
    pub(super) index_id: String,
    pub(super) kind: String,
    pub(super) state: String,
    pub(super) submitted_by: String,
    pub(super) payload: String,
    pub(super) entries_total: i64,
    pub(super) entries_applied: i64,
    pub(super) rejected: String,
    pub(super) message: Option<String>,
    pub(super) created_at: i64,
    pub(super) started_at: Option<i64>,
    pub(super) completed_at: Option<i64>,
}

impl TaskRow {
    pub(super) fn into_record(self) -> StoreResult<SearchTaskRecord> {
        const T: &str = "search_tasks";
        Ok(SearchTaskRecord {
            id: SearchTaskId(uuid_of(T, &self.id)?),
            seq: self.seq,
            index_id: SearchIndexId(uuid_of(T, &self.index_id)?),
            kind: parse_text::<SearchTaskKind>(T, &self.kind)?,
            state: parse_text::<SearchTaskState>(T, &self.state)?,
            submitted_by: IdentityId(uuid_of(T, &self.submitted_by)?),
            payload: self.payload,
            entries_total: self.entries_total.max(0) as u64,
            entries_applied: self.entries_applied.max(0) as u64,
            rejected: serde_json::from_str(&self.rejected).map_err(|e| corrupt(T, e))?,
            message: self.message,
            created_at: from_millis(self.created_at),
            started_at: self.started_at.map(from_millis),
            completed_at: self.completed_at.map(from_millis),
        })
    }
}
