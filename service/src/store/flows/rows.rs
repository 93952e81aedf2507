//! The flows tables' rows as the database returns them, and their
//! conversion to records (an undecodable row is `StoreError::Corrupt`).

use super::*;

/// A JSON column (a value or a list of strings).
fn json_of<T: serde::de::DeserializeOwned>(table: &'static str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt(table, format!("bad JSON `{text}`: {e}")))
}

/// A count stored as BIGINT that must not be negative.
fn count_of(table: &'static str, n: i64) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| corrupt(table, format!("negative count {n}")))
}

#[derive(sqlx::FromRow)]
pub(super) struct FlowRow {
    pub(super) id: String,
    pub(super) owner_id: String,
    pub(super) title: String,
    pub(super) subtitle: String,
    pub(super) description: String,
    pub(super) keywords: String,
    pub(super) definition: String,
    pub(super) input_schema: String,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

impl FlowRow {
    /// The flow, without its roles (the caller adds them).
    pub(super) fn into_record(self) -> StoreResult<FlowRecord> {
        const T: &str = "flows";
        Ok(FlowRecord {
            id: FlowId(uuid_of(T, &self.id)?),
            owner: IdentityId(uuid_of(T, &self.owner_id)?),
            title: self.title,
            subtitle: self.subtitle,
            description: self.description,
            keywords: json_of(T, &self.keywords)?,
            definition: json_of(T, &self.definition)?,
            input_schema: json_of(T, &self.input_schema)?,
            roles: Vec::new(),
            created_at: from_millis(self.created_at),
            updated_at: from_millis(self.updated_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct FlowRoleRow {
    pub(super) flow_id: String,
    pub(super) role: String,
    pub(super) principal: String,
}

impl FlowRoleRow {
    pub(super) fn into_role(self) -> StoreResult<(FlowId, (FlowRoleName, String))> {
        const T: &str = "flow_roles";
        Ok((
            FlowId(uuid_of(T, &self.flow_id)?),
            (parse_text::<FlowRoleName>(T, &self.role)?, self.principal),
        ))
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RunRow {
    pub(super) id: String,
    pub(super) flow_id: String,
    pub(super) flow_title: String,
    pub(super) starter_id: String,
    pub(super) request_id: Option<String>,
    pub(super) label: Option<String>,
    pub(super) tags: String,
    pub(super) run_managers: String,
    pub(super) run_monitors: String,
    pub(super) status: String,
    pub(super) transitions: i64,
    pub(super) machine: String,
    pub(super) details: String,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) completed_at: Option<i64>,
}

impl RunRow {
    pub(super) fn into_record(self) -> StoreResult<RunRecord> {
        const T: &str = "flow_runs";
        Ok(RunRecord {
            id: FlowRunId(uuid_of(T, &self.id)?),
            flow_id: FlowId(uuid_of(T, &self.flow_id)?),
            flow_title: self.flow_title,
            starter: IdentityId(uuid_of(T, &self.starter_id)?),
            request_id: self.request_id,
            label: self.label,
            tags: json_of(T, &self.tags)?,
            run_managers: json_of(T, &self.run_managers)?,
            run_monitors: json_of(T, &self.run_monitors)?,
            status: parse_text::<RunStatus>(T, &self.status)?,
            transitions: count_of(T, self.transitions)?,
            machine: self.machine,
            details: json_of(T, &self.details)?,
            created_at: from_millis(self.created_at),
            updated_at: from_millis(self.updated_at),
            completed_at: self.completed_at.map(from_millis),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RunLogRow {
    pub(super) seq: i64,
    pub(super) at: i64,
    pub(super) state: String,
    pub(super) code: String,
    pub(super) details: String,
}

impl RunLogRow {
    pub(super) fn into_record(self) -> StoreResult<RunLogRecord> {
        const T: &str = "flow_run_log";
        Ok(RunLogRecord {
            seq: count_of(T, self.seq)?,
            at: from_millis(self.at),
            state: self.state,
            code: self.code,
            details: json_of(T, &self.details)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ActionRow {
    pub(super) id: String,
    pub(super) provider: String,
    pub(super) request_id: String,
    pub(super) creator_id: String,
    pub(super) run_id: Option<String>,
    pub(super) status: String,
    pub(super) label: Option<String>,
    pub(super) monitor_by: String,
    pub(super) manage_by: String,
    pub(super) body: String,
    pub(super) details: String,
    pub(super) internal: String,
    pub(super) created_at: i64,
    pub(super) completed_at: Option<i64>,
    pub(super) release_after: Option<i64>,
}

impl ActionRow {
    pub(super) fn into_record(self) -> StoreResult<ActionRecord> {
        const T: &str = "flow_actions";
        Ok(ActionRecord {
            id: ActionId(uuid_of(T, &self.id)?),
            provider: self.provider,
            request_id: self.request_id,
            creator: IdentityId(uuid_of(T, &self.creator_id)?),
            run_id: self
                .run_id
                .map(|r| uuid_of(T, &r).map(FlowRunId))
                .transpose()?,
            status: parse_text::<ActionState>(T, &self.status)?,
            label: self.label,
            monitor_by: json_of(T, &self.monitor_by)?,
            manage_by: json_of(T, &self.manage_by)?,
            body: json_of(T, &self.body)?,
            details: json_of(T, &self.details)?,
            internal: json_of(T, &self.internal)?,
            created_at: from_millis(self.created_at),
            completed_at: self.completed_at.map(from_millis),
            release_after: self.release_after.map(|s| count_of(T, s)).transpose()?,
        })
    }
}
