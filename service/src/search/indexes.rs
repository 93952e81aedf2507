//! Indexes and the roles on them: who may see, change, delete and restore
//! an index, and the purge of deleted indexes after their grace period.
//!
//! Roles: `owner` (everything, including deleting the index and granting
//! `owner`), `admin` (roles other than `owner`, settings, may bypass
//! visibility), `writer` (ingest and delete entries). A role held through a
//! group counts for every effective member. Anyone, even anonymous, may see
//! an open index (it can be queried); a deleted one is shown only to its
//! admins and owners, so that they can restore it.

use std::collections::BTreeMap;

use chrono::Utc;
use lattice_protocol::search::{
    IndexCreate, IndexInfo, IndexRole, IndexRoleCreate, IndexRoleName, IndexStatus, IndexUpdate,
};
use lattice_protocol::sharing::Principal;
use lattice_protocol::SearchIndexId;

use super::{Asker, SearchHub, SearchResult, SearchServiceError};
use crate::store::{SearchIndexRecord, SharedStore};

/// Longest display name, in characters.
const MAX_NAME_CHARS: usize = 200;
/// Longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 10_000;

/// An index the caller may know about, with the caller's strongest role.
pub struct Known {
    pub record: SearchIndexRecord,
    pub role: Option<IndexRoleName>,
}

impl Known {
    /// 403 unless the caller holds `needed` or stronger.
    pub fn require(&self, needed: IndexRoleName, to: &str) -> SearchResult<()> {
        if self.role.is_some_and(|r| r >= needed) {
            return Ok(());
        }
        let needed = match needed {
            IndexRoleName::Writer => "writer, admin or owner",
            IndexRoleName::Admin => "admin or owner",
            IndexRoleName::Owner => "owner",
        };
        Err(SearchServiceError::Denied(format!(
            "only an index {needed} may {to} (search index {})",
            self.record.id
        )))
    }

    /// 409 unless the index is open.
    pub fn require_open(&self) -> SearchResult<()> {
        match self.record.status {
            IndexStatus::Open => Ok(()),
            IndexStatus::Deleted => Err(SearchServiceError::Conflict(format!(
                "search index {} is deleted; restore it first (`lattice search index restore {}`)",
                self.record.id, self.record.id
            ))),
        }
    }
}

/// The caller's strongest role on `index`.
pub async fn role_of(
    store: &SharedStore,
    asker: &Asker,
    index: SearchIndexId,
) -> SearchResult<Option<IndexRoleName>> {
    if !asker.viewer.is_authenticated() {
        return Ok(None);
    }
    let roles = store.search_roles(index).await?;
    Ok(roles
        .iter()
        .filter(|r| {
            r.principal
                .parse::<Principal>()
                .is_ok_and(|p| asker.viewer.matches(&p))
        })
        .map(|r| r.role)
        .max())
}

/// Loads an index the caller may know about: open ones for everybody,
/// deleted ones for their admins and owners; 404 otherwise.
pub async fn load(store: &SharedStore, asker: &Asker, id: SearchIndexId) -> SearchResult<Known> {
    let not_found = || SearchServiceError::NotFound(format!("search index {id} does not exist"));
    let record = store.search_index(id).await?.ok_or_else(not_found)?;
    let role = role_of(store, asker, id).await?;
    if record.status == IndexStatus::Deleted && role.is_none_or(|r| r < IndexRoleName::Admin) {
        return Err(not_found());
    }
    Ok(Known { record, role })
}

/// The API's view of an index (entry count and fields from the engine).
pub async fn info(hub: &SearchHub, known: Known) -> SearchResult<IndexInfo> {
    let (entry_count, fields) = match (known.record.status, hub.engine()) {
        (IndexStatus::Open, Ok(engine)) => (
            engine.count(known.record.id).await?,
            engine.fields(known.record.id).await?,
        ),
        _ => (0, BTreeMap::new()),
    };
    let record = known.record;
    Ok(IndexInfo {
        id: record.id,
        display_name: record.display_name,
        description: record.description,
        owner: record.owner,
        status: record.status,
        created_at: record.created_at,
        purge_after: record.purge_after,
        my_role: known.role,
        entry_count,
        fields,
    })
}

fn check_text(name: &str, description: &str) -> SearchResult<()> {
    if name.trim().is_empty() {
        return Err(SearchServiceError::invalid(
            "display_name must not be empty",
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(SearchServiceError::invalid(format!(
            "display_name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(SearchServiceError::invalid(format!(
            "description is longer than {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    Ok(())
}

/// Creates an index owned by the caller (an empty index in the engine, and
/// the owner's role row).
pub async fn create(
    store: &SharedStore,
    hub: &SearchHub,
    asker: &Asker,
    request: IndexCreate,
) -> SearchResult<IndexInfo> {
    let owner = asker.require_identity()?;
    check_text(&request.display_name, &request.description)?;
    let engine = hub.engine()?;
    let now = crate::store::from_millis(crate::store::to_millis(Utc::now()));
    let record = SearchIndexRecord {
        id: SearchIndexId::new(),
        display_name: request.display_name.trim().to_owned(),
        description: request.description,
        owner,
        status: IndexStatus::Open,
        created_at: now,
        deleted_at: None,
        purge_after: None,
    };
    engine.create_index(record.id).await?;
    let owner_role = IndexRole {
        id: uuid::Uuid::new_v4(),
        index_id: record.id,
        principal: Principal::Identity(owner).to_string(),
        role: IndexRoleName::Owner,
        created_at: now,
    };
    store.insert_search_index(&record, &owner_role).await?;
    tracing::info!(index_id = %record.id, owner = %owner, "search index created");
    info(
        hub,
        Known {
            record,
            role: Some(IndexRoleName::Owner),
        },
    )
    .await
}

/// Open indexes and deleted ones where the caller has a role, in creation order.
pub async fn list(
    store: &SharedStore,
    hub: &SearchHub,
    asker: &Asker,
) -> SearchResult<Vec<IndexInfo>> {
    asker.require_identity()?;
    let records = store.search_indexes_with_role(&asker.principals()).await?;
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let role = role_of(store, asker, record.id).await?;
        out.push(info(hub, Known { record, role }).await?);
    }
    Ok(out)
}

pub async fn show(
    store: &SharedStore,
    hub: &SearchHub,
    asker: &Asker,
    id: SearchIndexId,
) -> SearchResult<IndexInfo> {
    let known = load(store, asker, id).await?;
    info(hub, known).await
}

/// Changes the name or description (admins and owners).
pub async fn update(
    store: &SharedStore,
    hub: &SearchHub,
    asker: &Asker,
    id: SearchIndexId,
    update: IndexUpdate,
) -> SearchResult<IndexInfo> {
    let mut known = load(store, asker, id).await?;
    known.require(IndexRoleName::Admin, "change its settings")?;
    if let Some(name) = update.display_name {
        known.record.display_name = name.trim().to_owned();
    }
    if let Some(description) = update.description {
        known.record.description = description;
    }
    check_text(&known.record.display_name, &known.record.description)?;
    store.update_search_index(&known.record).await?;
    info(hub, known).await
}

/// Deletes an index (owners): it stops answering queries and taking
/// entries at once, stays restorable for the grace period, and is purged
/// (engine index dropped, rows removed) after it.
pub async fn delete(
    store: &SharedStore,
    hub: &SearchHub,
    asker: &Asker,
    id: SearchIndexId,
) -> SearchResult<IndexInfo> {
    let mut known = load(store, asker, id).await?;
    known.require(IndexRoleName::Owner, "delete it")?;
    known.require_open()?;
    let now = Utc::now();
    known.record.status = IndexStatus::Deleted;
    known.record.deleted_at = Some(now);
    known.record.purge_after = Some(now + hub.grace_period());
    store.update_search_index(&known.record).await?;
    tracing::info!(index_id = %id, purge_after = ?known.record.purge_after, "search index deleted");
    info(hub, known).await
}

/// Restores a deleted index within its grace period (owners).
pub async fn restore(
    store: &SharedStore,
    hub: &SearchHub,
    asker: &Asker,
    id: SearchIndexId,
) -> SearchResult<IndexInfo> {
    let mut known = load(store, asker, id).await?;
    known.require(IndexRoleName::Owner, "restore it")?;
    if known.record.status == IndexStatus::Open {
        return Err(SearchServiceError::Conflict(format!(
            "search index {id} is not deleted"
        )));
    }
    known.record.status = IndexStatus::Open;
    known.record.deleted_at = None;
    known.record.purge_after = None;
    store.update_search_index(&known.record).await?;
    tracing::info!(index_id = %id, "search index restored");
    info(hub, known).await
}

/// The roles on an index (any role holder may list them).
pub async fn roles(
    store: &SharedStore,
    asker: &Asker,
    id: SearchIndexId,
) -> SearchResult<Vec<IndexRole>> {
    let known = load(store, asker, id).await?;
    known.require(IndexRoleName::Writer, "list its roles")?;
    Ok(store.search_roles(id).await?)
}

/// Grants a role (admins and owners; only owners grant `owner`). The
/// principal must be an existing identity or group.
pub async fn add_role(
    store: &SharedStore,
    asker: &Asker,
    id: SearchIndexId,
    request: IndexRoleCreate,
) -> SearchResult<IndexRole> {
    let known = load(store, asker, id).await?;
    known.require(IndexRoleName::Admin, "change its roles")?;
    if request.role == IndexRoleName::Owner {
        known.require(IndexRoleName::Owner, "grant the owner role")?;
    }
    let principal: Principal =
        request
            .principal
            .parse()
            .map_err(|e: lattice_protocol::sharing::PrincipalError| {
                SearchServiceError::invalid(e.to_string())
            })?;
    if matches!(
        principal,
        Principal::Public | Principal::AllAuthenticatedUsers
    ) {
        return Err(SearchServiceError::invalid(format!(
            "a role goes to an identity or a group, not to `{principal}`"
        )));
    }
    crate::sharing::check_principal_exists(store, &principal)
        .await
        .map_err(|e| match e {
            crate::sharing::SharingError::Store(e) => SearchServiceError::Store(e),
            other => SearchServiceError::NotFound(other.to_string()),
        })?;
    let role = IndexRole {
        id: uuid::Uuid::new_v4(),
        index_id: id,
        principal: principal.to_string(),
        role: request.role,
        created_at: crate::store::from_millis(crate::store::to_millis(Utc::now())),
    };
    store.insert_search_role(&role).await.map_err(|e| match e {
        crate::store::StoreError::Conflict(_) => SearchServiceError::Conflict(format!(
            "{principal} already has the {} role on search index {id}",
            crate::store::search::role_name(role.role)
        )),
        other => other.into(),
    })?;
    tracing::info!(index_id = %id, principal = %principal, role = ?role.role, "search index role added");
    Ok(role)
}

/// Removes a role (admins and owners; only owners remove `owner`); the
/// last owner cannot be removed.
pub async fn delete_role(
    store: &SharedStore,
    asker: &Asker,
    id: SearchIndexId,
    role_id: uuid::Uuid,
) -> SearchResult<()> {
    let known = load(store, asker, id).await?;
    known.require(IndexRoleName::Admin, "change its roles")?;
    let roles = store.search_roles(id).await?;
    let Some(role) = roles.iter().find(|r| r.id == role_id) else {
        return Err(SearchServiceError::NotFound(format!(
            "search index {id} has no role {role_id}"
        )));
    };
    if role.role == IndexRoleName::Owner {
        known.require(IndexRoleName::Owner, "remove an owner")?;
        let owners = roles
            .iter()
            .filter(|r| r.role == IndexRoleName::Owner)
            .count();
        if owners <= 1 {
            return Err(SearchServiceError::Conflict(format!(
                "{} is the last owner of search index {id}; add another owner first",
                role.principal
            )));
        }
    }
    store.delete_search_role(id, role_id).await?;
    tracing::info!(index_id = %id, role_id = %role_id, "search index role removed");
    Ok(())
}

/// Drops the deleted indexes whose grace period is over: the engine's
/// index first, then the rows (a failure leaves the rows for the next run).
pub async fn purge_expired(store: &SharedStore, hub: &SearchHub) -> SearchResult<usize> {
    let expired = store.search_indexes_to_purge(Utc::now()).await?;
    let engine = hub.engine()?;
    let mut purged = 0;
    for index in expired {
        engine.drop_index(index.id).await?;
        store.delete_search_index(index.id).await?;
        tracing::info!(index_id = %index.id, "deleted search index purged");
        purged += 1;
    }
    Ok(purged)
}
