//! The REST API under `/v1`: one module per resource.

pub(crate) mod auth;
pub(crate) mod clients;
// `pub` inside these two stays until the sharing work on them has merged
// (narrowing them now would conflict line by line); the module itself is
// crate-private like the others.
#[allow(unreachable_pub)]
pub(crate) mod collections;
pub(crate) mod endpoints;
pub(crate) mod functions;
pub(crate) mod health;
pub(crate) mod identities;
pub(crate) mod relay;
pub(crate) mod session;
pub(crate) mod tasks;
#[allow(unreachable_pub)]
pub(crate) mod transfers;
