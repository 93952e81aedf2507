//! The REST API under `/v1`: one module per resource.

pub(crate) mod access;
pub(crate) mod auth;
pub(crate) mod clients;
pub(crate) mod collections;
pub(crate) mod endpoints;
pub(crate) mod functions;
pub(crate) mod grants;
pub(crate) mod groups;
pub(crate) mod health;
pub(crate) mod identities;
pub(crate) mod relay;
pub(crate) mod session;
pub(crate) mod tasks;
pub(crate) mod transfers;
