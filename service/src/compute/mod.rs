//! The compute domain: functions, endpoints, tasks and the agent channel.
//!
//! Every compute rule and every compute write lives here; the route
//! handlers in `routes/{functions,endpoints,tasks,session,relay}.rs` only
//! extract a request, call one function of this module with plain
//! arguments (the caller's [`Caller`](crate::auth::Caller), ids, typed
//! request bodies) and turn its [`ComputeError`] into an
//! [`ApiError`](crate::ApiError) with `?` (the mapping is in
//! [`error`]'s one `From` impl).
//!
//! - [`functions`]: registration and validation, who may use a function,
//!   deletion, the spec cache.
//! - [`endpoints`]: registration ([`create_endpoint`]), what the API shows
//!   of an endpoint, why a task waits on it, who may send tasks to it.
//! - [`submission`]: the rules a batch passes, then insert and publish.
//! - [`tasks`]: task and batch lookups with their permission checks, cancel.
//! - [`relay`]: one session per connected agent: dispatch within credits,
//!   results recorded and acknowledged.
//! - [`results`]: the fan-out of final tasks to result streams, and the
//!   batch stream; [`session`]: the session stream (`GET /v1/stream`).
//!
//! This module must not know HTTP status codes or extractors, and must not
//! call into `routes`. It uses the store, the broker and the agent registry
//! of [`AppState`](crate::AppState); data-plane frames from agents are
//! handed to [`crate::transfers`].
//!
//! Outside the service (`lattice dev`), only [`create_endpoint`],
//! [`endpoint_by_agent_secret`] and [`ComputeError`] are public.

pub(crate) mod endpoints;
mod error;
pub(crate) mod functions;
pub(crate) mod relay;
pub(crate) mod results;
pub(crate) mod session;
pub(crate) mod submission;
pub(crate) mod tasks;

pub use endpoints::{create_endpoint, endpoint_by_agent_secret};
pub use error::ComputeError;
pub(crate) use error::ComputeResult;
