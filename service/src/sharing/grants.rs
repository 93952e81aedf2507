//! Grants on functions and endpoints: who besides the owner may run a
//! function, or submit tasks to an endpoint. The compute domain asks
//! [`allows`] at submission; only the owner manages the grants.

use chrono::Utc;
use lattice_protocol::sharing::Principal;
use lattice_protocol::{EndpointId, FunctionId, IdentityId};
use serde_json::json;

use super::{audit, check_principal_exists, Actor, SharingError, SharingResult, Viewer};
use crate::store::SharedStore;

/// Most principals one function or endpoint may be shared with.
const MAX_GRANTS: usize = 1_000;

/// What a grant is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Function(FunctionId),
    Endpoint(EndpointId),
}

impl Resource {
    /// The key grants are stored and audited under.
    fn key(self) -> String {
        match self {
            Resource::Function(id) => format!("function:{id}"),
            Resource::Endpoint(id) => format!("endpoint:{id}"),
        }
    }

    fn describe(self) -> String {
        match self {
            Resource::Function(id) => format!("function {id}"),
            Resource::Endpoint(id) => format!("endpoint {id}"),
        }
    }
}

/// Whether a grant on `resource` applies to `viewer`.
pub async fn allows(
    store: &SharedStore,
    viewer: &Viewer,
    resource: Resource,
) -> SharingResult<bool> {
    let grants = store.grants(&resource.key()).await?;
    Ok(grants.iter().any(|p| viewer.matches(p)))
}

/// Whether `resource` has any grant (a multi-user endpoint with grants
/// takes tasks from its grantees only).
pub async fn restricted(store: &SharedStore, resource: Resource) -> SharingResult<bool> {
    Ok(!store.grants(&resource.key()).await?.is_empty())
}

fn require_owner(actor: &Actor, owner: IdentityId, resource: Resource) -> SharingResult<()> {
    if actor.viewer.is(owner) {
        Ok(())
    } else {
        Err(SharingError::Denied(format!(
            "only the owner of {} may manage who else uses it",
            resource.describe()
        )))
    }
}

pub async fn list(
    store: &SharedStore,
    actor: &Actor,
    resource: Resource,
    owner: IdentityId,
) -> SharingResult<Vec<Principal>> {
    require_owner(actor, owner, resource)?;
    Ok(store.grants(&resource.key()).await?)
}

/// Adds grants (granting twice is no error); returns all grants.
pub async fn add(
    store: &SharedStore,
    actor: &Actor,
    resource: Resource,
    owner: IdentityId,
    principals: Vec<Principal>,
) -> SharingResult<Vec<Principal>> {
    require_owner(actor, owner, resource)?;
    if principals.is_empty() {
        return Err(SharingError::Invalid(
            "principals: give at least one".into(),
        ));
    }
    if let (Resource::Endpoint(_), true) = (resource, principals.contains(&Principal::Public)) {
        return Err(SharingError::Invalid(
            "principals: an endpoint cannot be shared with `public` (submitting needs a token); use all_authenticated_users".into(),
        ));
    }
    for principal in &principals {
        check_principal_exists(store, principal).await?;
    }
    let key = resource.key();
    if store.grants(&key).await?.len() + principals.len() > MAX_GRANTS {
        return Err(SharingError::Conflict(format!(
            "{} would have more than {MAX_GRANTS} grants; grant to a group instead",
            resource.describe()
        )));
    }
    let now = Utc::now();
    for principal in &principals {
        store
            .insert_grant(&key, *principal, actor.identity, now)
            .await?;
    }
    audit(
        store,
        actor,
        key.clone(),
        "grant.create",
        json!({"principals": principals}),
    )
    .await?;
    Ok(store.grants(&key).await?)
}

/// Revokes one grant: running tasks go on, new submissions are checked.
pub async fn remove(
    store: &SharedStore,
    actor: &Actor,
    resource: Resource,
    owner: IdentityId,
    principal: Principal,
) -> SharingResult<()> {
    require_owner(actor, owner, resource)?;
    let key = resource.key();
    if !store.delete_grant(&key, principal).await? {
        return Err(SharingError::NotFound(format!(
            "{} is not shared with {principal}",
            resource.describe()
        )));
    }
    audit(
        store,
        actor,
        key,
        "grant.delete",
        json!({"principal": principal}),
    )
    .await
}
