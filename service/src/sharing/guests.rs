//! Guest collections and the sharing policies of their hosts.
//!
//! A guest collection is rooted at a directory of a host collection and is
//! owned by whoever created it; its files are reached with the creator's
//! access on the host (checked by `access::check` on every use), and the
//! agent resolves every path beneath that directory. The host's
//! administrators decide through its sharing policy whether guest
//! collections are allowed and which paths may be shared how.

use chrono::Utc;
use lattice_protocol::names::CollectionName;
use lattice_protocol::sharing::{GuestCollectionCreate, Permissions, SharingPolicy};
use lattice_protocol::CollectionId;
use serde_json::json;

use super::access::{self, share_mode, Capability};
use super::paths::RulePath;
use super::{audit, Actor, SharingError, SharingResult};
use crate::store::{CollectionRecord, GuestOf, SharedStore, StoreError};

fn subject(id: CollectionId) -> String {
    format!("collection:{id}")
}

/// Creates a guest collection of `host` rooted at `request.path`.
pub async fn create(
    store: &SharedStore,
    actor: &Actor,
    host: &CollectionRecord,
    request: GuestCollectionCreate,
) -> SharingResult<CollectionRecord> {
    if host.guest_of.is_some() {
        return Err(SharingError::Invalid(format!(
            "`{}` is a guest collection itself; share from its host collection",
            host.name
        )));
    }
    let name = CollectionName::parse(&request.name)
        .map_err(|e| SharingError::Invalid(format!("name: {e}")))?;
    let path = RulePath::parse(&request.path).map_err(SharingError::Invalid)?;
    let canonical = path.canonical();
    if !canonical.ends_with('/') {
        return Err(SharingError::Invalid(format!(
            "path `{}`: a guest collection is rooted at a directory; end the path with `/`",
            request.path
        )));
    }
    let policy = host.sharing_policy.clone().unwrap_or_default();
    let components: Vec<&str> = canonical.split('/').filter(|c| !c.is_empty()).collect();
    if share_mode(&policy, &components) == lattice_protocol::sharing::ShareMode::None {
        return Err(SharingError::Denied(format!(
            "collection `{}` does not allow guest collections at {canonical} (its sharing policy)",
            host.name
        )));
    }
    // Only what the creator can read can be shared.
    access::check(store, &actor.viewer, host, &canonical, Permissions::Read).await?;
    let now = Utc::now();
    let guest = CollectionRecord {
        id: CollectionId::new(),
        owner_id: actor.identity,
        endpoint_id: host.endpoint_id,
        name: name.as_str().to_owned(),
        root: format!(
            "{}/{}",
            host.root.trim_end_matches('/'),
            canonical.trim_start_matches('/')
        ),
        created_at: now,
        announced_at: now,
        withdrawn_at: None,
        guest_of: Some(GuestOf {
            host: host.id,
            path: canonical.clone(),
        }),
        sharing_policy: None,
    };
    match store.insert_guest_collection(&guest).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(SharingError::Conflict(format!(
                "you already have a collection named `{}`",
                guest.name
            )))
        }
        Err(e) => return Err(e.into()),
    }
    let detail =
        json!({"guest_id": guest.id, "name": guest.name, "host_id": host.id, "path": canonical});
    audit(
        store,
        actor,
        subject(host.id),
        "guest.create",
        detail.clone(),
    )
    .await?;
    audit(store, actor, subject(guest.id), "guest.create", detail).await?;
    Ok(guest)
}

/// Deletes a guest collection (its creator or its administrators); its
/// rules and roles stop granting anything with it.
pub async fn delete(
    store: &SharedStore,
    actor: &Actor,
    guest: &CollectionRecord,
) -> SharingResult<()> {
    if guest.guest_of.is_none() {
        return Err(SharingError::Invalid(format!(
            "`{}` is hosted by an agent: remove it from the agent's [[collections]] instead",
            guest.name
        )));
    }
    if !access::has(store, &actor.viewer, guest, Capability::ManageRoles).await? {
        return Err(SharingError::Denied(format!(
            "only the creator of guest collection `{}` or its administrators may delete it",
            guest.name
        )));
    }
    store.withdraw_collection(guest.id, Utc::now()).await?;
    audit(
        store,
        actor,
        subject(guest.id),
        "guest.delete",
        json!({"name": guest.name}),
    )
    .await
}

/// The sharing policy of a collection (the default when none was set).
pub fn policy(collection: &CollectionRecord) -> SharingPolicy {
    collection.sharing_policy.clone().unwrap_or_default()
}

/// Replaces a collection's sharing policy (owner and administrators).
pub async fn set_policy(
    store: &SharedStore,
    actor: &Actor,
    collection: &CollectionRecord,
    mut policy: SharingPolicy,
) -> SharingResult<SharingPolicy> {
    if collection.guest_of.is_some() {
        return Err(SharingError::Invalid(format!(
            "`{}` is a guest collection: guest collections cannot host others",
            collection.name
        )));
    }
    if !access::has(store, &actor.viewer, collection, Capability::ManageRoles).await? {
        return Err(SharingError::Denied(format!(
            "only the owner of collection `{}` or its administrators may change its sharing policy",
            collection.name
        )));
    }
    if policy.paths.len() > 100 {
        return Err(SharingError::Invalid("paths: at most 100".into()));
    }
    for (i, p) in policy.paths.iter_mut().enumerate() {
        let rule = RulePath::parse(&p.path)
            .map_err(|e| SharingError::Invalid(format!("paths[{i}]: {e}")))?;
        let canonical = rule.canonical();
        if !canonical.ends_with('/') {
            return Err(SharingError::Invalid(format!(
                "paths[{i}]: `{}` must be a directory (end it with `/`)",
                p.path
            )));
        }
        p.path = canonical;
    }
    store.set_sharing_policy(collection.id, &policy).await?;
    audit(
        store,
        actor,
        subject(collection.id),
        "sharing.policy",
        json!(policy),
    )
    .await?;
    Ok(policy)
}
