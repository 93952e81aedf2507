//! The REST API under `/v1`: one module per resource.

pub(crate) mod access;
pub(crate) mod actions;
pub(crate) mod auth;
pub(crate) mod clients;
pub(crate) mod collections;
pub(crate) mod endpoints;
pub(crate) mod flows;
pub(crate) mod functions;
pub(crate) mod grants;
pub(crate) mod groups;
pub(crate) mod health;
pub(crate) mod identities;
pub(crate) mod notify;
pub(crate) mod relay;
pub(crate) mod search;
pub(crate) mod session;
pub(crate) mod tasks;
pub(crate) mod timers;
pub(crate) mod transfers;

use serde::Deserialize;

/// The paging of an audit trail (groups and collections alike).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct AuditQuery {
    /// Entries after this sequence number.
    #[serde(default)]
    pub(crate) after: i64,
    /// At most this many entries (1 to 1000, default 100).
    #[serde(default)]
    limit: Option<u32>,
}

impl AuditQuery {
    pub(crate) fn limit(&self) -> u32 {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
}
