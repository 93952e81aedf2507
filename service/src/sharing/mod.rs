//! The sharing domain: who a caller is as principals ([`Viewer`]), groups
//! and their memberships ([`groups`]), access rules and roles on
//! collections and the one file-access check every file operation and
//! transfer item goes through ([`access`]), guest collections and the
//! sharing policies of their hosts ([`guests`]), grants on functions and
//! endpoints ([`grants`]), and the audit trail of every change.
//!
//! It owns the permission rules; it must not talk to agents or know about
//! HTTP. Route handlers extract the request, call a function here with the
//! caller's [`Actor`], and turn a [`SharingError`] into an `ApiError`
//! through the one `From` impl below.

pub mod access;
pub mod grants;
pub mod groups;
pub mod guests;
mod membership;
mod paths;
mod principals;

use lattice_protocol::{ClientId, IdentityId};

pub use principals::Viewer;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::store::{NewAuditEntry, SharedStore, StoreError};

/// Most access rules one collection may have.
pub const MAX_RULES_PER_COLLECTION: u64 = 1_000;

/// Why a sharing action was refused. Each message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum SharingError {
    /// The request is malformed (400).
    #[error("{0}")]
    Invalid(String),
    /// No such thing, or the caller may not know it exists (404).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Denied(String),
    /// A token is needed (401): only `public` grants apply without one.
    #[error("{0}")]
    Unauthenticated(String),
    /// The state does not allow it (409).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SharingError> for ApiError {
    fn from(err: SharingError) -> Self {
        match err {
            SharingError::Invalid(m) => ApiError::bad_request(m),
            SharingError::NotFound(m) => ApiError::not_found(m),
            SharingError::Denied(m) => ApiError::forbidden(m),
            SharingError::Unauthenticated(m) => ApiError::unauthorized(m),
            SharingError::Conflict(m) => ApiError::conflict(m),
            SharingError::Store(e) => e.into(),
        }
    }
}

pub type SharingResult<T> = Result<T, SharingError>;

/// Who makes a change: their principals, and what the audit trail records.
#[derive(Clone, Debug)]
pub struct Actor {
    pub identity: IdentityId,
    pub client_id: Option<ClientId>,
    pub viewer: Viewer,
}

impl Actor {
    /// Loads the caller's principals.
    pub async fn of(store: &SharedStore, caller: &Caller) -> SharingResult<Self> {
        Ok(Self {
            identity: caller.identity_id,
            client_id: caller.client_id,
            viewer: Viewer::of(store, caller.identity_id).await?,
        })
    }
}

/// Records one change in the audit trail of `subject`.
async fn audit(
    store: &SharedStore,
    actor: &Actor,
    subject: String,
    action: &str,
    detail: serde_json::Value,
) -> SharingResult<()> {
    store
        .insert_audit(&NewAuditEntry {
            time: chrono::Utc::now(),
            actor: actor.identity,
            client_id: actor.client_id,
            subject,
            action: action.to_owned(),
            detail,
        })
        .await?;
    Ok(())
}

/// Checks that the identity or group a grant names exists: a grant to an
/// unknown principal would silently grant nothing.
pub(crate) async fn check_principal_exists(
    store: &SharedStore,
    principal: &lattice_protocol::sharing::Principal,
) -> SharingResult<()> {
    use lattice_protocol::sharing::Principal;
    match principal {
        Principal::Identity(id) => {
            if store.identity(*id).await?.is_none() {
                return Err(SharingError::NotFound(format!(
                    "principal {principal}: no such identity"
                )));
            }
        }
        Principal::Group(id) => {
            if store.group(*id).await?.is_none() {
                return Err(SharingError::NotFound(format!(
                    "principal {principal}: no such group"
                )));
            }
        }
        Principal::AllAuthenticatedUsers | Principal::Public => {}
    }
    Ok(())
}
