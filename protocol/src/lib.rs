//! Wire types shared by every Lattice party.
//!
//! This crate owns the shapes that cross a process boundary: typed ids, the
//! JSON bodies of the REST API (`api`), the error body every endpoint returns
//! (`error`), and the MessagePack frames of the agent channel and the worker
//! channel (`frames`, `framing`), and the collection, file-operation and
//! transfer shapes both of them carry (`transfer`), and the sharing
//! vocabulary: principals, groups, access rules and roles (`sharing`), and
//! the search vocabulary: indexes, entries, queries, facets (`search`), and
//! flows, runs and the action-provider API (`flows`), and notifications:
//! event kinds, preferences, webhooks and their deliveries (`notify`).
//!
//! It must not know how anything is stored, queued, executed or served: no
//! I/O, no async runtime, no database types. It depends on serde (plus uuid,
//! chrono and rmp-serde for the encodings); the optional `openapi` feature
//! derives OpenAPI schemas for the service's generated document.

pub mod api;
pub mod compute;
pub mod error;
pub mod flows;
pub mod frames;
pub mod framing;
pub mod ids;
pub mod names;
pub mod notify;
pub mod search;
pub mod sharing;
pub mod template;
pub mod timers;
pub mod transfer;

pub use error::{ErrorBody, ErrorCode};
pub use ids::*;

/// Version of this build, reported by the service's health route and by agents.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
