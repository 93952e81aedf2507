//! The service's side of the data plane: it never sees file data, it
//! orchestrates.
//!
//! - Agents announce their collections ([`AgentFrame::Collections`]); the
//!   store registers them under the endpoint's owner.
//! - File operations are requests relayed to the hosting agent and answered
//!   by request id ([`DataHub::file_op`]), with a timeout.
//! - Each unfinished transfer task has one runner task ([`runner`]) that
//!   drives attempts: a one-time credential, `Listen` to the destination
//!   agent, `Send` to the source agent with the destination's address and
//!   fingerprint, progress and faults recorded as they are reported, retries
//!   with backoff, pause while an endpoint is offline, cancel and deadline.
//!
//! - A submission is checked against the agents first ([`submission`]):
//!   a missing source or a directory without `recursive` is refused at
//!   once, and a file sent to a directory lands inside it.
//!
//! The relay calls [`agent_frame`] for the data-plane frames and
//! [`agent_gone`] when an agent's last session ends.

pub(crate) mod files;
pub mod runner;
pub mod submission;
pub(crate) mod tasks;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use lattice_protocol::frames::{AgentFrame, ServiceFrame};
use lattice_protocol::transfer::{
    CollectionInfo, FileOp, FileOpError, FileOpOutcome, TransferReport,
};
use lattice_protocol::{EndpointId, TransferId};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{CollectionRecord, EndpointRecord, StoreResult};

/// How long a file operation may take on the agent.
pub const FILE_OP_TIMEOUT: Duration = Duration::from_secs(60);

/// What a transfer runner is told.
#[derive(Debug)]
pub enum RunnerInput {
    /// A report from the agent of `from`.
    Report {
        from: EndpointId,
        report: TransferReport,
    },
    /// The last agent session of an endpoint ended.
    EndpointGone(EndpointId),
    /// The task was cancelled through the API.
    Cancel,
}

type PendingOp = (
    EndpointId,
    oneshot::Sender<Result<FileOpOutcome, FileOpError>>,
);

/// In-memory data-plane state of this replica.
#[derive(Default)]
pub struct DataHub {
    pending_ops: Mutex<HashMap<Uuid, PendingOp>>,
    /// Transfer certificate fingerprint of each connected agent.
    fingerprints: Mutex<HashMap<EndpointId, String>>,
    runners: Mutex<HashMap<TransferId, mpsc::UnboundedSender<RunnerInput>>>,
}

impl DataHub {
    /// The transfer certificate fingerprint of a connected agent.
    pub fn fingerprint(&self, endpoint: EndpointId) -> Option<String> {
        self.fingerprints
            .lock()
            .expect("data hub lock")
            .get(&endpoint)
            .cloned()
    }

    fn tell_runner(&self, id: TransferId, input: RunnerInput) -> bool {
        self.runners
            .lock()
            .expect("data hub lock")
            .get(&id)
            .is_some_and(|tx| tx.send(input).is_ok())
    }

    /// Registers a runner's inbox; false if one already runs for `id`.
    fn add_runner(&self, id: TransferId, inbox: mpsc::UnboundedSender<RunnerInput>) -> bool {
        let mut runners = self.runners.lock().expect("data hub lock");
        if runners.get(&id).is_some_and(|tx| !tx.is_closed()) {
            return false;
        }
        runners.insert(id, inbox);
        true
    }

    fn remove_runner(&self, id: TransferId) {
        self.runners.lock().expect("data hub lock").remove(&id);
    }

    /// Tells a running transfer it was cancelled (no-op if it runs elsewhere).
    pub fn cancel(&self, id: TransferId) {
        self.tell_runner(id, RunnerInput::Cancel);
    }
}

/// How an agent finds a collection: the name of the collection it hosts
/// and, for a guest collection, the directory of it that is the guest's
/// root (the agent resolves everything beneath that directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentTarget {
    pub endpoint: EndpointId,
    pub name: String,
    pub subtree: Option<String>,
}

/// The [`AgentTarget`] of a collection: itself, or for a guest collection
/// its host with the guest's path. A guest whose host is gone or withdrawn
/// has no target (`None`).
pub async fn agent_target(
    state: &AppState,
    collection: &CollectionRecord,
) -> StoreResult<Option<AgentTarget>> {
    let Some(guest) = &collection.guest_of else {
        return Ok(Some(AgentTarget {
            endpoint: collection.endpoint_id,
            name: collection.name.clone(),
            subtree: None,
        }));
    };
    Ok(state
        .store
        .collection(guest.host)
        .await?
        .filter(|host| host.withdrawn_at.is_none())
        .map(|host| AgentTarget {
            endpoint: host.endpoint_id,
            name: host.name,
            subtree: Some(guest.path.clone()),
        }))
}

/// What the API shows of a collection (its endpoint's name, whether its
/// agent is connected, its owner's username, its host if a guest).
pub(crate) async fn collection_info(
    state: &AppState,
    record: CollectionRecord,
) -> StoreResult<CollectionInfo> {
    let endpoint_name = state
        .store
        .endpoint(record.endpoint_id)
        .await?
        .map(|e| e.name)
        .unwrap_or_default();
    let owner_username = state
        .store
        .identity(record.owner_id)
        .await?
        .map(|i| i.username)
        .unwrap_or_default();
    Ok(CollectionInfo {
        id: record.id,
        online: state.agents.connected(record.endpoint_id),
        name: record.name,
        owner_id: record.owner_id,
        owner_username,
        endpoint_id: record.endpoint_id,
        endpoint_name,
        root: record.root,
        created_at: record.created_at,
        announced_at: record.announced_at,
        host_collection_id: record.guest_of.as_ref().map(|g| g.host),
        host_path: record.guest_of.map(|g| g.path),
    })
}

/// Runs a file operation in `collection` on its hosting agent.
pub async fn file_op(
    state: &AppState,
    collection: &CollectionRecord,
    op: FileOp,
) -> Result<FileOpOutcome, ApiError> {
    let target = agent_target(state, collection).await?.ok_or_else(|| {
        ApiError::conflict(format!(
            "guest collection `{}`: its host collection is no longer available",
            collection.name
        ))
    })?;
    let endpoint = target.endpoint;
    let request_id = Uuid::new_v4();
    let (tx, rx) = oneshot::channel();
    state
        .data
        .pending_ops
        .lock()
        .expect("data hub lock")
        .insert(request_id, (endpoint, tx));
    let sent = state.agents.send_one(
        endpoint,
        ServiceFrame::FileOp {
            request_id,
            collection: target.name,
            subtree: target.subtree,
            op,
        },
    );
    let outcome = if sent {
        Some(tokio::time::timeout(FILE_OP_TIMEOUT, rx).await)
    } else {
        None
    };
    state
        .data
        .pending_ops
        .lock()
        .expect("data hub lock")
        .remove(&request_id);
    let Some(outcome) = outcome else {
        return Err(offline(collection));
    };
    match outcome {
        Ok(Ok(result)) => result.map_err(|e| file_error(collection, e)),
        Ok(Err(_)) => Err(offline(collection)),
        Err(_) => Err(ApiError::unavailable(format!(
            "the agent hosting collection `{}` did not answer within {} s; it may be overloaded, try again",
            collection.name,
            FILE_OP_TIMEOUT.as_secs()
        ))),
    }
}

/// 409: the collection's agent is not connected.
pub fn offline(collection: &CollectionRecord) -> ApiError {
    ApiError::conflict(format!(
        "collection `{}` is offline: the agent of endpoint {} is not connected; start it and try again",
        collection.name, collection.endpoint_id
    ))
}

fn file_error(collection: &CollectionRecord, e: FileOpError) -> ApiError {
    use lattice_protocol::transfer::FileErrorKind as K;
    let message = format!("{}: {}", collection.name, e.message);
    match e.kind {
        K::InvalidPath | K::RootOperation => ApiError::bad_request(message),
        K::Escape | K::PermissionDenied => ApiError::forbidden(message),
        K::NotFound | K::UnknownCollection => ApiError::not_found(message),
        K::AlreadyExists | K::DirectoryNotEmpty | K::IsADirectory | K::NotADirectory => {
            ApiError::conflict(message)
        }
        K::NoSpace => ApiError::conflict(message),
        K::Io => ApiError::unavailable(message),
    }
}

/// Handles the data-plane frames of an agent session.
pub async fn agent_frame(
    state: &AppState,
    endpoint: &EndpointRecord,
    frame: AgentFrame,
) -> StoreResult<()> {
    match frame {
        AgentFrame::Collections {
            collections,
            data_fingerprint,
        } => {
            let valid: Vec<_> = collections
                .into_iter()
                .filter(|c| {
                    let ok = valid_collection_name(&c.name);
                    if !ok {
                        tracing::warn!(endpoint_id = %endpoint.id, name = %c.name, "collection name refused: use 1-100 letters, digits, `-`, `_` or `.`");
                    }
                    ok
                })
                .collect();
            let refused = state
                .store
                .announce_collections(endpoint.id, endpoint.owner_id, &valid, chrono::Utc::now())
                .await?;
            for name in refused {
                tracing::warn!(endpoint_id = %endpoint.id, name, "collection not registered: the owner already has a collection of this name on another endpoint");
            }
            let mut fingerprints = state.data.fingerprints.lock().expect("data hub lock");
            match data_fingerprint {
                Some(f) => fingerprints.insert(endpoint.id, f),
                None => fingerprints.remove(&endpoint.id),
            };
            tracing::info!(endpoint_id = %endpoint.id, collections = valid.len(), "collections announced");
        }
        AgentFrame::FileOpResult { request_id, result } => {
            let pending = state
                .data
                .pending_ops
                .lock()
                .expect("data hub lock")
                .remove(&request_id);
            match pending {
                Some((owner, tx)) if owner == endpoint.id => {
                    let _ = tx.send(result);
                }
                Some(other) => {
                    tracing::warn!(endpoint_id = %endpoint.id, "file operation result for another endpoint's request dropped");
                    state
                        .data
                        .pending_ops
                        .lock()
                        .expect("data hub lock")
                        .insert(request_id, other);
                }
                None => {
                    tracing::debug!(endpoint_id = %endpoint.id, "late file operation result dropped")
                }
            }
        }
        AgentFrame::Transfer { report } => {
            let Some(id) = runner::transfer_of(report.transfer_id()) else {
                tracing::warn!(endpoint_id = %endpoint.id, transfer = report.transfer_id(), "report for a malformed transfer id dropped");
                return Ok(());
            };
            if !state.data.tell_runner(
                id,
                RunnerInput::Report {
                    from: endpoint.id,
                    report,
                },
            ) {
                tracing::debug!(endpoint_id = %endpoint.id, transfer_id = %id, "report for a transfer not running here dropped");
            }
        }
        other => {
            tracing::warn!(endpoint_id = %endpoint.id, frame = ?other, "not a data-plane frame");
        }
    }
    Ok(())
}

/// Called by the relay when an agent session ends: if it was the endpoint's
/// last, its pending file operations fail and its transfers pause.
pub fn agent_gone(state: &AppState, endpoint: EndpointId) {
    if state.agents.connected(endpoint) {
        return;
    }
    state
        .data
        .fingerprints
        .lock()
        .expect("data hub lock")
        .remove(&endpoint);
    // Dropping the senders answers the waiting requests with "offline".
    state
        .data
        .pending_ops
        .lock()
        .expect("data hub lock")
        .retain(|_, (owner, _)| *owner != endpoint);
    let runners: Vec<_> = state
        .data
        .runners
        .lock()
        .expect("data hub lock")
        .values()
        .cloned()
        .collect();
    for runner in runners {
        let _ = runner.send(RunnerInput::EndpointGone(endpoint));
    }
}

/// Collection names follow [`lattice_protocol::names::CollectionName`].
pub fn valid_collection_name(name: &str) -> bool {
    lattice_protocol::names::CollectionName::parse(name).is_ok()
}

/// Starts runners for every unfinished transfer (at service start).
pub async fn resume_all(state: &AppState) -> StoreResult<usize> {
    let transfers = state.store.unfinished_transfers().await?;
    let count = transfers.len();
    for transfer in transfers {
        runner::spawn(state.clone(), transfer.id);
    }
    if count > 0 {
        tracing::info!(transfers = count, "resuming unfinished transfers");
    }
    Ok(count)
}
