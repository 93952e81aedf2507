//! The agent's data plane: the collections it hosts (`data-plane`'s
//! confined [`Collection`]s), file operations the service relays, and its
//! side of transfer attempts on one long-lived QUIC [`TransferEndpoint`].
//!
//! Every request runs in its own tokio task (file system work goes to the
//! blocking pool inside `data-plane`); answers and reports go back to the
//! agent loop as frames to send. A transfer attempt is aborted when the
//! service says so or when a newer attempt of the same transfer arrives.
//! The destination's restart journals live in `STATE_DIR/data/journals`, so
//! an agent restart resumes rather than starts over.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lattice_data_plane::{
    discard_destination, run_delete, run_destination, run_source, AgentIdentity, Collection,
    CollectionError, Credential, DeleteTask, DestinationTask, EndpointConfig, Fingerprint,
    SourceTask, TransferEndpoint, TransferFailure, TransferReport as EngineReport, TransferSpec,
    TransferUpdate,
};
use lattice_protocol::frames::{AgentFrame, ServiceFrame};
use lattice_protocol::transfer::{
    AttemptError, AttemptSpec, CollectionAnnounce, FaultCode, FileErrorKind, FileOp, FileOpError,
    FileOpOutcome, FileOpRequestId, Side, TransferCommand, TransferCounters, TransferReport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::AgentError;

/// One `[[collections]]` entry of the endpoint config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    /// Unique among the owner's collections: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// Existing directory the collection maps; nothing outside it is reachable.
    pub root: PathBuf,
}

impl CollectionConfig {
    /// Parses `NAME=DIR` (the `--collection` flag).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, root) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}`: expected NAME=DIR"))?;
        let config = CollectionConfig {
            name: name.trim().to_owned(),
            root: PathBuf::from(root),
        };
        config.check()?;
        Ok(config)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        lattice_protocol::names::CollectionName::parse(&self.name).map_err(|e| e.to_string())?;
        if self.root.as_os_str().is_empty() {
            return Err(format!("collection `{}`: root is empty", self.name));
        }
        Ok(())
    }
}

/// Where the transfer endpoint listens and what address it tells sources.
#[derive(Clone, Debug)]
pub struct DataSettings {
    pub collections: Vec<CollectionConfig>,
    /// UDP address of the QUIC transfer endpoint [default: 0.0.0.0:0].
    pub listen: SocketAddr,
    /// The IP sources should connect to [default: the listen IP, or for a
    /// wildcard listen address the local IP this host uses to reach the service].
    pub advertise: Option<IpAddr>,
    /// Fault injection for every attempt this agent sends (tests only).
    #[cfg(feature = "testsuite")]
    pub source_hooks: lattice_data_plane::TestHooks,
}

impl Default for DataSettings {
    fn default() -> Self {
        DataSettings {
            collections: Vec::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            advertise: None,
            #[cfg(feature = "testsuite")]
            source_hooks: lattice_data_plane::TestHooks::default(),
        }
    }
}

/// How long the last progress and fault updates of an attempt may take to go out.
const FORWARD_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The attempt running per transfer and side: one agent is both sides of a
/// transfer between two of its collections (or within one).
type Running = Arc<Mutex<HashMap<(String, Side), (u32, AbortHandle)>>>;

/// The data plane of one agent. Built once at start (opens the collection
/// roots, binds the UDP socket, loads or creates the agent's certificate).
/// Cheap to clone: commands for a guest collection open its subtree on the
/// blocking pool and continue on a clone.
#[derive(Clone)]
pub(crate) struct DataPlane(Arc<Inner>);

pub(crate) struct Inner {
    collections: Arc<HashMap<String, Collection>>,
    announce: Vec<CollectionAnnounce>,
    endpoint: TransferEndpoint,
    advertise: SocketAddr,
    journal_dir: PathBuf,
    outgoing: mpsc::UnboundedSender<AgentFrame>,
    running: Running,
    #[cfg(feature = "testsuite")]
    source_hooks: lattice_data_plane::TestHooks,
}

impl DataPlane {
    /// `None` when the agent hosts no collection. Frames to send go to `outgoing`.
    pub(crate) async fn start(
        settings: &DataSettings,
        state_dir: PathBuf,
        service_url: &str,
        outgoing: mpsc::UnboundedSender<AgentFrame>,
    ) -> Result<Option<DataPlane>, AgentError> {
        if settings.collections.is_empty() {
            return Ok(None);
        }
        let configs = settings.collections.clone();
        let data_dir = state_dir.join("data");
        let service = url::Url::parse(service_url)
            .ok()
            .and_then(|u| Some((u.host_str()?.to_owned(), u.port_or_known_default()?)));
        let listen = settings.listen;
        let advertise = settings.advertise;
        let (collections, identity, advertise_ip) = tokio::task::spawn_blocking(move || {
            let mut collections = HashMap::new();
            for c in &configs {
                c.check().map_err(AgentError::Config)?;
                let collection = Collection::open(&c.root)
                    .map_err(|e| AgentError::Config(format!("collection `{}`: {e}", c.name)))?;
                if collections.insert(c.name.clone(), collection).is_some() {
                    return Err(AgentError::Config(format!(
                        "collection `{}` is configured twice",
                        c.name
                    )));
                }
            }
            std::fs::create_dir_all(data_dir.join("journals")).map_err(|e| AgentError::File {
                path: data_dir.display().to_string(),
                detail: e.to_string(),
            })?;
            let identity = AgentIdentity::load_or_generate(&data_dir)
                .map_err(|e| AgentError::Config(format!("transfer certificate: {e}")))?;
            let ip = advertise.unwrap_or_else(|| advertised_ip(listen.ip(), service.as_ref()));
            Ok::<_, AgentError>((collections, identity, ip))
        })
        .await
        .map_err(|e| AgentError::Config(e.to_string()))??;
        let endpoint = TransferEndpoint::bind(
            identity,
            EndpointConfig {
                listen,
                ..EndpointConfig::default()
            },
        )
        .map_err(|e| AgentError::Config(format!("transfer endpoint: {e}")))?;
        let advertise = SocketAddr::new(advertise_ip, endpoint.local_addr().port());
        let announce = settings
            .collections
            .iter()
            .map(|c| CollectionAnnounce {
                name: c.name.clone(),
                root: collections[&c.name].root().display().to_string(),
            })
            .collect();
        tracing::info!(collections = settings.collections.len(), address = %advertise, fingerprint = %endpoint.fingerprint().to_hex(), "data plane ready");
        Ok(Some(DataPlane(Arc::new(Inner {
            collections: Arc::new(collections),
            announce,
            endpoint,
            advertise,
            journal_dir: state_dir.join("data").join("journals"),
            outgoing,
            running: Arc::default(),
            #[cfg(feature = "testsuite")]
            source_hooks: settings.source_hooks.clone(),
        }))))
    }

    /// The frame that tells the service what this agent hosts.
    pub(crate) fn announcement(&self) -> AgentFrame {
        AgentFrame::Collections {
            collections: self.announce.clone(),
            data_fingerprint: Some(self.endpoint.fingerprint().to_hex()),
        }
    }

    /// Handles a data-plane frame from the service (never blocks).
    pub(crate) fn handle(&self, frame: ServiceFrame) {
        match frame {
            ServiceFrame::FileOp {
                request_id,
                collection,
                subtree,
                op,
            } => self.file_op(request_id, collection, subtree, op),
            ServiceFrame::Transfer { command } => self.transfer(*command),
            other => tracing::warn!(frame = ?other, "not a data-plane frame"),
        }
    }

    fn file_op(
        &self,
        request_id: FileOpRequestId,
        name: String,
        subtree: Option<String>,
        op: FileOp,
    ) {
        let collection = self.collections.get(&name).cloned();
        let outgoing = self.outgoing.clone();
        tokio::spawn(async move {
            let result = match collection {
                Some(collection) => match open_subtree(collection, subtree).await {
                    Ok(collection) => run_file_op(&collection, op).await,
                    Err(e) => Err(file_error(e)),
                },
                None => Err(FileOpError {
                    kind: FileErrorKind::UnknownCollection,
                    message: format!("this agent does not host a collection named `{name}`"),
                }),
            };
            let _ = outgoing.send(AgentFrame::FileOpResult { request_id, result });
        });
    }

    fn transfer(&self, command: TransferCommand) {
        // A guest collection's command: open its subtree on the blocking
        // pool, then run the command on that collection.
        let guest = match &command {
            TransferCommand::Listen {
                collection,
                subtree: Some(subtree),
                ..
            }
            | TransferCommand::Send {
                collection,
                subtree: Some(subtree),
                ..
            }
            | TransferCommand::Delete {
                collection,
                subtree: Some(subtree),
                ..
            }
            | TransferCommand::Discard {
                collection,
                subtree: Some(subtree),
                ..
            } => Some((collection.clone(), subtree.clone())),
            _ => None,
        };
        match guest {
            Some((name, subtree)) => {
                let this = self.clone();
                tokio::spawn(async move {
                    let resolved = match this.collections.get(&name).cloned() {
                        Some(host) => {
                            open_subtree(host, Some(subtree))
                                .await
                                .map_err(|e| AttemptError {
                                    code: FaultCode::InvalidPath,
                                    message: format!("guest collection root: {e}"),
                                    retryable: false,
                                })
                        }
                        None => Err(unknown_collection(&name)),
                    };
                    this.run_transfer(command, Some(resolved));
                });
            }
            None => self.run_transfer(command, None),
        }
    }

    /// Runs a transfer command; `guest` is the collection a guest
    /// command's subtree resolved to (else the command's collection name is
    /// looked up).
    fn run_transfer(
        &self,
        command: TransferCommand,
        guest: Option<Result<Collection, AttemptError>>,
    ) {
        match command {
            TransferCommand::Abort { transfer_id } => {
                let aborted: Vec<_> = {
                    let mut running = self.running.lock().expect("running lock");
                    [Side::Source, Side::Destination]
                        .into_iter()
                        .filter_map(|side| {
                            let key = (transfer_id.clone(), side);
                            running
                                .remove(&key)
                                .map(|(attempt, handle)| (attempt, side, handle))
                        })
                        .collect()
                };
                for (attempt, side, handle) in aborted {
                    handle.abort();
                    tracing::info!(transfer_id, attempt, side = ?side, "transfer attempt aborted");
                    // The service waits for both sides' end.
                    let _ = self.outgoing.send(done_with_error(
                        transfer_id.clone(),
                        attempt,
                        side,
                        AttemptError {
                            code: FaultCode::Cancelled,
                            message: "aborted by the service".into(),
                            retryable: true,
                        },
                    ));
                }
            }
            TransferCommand::Discard {
                transfer_id,
                collection,
                destination_path,
                ..
            } => {
                let key = (transfer_id.clone(), Side::Destination);
                if let Some((_, handle)) = self.running.lock().expect("running lock").remove(&key) {
                    handle.abort();
                }
                let Ok(collection) = self.collection(&collection, guest) else {
                    return;
                };
                let state_dir = self.journal_dir.clone();
                tokio::task::spawn_blocking(move || {
                    match discard_destination(
                        &collection,
                        &destination_path,
                        &state_dir,
                        &transfer_id,
                    ) {
                        Ok(removed) => {
                            tracing::info!(transfer_id, removed, "abandoned transfer discarded")
                        }
                        Err(e) => {
                            tracing::warn!(transfer_id, error = %e, "discarding an abandoned transfer")
                        }
                    }
                });
            }
            TransferCommand::Listen {
                attempt,
                collection,
                spec,
                source_fingerprint,
                credential,
                ..
            } => {
                let transfer_id = spec.transfer_id.clone();
                let prepared = self.prepare(&collection, guest, &spec).and_then(|(c, s)| {
                    let fingerprint = parse_fingerprint(&source_fingerprint)?;
                    Ok(DestinationTask::new(
                        s,
                        c,
                        fingerprint,
                        Credential(credential),
                        &self.journal_dir,
                    ))
                });
                let task = match prepared {
                    Ok(task) => task,
                    Err(error) => {
                        return self.refuse(transfer_id, attempt, Side::Destination, error)
                    }
                };
                let _ = self.outgoing.send(AgentFrame::Transfer {
                    report: TransferReport::Listening {
                        transfer_id: transfer_id.clone(),
                        attempt,
                        address: self.advertise.to_string(),
                        fingerprint: self.endpoint.fingerprint().to_hex(),
                    },
                });
                let endpoint = self.endpoint.clone();
                self.spawn_attempt(transfer_id, attempt, Side::Destination, move |updates| {
                    async move { run_destination(&endpoint, task, Some(updates)).await }
                });
            }
            TransferCommand::Delete {
                attempt,
                collection,
                transfer_id,
                path,
                recursive,
                ignore_missing,
                ..
            } => {
                let collection = match self.collection(&collection, guest) {
                    Ok(collection) => collection,
                    Err(error) => {
                        return self.refuse(transfer_id, attempt, Side::Destination, error)
                    }
                };
                let task = DeleteTask {
                    transfer_id: transfer_id.clone(),
                    path,
                    recursive,
                    ignore_missing,
                };
                self.spawn_attempt(transfer_id, attempt, Side::Destination, move |updates| {
                    run_delete(collection, task, Some(updates))
                });
            }
            TransferCommand::Send {
                attempt,
                collection,
                spec,
                destination,
                destination_fingerprint,
                credential,
                ..
            } => {
                let transfer_id = spec.transfer_id.clone();
                let prepared = self.prepare(&collection, guest, &spec).and_then(|(c, s)| {
                    let fingerprint = parse_fingerprint(&destination_fingerprint)?;
                    let address: SocketAddr = destination.parse().map_err(|e| AttemptError {
                        code: FaultCode::ProtocolError,
                        message: format!("bad destination address `{destination}`: {e}"),
                        retryable: false,
                    })?;
                    let task = SourceTask::new(s, c, address, fingerprint, Credential(credential));
                    #[cfg(feature = "testsuite")]
                    let task = task.with_test_hooks(self.source_hooks.clone());
                    Ok(task)
                });
                let task = match prepared {
                    Ok(task) => task,
                    Err(error) => return self.refuse(transfer_id, attempt, Side::Source, error),
                };
                let endpoint = self.endpoint.clone();
                self.spawn_attempt(
                    transfer_id,
                    attempt,
                    Side::Source,
                    move |updates| async move { run_source(&endpoint, task, Some(updates)).await },
                );
            }
        }
    }

    /// The collection a command runs on: the guest subtree it resolved
    /// to, or the hosted collection of that name.
    fn collection(
        &self,
        name: &str,
        guest: Option<Result<Collection, AttemptError>>,
    ) -> Result<Collection, AttemptError> {
        match guest {
            Some(resolved) => resolved,
            None => self
                .collections
                .get(name)
                .cloned()
                .ok_or_else(|| unknown_collection(name)),
        }
    }

    fn prepare(
        &self,
        collection: &str,
        guest: Option<Result<Collection, AttemptError>>,
        spec: &AttemptSpec,
    ) -> Result<(Collection, TransferSpec), AttemptError> {
        let collection = self.collection(collection, guest)?;
        Ok((collection, TransferSpec::from(spec.clone())))
    }

    /// Reports an attempt that could not even start.
    fn refuse(&self, transfer_id: String, attempt: u32, side: Side, error: AttemptError) {
        tracing::warn!(transfer_id, attempt, code = %error.code, "{}", error.message);
        let _ = self
            .outgoing
            .send(done_with_error(transfer_id, attempt, side, error));
    }

    /// Runs one side of an attempt, forwarding its updates and its end.
    fn spawn_attempt<F, Fut>(&self, transfer_id: String, attempt: u32, side: Side, run: F)
    where
        F: FnOnce(mpsc::UnboundedSender<TransferUpdate>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<EngineReport, TransferFailure>> + Send + 'static,
    {
        let outgoing = self.outgoing.clone();
        let running = self.running.clone();
        let id = transfer_id.clone();
        let key = (transfer_id.clone(), side);
        let mut running_now = self.running.lock().expect("running lock");
        if let Some((old_attempt, old)) = running_now.remove(&key) {
            tracing::info!(
                transfer_id,
                old_attempt,
                attempt,
                "a newer attempt replaces a running one"
            );
            old.abort();
        }
        let task = tokio::spawn(async move {
            let (updates_tx, mut updates) = mpsc::unbounded_channel();
            let forward = {
                let outgoing = outgoing.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    while let Some(update) = updates.recv().await {
                        let report = match update {
                            TransferUpdate::Progress(counters) => TransferReport::Progress {
                                transfer_id: id.clone(),
                                attempt,
                                side,
                                counters,
                            },
                            TransferUpdate::Event(event) => TransferReport::Fault {
                                transfer_id: id.clone(),
                                attempt,
                                event: event.into(),
                            },
                        };
                        if outgoing.send(AgentFrame::Transfer { report }).is_err() {
                            break;
                        }
                    }
                })
            };
            let result = run(updates_tx).await;
            // The engine dropped its sender: the forwarder drains and ends,
            // so progress and faults go out before the end.
            if tokio::time::timeout(FORWARD_DRAIN, forward).await.is_err() {
                tracing::debug!(transfer_id = %id, "progress forwarder still busy; ending the attempt anyway");
            }
            let (report, error) = match result {
                Ok(report) => (report, None),
                Err(failure) => {
                    let error = AttemptError {
                        code: failure.error.code,
                        message: failure.error.message.clone(),
                        retryable: failure.error.retryable,
                    };
                    (*failure.report, Some(error))
                }
            };
            tracing::info!(transfer_id = %id, attempt, side = ?side, ok = error.is_none(), files = report.counters.files, bytes = report.counters.bytes_transferred, "transfer attempt ended");
            {
                let mut running = running.lock().expect("running lock");
                let key = (id.clone(), side);
                if running.get(&key).is_some_and(|(a, _)| *a == attempt) {
                    running.remove(&key);
                }
            }
            let _ = outgoing.send(AgentFrame::Transfer {
                report: TransferReport::Done {
                    transfer_id: id,
                    attempt,
                    side,
                    counters: report.counters,
                    checksums: report.checksums,
                    error,
                },
            });
        });
        running_now.insert(key, (attempt, task.abort_handle()));
    }
}

impl std::ops::Deref for DataPlane {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (_, (_, handle)) in self.running.lock().expect("running lock").drain() {
            handle.abort();
        }
        self.endpoint.close();
    }
}

/// The answer to a data-plane request when the agent hosts no collection.
pub(crate) fn without_data_plane(frame: ServiceFrame) -> Option<AgentFrame> {
    const MESSAGE: &str = "this agent hosts no collections (add [[collections]] to its config)";
    let frame = match frame {
        ServiceFrame::FileOp { request_id, .. } => {
            return Some(AgentFrame::FileOpResult {
                request_id,
                result: Err(FileOpError {
                    kind: FileErrorKind::UnknownCollection,
                    message: MESSAGE.into(),
                }),
            })
        }
        ServiceFrame::Transfer { command } => *command,
        _ => return None,
    };
    match frame {
        TransferCommand::Listen { attempt, spec, .. } => Some(done_with_error(
            spec.transfer_id,
            attempt,
            Side::Destination,
            no_collections(MESSAGE),
        )),
        TransferCommand::Send { attempt, spec, .. } => Some(done_with_error(
            spec.transfer_id,
            attempt,
            Side::Source,
            no_collections(MESSAGE),
        )),
        TransferCommand::Delete {
            attempt,
            transfer_id,
            ..
        } => Some(done_with_error(
            transfer_id,
            attempt,
            Side::Destination,
            no_collections(MESSAGE),
        )),
        TransferCommand::Abort { .. } | TransferCommand::Discard { .. } => None,
    }
}

fn unknown_collection(name: &str) -> AttemptError {
    AttemptError {
        code: FaultCode::InvalidPath,
        message: format!("this agent does not host a collection named `{name}`"),
        retryable: false,
    }
}

/// A guest collection's root: `subtree` of `collection`, opened on the
/// blocking pool (everything is then resolved beneath it); the collection
/// itself without one.
async fn open_subtree(
    collection: Collection,
    subtree: Option<String>,
) -> Result<Collection, lattice_data_plane::CollectionError> {
    match subtree {
        None => Ok(collection),
        Some(subtree) => tokio::task::spawn_blocking(move || collection.subtree_blocking(&subtree))
            .await
            .unwrap_or_else(|e| {
                Err(lattice_data_plane::CollectionError::Io {
                    op: "open",
                    path: "guest root".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            }),
    }
}

fn no_collections(message: &str) -> AttemptError {
    AttemptError {
        code: FaultCode::InvalidPath,
        message: message.into(),
        retryable: false,
    }
}

fn done_with_error(
    transfer_id: String,
    attempt: u32,
    side: Side,
    error: AttemptError,
) -> AgentFrame {
    AgentFrame::Transfer {
        report: TransferReport::Done {
            transfer_id,
            attempt,
            side,
            counters: TransferCounters::default(),
            checksums: Vec::new(),
            error: Some(error),
        },
    }
}

fn parse_fingerprint(text: &str) -> Result<Fingerprint, AttemptError> {
    Fingerprint::parse(text).map_err(|e| AttemptError {
        code: FaultCode::AuthFailed,
        message: format!("bad peer fingerprint: {e}"),
        retryable: false,
    })
}

async fn run_file_op(collection: &Collection, op: FileOp) -> Result<FileOpOutcome, FileOpError> {
    let outcome = match op {
        FileOp::List {
            path,
            depth,
            max_entries,
        } => {
            let entries = collection
                .list(
                    &path,
                    lattice_data_plane::ListOptions {
                        depth,
                        max_entries: max_entries as usize,
                    },
                )
                .await
                .map_err(file_error)?;
            FileOpOutcome::Entries { entries }
        }
        FileOp::Stat { path } => entry(collection.stat(&path).await.map_err(file_error)?)?,
        FileOp::Mkdir { path, parents } => {
            entry(collection.mkdir(&path, parents).await.map_err(file_error)?)?
        }
        FileOp::Rename { from, to } => {
            entry(collection.rename(&from, &to).await.map_err(file_error)?)?
        }
        FileOp::Delete { path, recursive } => {
            let summary = collection
                .delete(&path, recursive)
                .await
                .map_err(file_error)?;
            FileOpOutcome::Deleted { summary }
        }
    };
    Ok(outcome)
}

fn entry(entry: lattice_data_plane::Entry) -> Result<FileOpOutcome, FileOpError> {
    Ok(FileOpOutcome::Entry { entry })
}

fn file_error(e: CollectionError) -> FileOpError {
    let kind = match &e {
        CollectionError::InvalidPath { .. } => FileErrorKind::InvalidPath,
        CollectionError::Escape { .. } => FileErrorKind::Escape,
        CollectionError::NotFound { .. } => FileErrorKind::NotFound,
        CollectionError::PermissionDenied { .. } => FileErrorKind::PermissionDenied,
        CollectionError::AlreadyExists { .. } => FileErrorKind::AlreadyExists,
        CollectionError::DirectoryNotEmpty { .. } => FileErrorKind::DirectoryNotEmpty,
        CollectionError::IsADirectory { .. } => FileErrorKind::IsADirectory,
        CollectionError::NotADirectory { .. } => FileErrorKind::NotADirectory,
        CollectionError::NoSpace { .. } => FileErrorKind::NoSpace,
        CollectionError::RootOperation { .. } => FileErrorKind::RootOperation,
        CollectionError::Root { .. } | CollectionError::Io { .. } | CollectionError::Stopped => {
            FileErrorKind::Io
        }
    };
    FileOpError {
        kind,
        message: e.to_string(),
    }
}

/// The IP sources should dial: the listen IP, or for a wildcard the local
/// address of the route to the service (no packet is sent), else loopback.
fn advertised_ip(listen: IpAddr, service: Option<&(String, u16)>) -> IpAddr {
    if !listen.is_unspecified() {
        return listen;
    }
    let local = service.and_then(|(host, port)| {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.connect((host.as_str(), *port)).ok()?;
        Some(socket.local_addr().ok()?.ip())
    });
    local
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_and_engine_shapes_agree() {
        let spec = AttemptSpec {
            transfer_id: "t.0".into(),
            source_path: "/a".into(),
            destination_path: "/b".into(),
            recursive: true,
            options: lattice_protocol::transfer::TransferOptions {
                sync_level: Some(lattice_protocol::transfer::SyncLevel::Mtime),
                preserve_mtime: true,
                exclude: vec!["*.tmp".into()],
                ..Default::default()
            },
            tuning: lattice_protocol::transfer::TransferTuning {
                connections: Some(1),
                chunk_size: Some(1 << 20),
                ..Default::default()
            },
        };
        let engine = TransferSpec::from(spec.clone());
        let defaults = lattice_data_plane::Tuning::default();
        assert_eq!(
            engine.tuning,
            lattice_data_plane::Tuning {
                connections: 1,
                chunk_size: 1 << 20,
                ..defaults.clone()
            },
            "set fields reach the engine, the rest keep its defaults"
        );
        let untuned = AttemptSpec {
            tuning: Default::default(),
            ..spec.clone()
        };
        assert_eq!(TransferSpec::from(untuned).tuning, defaults);
        assert_eq!(
            engine.options.sync_level,
            Some(lattice_data_plane::SyncLevel::Mtime)
        );
        assert!(engine.options.verify_checksum);
        assert!(engine.options.preserve_mtime);
    }

    #[test]
    fn collection_flags_parse() {
        let c = CollectionConfig::parse("data=/srv/data dir").unwrap();
        assert_eq!(c.name, "data");
        assert_eq!(c.root, PathBuf::from("/srv/data dir"));
        assert!(CollectionConfig::parse("no-equals").is_err());
        assert!(CollectionConfig::parse("a:b=/x").is_err());
    }

    #[test]
    fn a_wildcard_listen_address_is_not_advertised() {
        let ip = advertised_ip(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(&("127.0.0.1".to_owned(), 8470)),
        );
        assert_eq!(ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let fixed = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(advertised_ip(fixed, None), fixed);
    }
}
