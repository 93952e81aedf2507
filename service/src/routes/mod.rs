//! The REST API under `/v1`: one module per resource.

pub mod auth;
pub mod clients;
pub mod collections;
pub mod endpoints;
pub mod functions;
pub mod health;
pub mod identities;
pub mod relay;
pub mod session;
pub mod tasks;
pub mod transfers;
