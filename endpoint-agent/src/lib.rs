//! The endpoint agent: holds the control channel to the service, dispatches
//! tasks to worker pools, and hosts collections: file operations and its
//! side of transfers, through `lattice-data-plane`.
//!
//! It owns: the endpoint's saved credential (`endpoint.json`) and config file
//! (`config.toml`), the one outbound WebSocket to the service (MessagePack
//! frames, credit-based flow control, result batching and re-sending until
//! acknowledged, reconnects with jittered backoff), the dispatcher that
//! workers connect to over TCP (task queue, assignment, retry on worker
//! loss), the local worker pool, the worker blocks of a scheduler provider
//! (`lattice-scheduler-adapters`, scaled by its strategy), the worker loop itself
//! ([`run_worker`]), which runs tasks with `function-runtime`, and the data
//! plane (`data.rs`: the `[[collections]]` it hosts, relayed file operations,
//! transfer attempts on its QUIC endpoint, restart journals in its state dir).
//!
//! It must never depend on `service`; the two meet only in `protocol`. It
//! must not print or decide exit codes (that is the CLI's job), and its event
//! loop must not block: every trigger is one variant of `agent::Event`.

mod agent;
mod blocks;
mod channel;
mod config;
mod credits;
mod data;
mod dispatcher;
pub mod multi_user;
mod provider;
mod upstream;
mod wire;
mod worker;

pub use agent::{run_agent, AgentReady};
pub use config::{
    endpoint_dir, validate_endpoint_name, AgentConfig, Credentials, EndpointCredential,
    EndpointFileConfig, MultiUserMode, ProviderSettings, CONFIG_FILE, CREDENTIAL_FILE,
};
pub use data::{CollectionConfig, DataSettings};
pub use lattice_function_runtime::{Runtime, ShellRuntime};
/// The providers and strategy the agent's `[provider]` config selects.
pub use lattice_scheduler_adapters as scheduler;
pub use provider::WorkerLaunch;
pub use wire::WireError;
pub use worker::{run_worker, run_worker_until, WorkerError, WorkerOptions};

/// What stops the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The endpoint's state or config file cannot be read or written.
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
    /// Registering the endpoint with the service failed.
    #[error("cannot register endpoint `{name}`: {source}")]
    Register {
        name: String,
        #[source]
        source: lattice_client::ClientError,
    },
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// The dispatcher cannot listen.
    #[error("cannot listen for workers on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// This machine's host name (`unknown` if it cannot be read).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    if name.is_empty() {
        "unknown".to_owned()
    } else {
        name
    }
}
