//! Transfer and delete tasks as their owners see them: submission (limits,
//! paths, access to every item, the agents' answers about the sources,
//! idempotency by submission id), listing, showing, cancelling and the
//! event log, each with its permission check. `routes/transfers.rs` and
//! the flows' transfer and delete actions call these; the runner
//! ([`super::runner`]) drives a task once it is recorded.

use chrono::Utc;
use lattice_protocol::transfer::{
    DeleteSubmit, TaskKind, TransferCounters, TransferEventInfo, TransferInfo, TransferItem,
    TransferOptions, TransferStatus, TransferSubmit, TransferTuning,
};
use lattice_protocol::TransferId;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::sharing::access::{self, Capability};
use crate::sharing::Viewer;
use crate::state::AppState;
use crate::store::{
    CollectionRecord, NewTransferEvent, StoreError, TransferProgress, TransferRecord,
};

/// A submission's outcome: a new task, or the one an earlier submission
/// with the same id created.
pub(crate) struct Submitted {
    pub(crate) created: bool,
    pub(crate) info: TransferInfo,
}

/// Most items in one transfer task.
const MAX_ITEMS: usize = 10_000;

async fn info(
    state: &AppState,
    record: TransferRecord,
    with_checksums: bool,
) -> Result<TransferInfo, ApiError> {
    let name = |id| async move {
        Ok::<_, ApiError>(
            state
                .store
                .collection(id)
                .await?
                .map(|c| c.name)
                .unwrap_or_default(),
        )
    };
    let source_collection_name = name(record.source_collection).await?;
    let destination_collection_name = name(record.destination_collection).await?;
    let checksums = if with_checksums {
        state.store.transfer_checksums(record.id).await?
    } else {
        Vec::new()
    };
    let end = record.completed_at.unwrap_or_else(Utc::now);
    let elapsed_ms = (end - record.submitted_at).num_milliseconds().max(1) as u64;
    Ok(TransferInfo {
        id: record.id,
        kind: record.kind,
        owner_id: record.owner_id,
        label: record.label,
        status: record.status,
        status_message: record.status_message,
        source_collection: record.source_collection,
        source_collection_name,
        destination_collection: record.destination_collection,
        destination_collection_name,
        items: record.items,
        options: record.options,
        tuning: record.tuning,
        deadline: record.deadline,
        submission_id: record.submission_id,
        submitted_at: record.submitted_at,
        completed_at: record.completed_at,
        items_done: record.items_done,
        attempts: record.attempts,
        effective_bytes_per_second: record.counters.bytes_transferred * 1000 / elapsed_ms,
        counters: record.counters,
        checksums,
    })
}

/// Loads a transfer the caller may see: its owner's, or one touching a
/// collection on which the caller holds a role with `capability`
/// (activity roles). 404 if unknown, 403 otherwise.
async fn visible_transfer(
    state: &AppState,
    caller: &Caller,
    id: TransferId,
    capability: Capability,
) -> Result<TransferRecord, ApiError> {
    let record = state
        .store
        .transfer(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("transfer {id} does not exist")))?;
    let viewer = Viewer::of(&state.store, caller.identity_id).await?;
    if viewer.is(record.owner_id) {
        return Ok(record);
    }
    for collection in [record.source_collection, record.destination_collection] {
        if let Some(collection) = state.store.collection(collection).await? {
            if access::has(&state.store, &viewer, &collection, capability).await? {
                return Ok(record);
            }
        }
    }
    Err(ApiError::forbidden(format!(
        "transfer {id} belongs to another identity"
    )))
}

fn check_path(what: &str, path: &str) -> Result<(), ApiError> {
    if path.is_empty() {
        return Err(ApiError::bad_request(format!("{what}: a path is required")));
    }
    if path.contains('\0') {
        return Err(ApiError::bad_request(format!("{what}: NUL in path")));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(ApiError::bad_request(format!(
            "{what} `{path}` is not allowed: `..` would leave the collection"
        )));
    }
    Ok(())
}

/// A path's components on its agent's file system: the collection's root
/// (as the agent announced it) then the path within it.
fn host_components<'a>(root: &'a str, path: &'a str) -> Vec<&'a str> {
    root.split('/')
        .chain(path.split('/'))
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// Between collections of one endpoint (or within one collection): refuses
/// an item whose source and destination are the same place, a tree copied
/// into itself (the walk would meet the copy), and, with
/// `delete_extraneous`, a destination that holds the source (the source
/// would be deleted as extraneous while it is read).
fn check_overlap(
    source: &CollectionRecord,
    destination: &CollectionRecord,
    items: &[TransferItem],
    options: &TransferOptions,
) -> Result<(), ApiError> {
    if source.endpoint_id != destination.endpoint_id {
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        let from = host_components(&source.root, &item.source_path);
        let to = host_components(&destination.root, &item.destination_path);
        let (src, dst) = (
            format!("{}:{}", source.name, item.source_path),
            format!("{}:{}", destination.name, item.destination_path),
        );
        if from == to {
            return Err(ApiError::bad_request(format!(
                "items[{i}]: `{src}` and `{dst}` are the same path"
            )));
        }
        if item.recursive && to.starts_with(&from) {
            return Err(ApiError::bad_request(format!(
                "items[{i}]: the destination `{dst}` is inside the source `{src}`: the tree would be copied into itself"
            )));
        }
        if item.recursive && options.delete_extraneous && from.starts_with(&to) {
            return Err(ApiError::bad_request(format!(
                "items[{i}]: the destination `{dst}` holds the source `{src}`: delete_extraneous would delete the source"
            )));
        }
    }
    Ok(())
}

fn check_globs(what: &str, globs: &[String]) -> Result<(), ApiError> {
    for glob in globs {
        if glob.is_empty() || glob.len() > 1024 || glob.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "{what}: `{glob}` is not a usable glob"
            )));
        }
    }
    Ok(())
}

/// A known submission id: the task it created first.
async fn resubmitted(
    state: &AppState,
    caller: &Caller,
    submission_id: Option<&str>,
) -> Result<Option<TransferInfo>, ApiError> {
    let Some(submission_id) = submission_id else {
        return Ok(None);
    };
    if submission_id.is_empty() || submission_id.len() > 200 {
        return Err(ApiError::bad_request("submission_id: use 1-200 characters"));
    }
    match state
        .store
        .transfer_by_submission(caller.identity_id, submission_id)
        .await?
    {
        Some(existing) => Ok(Some(info(state, existing, false).await?)),
        None => Ok(None),
    }
}

fn check_common(
    label: Option<&str>,
    deadline: Option<chrono::DateTime<Utc>>,
    items: usize,
) -> Result<(), ApiError> {
    if items == 0 {
        return Err(ApiError::bad_request("items: give at least one path"));
    }
    if items > MAX_ITEMS {
        return Err(ApiError::bad_request(format!(
            "items: at most {MAX_ITEMS} per task"
        )));
    }
    if label.is_some_and(|l| l.len() > 256) {
        return Err(ApiError::bad_request("label: at most 256 bytes"));
    }
    if deadline.is_some_and(|d| d <= Utc::now()) {
        return Err(ApiError::bad_request("deadline: must be in the future"));
    }
    Ok(())
}

/// Records a new task (or, when two submissions with one id race, returns
/// the winner's), its SUBMITTED event, and starts its runner.
async fn create(
    state: &AppState,
    record: TransferRecord,
    submitted: String,
) -> Result<Submitted, ApiError> {
    match state.store.insert_transfer(&record).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) if record.submission_id.is_some() => {
            let submission_id = record.submission_id.as_deref().unwrap_or_default();
            let existing = state
                .store
                .transfer_by_submission(record.owner_id, submission_id)
                .await?
                .ok_or_else(|| ApiError::internal("submission id conflict without a row"))?;
            return Ok(Submitted {
                created: false,
                info: info(state, existing, false).await?,
            });
        }
        Err(e) => return Err(e.into()),
    }
    state
        .store
        .insert_transfer_event(&NewTransferEvent {
            transfer_id: record.id,
            time: Utc::now(),
            code: "SUBMITTED".into(),
            fault: false,
            side: None,
            path: None,
            message: submitted,
            item: 0,
            attempt: 0,
        })
        .await?;
    tracing::info!(transfer_id = %record.id, kind = ?record.kind, items = record.items.len(), "task submitted");
    crate::transfers::runner::spawn(state.clone(), record.id);
    Ok(Submitted {
        created: true,
        info: info(state, record, false).await?,
    })
}

fn new_record(
    caller: &Caller,
    kind: TaskKind,
    source: &CollectionRecord,
    destination: &CollectionRecord,
    items: Vec<TransferItem>,
    (options, tuning): (TransferOptions, TransferTuning),
    (label, deadline, submission_id): (
        Option<String>,
        Option<chrono::DateTime<Utc>>,
        Option<String>,
    ),
) -> TransferRecord {
    TransferRecord {
        id: TransferId::new(),
        kind,
        owner_id: caller.identity_id,
        label,
        status: TransferStatus::Active,
        status_message: None,
        source_collection: source.id,
        destination_collection: destination.id,
        items,
        options,
        tuning,
        deadline,
        submission_id,
        submitted_at: Utc::now(),
        completed_at: None,
        items_done: 0,
        attempts: 0,
        counters: TransferCounters::default(),
        notify_on: Default::default(),
    }
}

/// Submits a transfer task for `auth`. With a `submission_id` the owner
/// already used, the first task is returned (`created: false`).
pub(crate) async fn submit(
    state: &AppState,
    auth: &Caller,
    request: TransferSubmit,
) -> Result<Submitted, ApiError> {
    if let Some(info) = resubmitted(state, auth, request.submission_id.as_deref()).await? {
        return Ok(Submitted {
            created: false,
            info,
        });
    }
    check_common(
        request.label.as_deref(),
        request.deadline,
        request.items.len(),
    )?;
    for (i, item) in request.items.iter().enumerate() {
        check_path(&format!("items[{i}].source_path"), &item.source_path)?;
        check_path(
            &format!("items[{i}].destination_path"),
            &item.destination_path,
        )?;
    }
    check_globs("options.include", &request.options.include)?;
    check_globs("options.exclude", &request.options.exclude)?;
    request.tuning.validate().map_err(ApiError::bad_request)?;
    let notify_on = request.notify_on();
    let viewer = Viewer::of(&state.store, auth.identity_id).await?;
    let source =
        access::usable_collection(&state.store, &viewer, &request.source_collection).await?;
    let destination =
        access::usable_collection(&state.store, &viewer, &request.destination_collection).await?;
    // Access first, so that probing the agents reveals nothing about
    // paths the caller may not use; again after resolution, which may
    // move a destination into a directory.
    access::check_items(
        &state.store,
        &viewer,
        &TaskKind::Transfer,
        (&source, &destination),
        &request.items,
    )
    .await?;
    let items =
        crate::transfers::submission::resolve_items(state, &source, &destination, request.items)
            .await?;
    access::check_items(
        &state.store,
        &viewer,
        &TaskKind::Transfer,
        (&source, &destination),
        &items,
    )
    .await?;
    check_overlap(&source, &destination, &items, &request.options)?;
    let submitted = format!(
        "{} item(s) from `{}` to `{}`",
        items.len(),
        source.name,
        destination.name
    );
    let mut record = new_record(
        auth,
        TaskKind::Transfer,
        &source,
        &destination,
        items,
        (request.options, request.tuning),
        (request.label, request.deadline, request.submission_id),
    );
    record.notify_on = notify_on;
    create(state, record, submitted).await
}

/// Submits a delete task for `auth`: the collection's agent deletes the
/// paths in the background (paused while it is offline, retried after
/// faults). Same idempotency as transfers.
pub(crate) async fn submit_delete(
    state: &AppState,
    auth: &Caller,
    request: DeleteSubmit,
) -> Result<Submitted, ApiError> {
    if let Some(info) = resubmitted(state, auth, request.submission_id.as_deref()).await? {
        return Ok(Submitted {
            created: false,
            info,
        });
    }
    check_common(
        request.label.as_deref(),
        request.deadline,
        request.items.len(),
    )?;
    for (i, item) in request.items.iter().enumerate() {
        let what = format!("items[{i}].path");
        check_path(&what, &item.path)?;
        if item.path.split('/').all(|c| c.is_empty() || c == ".") {
            return Err(ApiError::bad_request(format!(
                "{what}: the collection's root cannot be deleted"
            )));
        }
    }
    let viewer = Viewer::of(&state.store, auth.identity_id).await?;
    let collection = access::usable_collection(&state.store, &viewer, &request.collection).await?;
    let submitted = format!(
        "delete {} path(s) in `{}`{}",
        request.items.len(),
        collection.name,
        if request.recursive {
            ", recursively"
        } else {
            ""
        }
    );
    let items: Vec<TransferItem> = request
        .items
        .into_iter()
        .map(|item| TransferItem {
            destination_path: item.path.clone(),
            source_path: item.path,
            recursive: request.recursive,
        })
        .collect();
    let kind = TaskKind::Delete {
        ignore_missing: request.ignore_missing,
    };
    access::check_items(
        &state.store,
        &viewer,
        &kind,
        (&collection, &collection),
        &items,
    )
    .await?;
    let record = new_record(
        auth,
        kind,
        &collection,
        &collection,
        items,
        (TransferOptions::default(), TransferTuning::default()),
        (request.label, request.deadline, request.submission_id),
    );
    create(state, record, submitted).await
}

/// The caller's newest tasks (`limit` clamped to 1..=1000).
pub(crate) async fn list(
    state: &AppState,
    auth: &Caller,
    limit: u32,
) -> Result<Vec<TransferInfo>, ApiError> {
    let limit = limit.clamp(1, 1000);
    let mut out = Vec::new();
    for record in state
        .store
        .transfers_owned_by(auth.identity_id, limit)
        .await?
    {
        out.push(info(state, record, false).await?);
    }
    Ok(out)
}

/// One transfer task, with the checksum of every file it transferred.
pub(crate) async fn show(
    state: &AppState,
    auth: &Caller,
    id: TransferId,
) -> Result<TransferInfo, ApiError> {
    let record = visible_transfer(state, auth, id, Capability::SeeActivity).await?;
    info(state, record, true).await
}

/// Cancels a transfer that is not final; 409 if it already is.
pub(crate) async fn cancel(
    state: &AppState,
    auth: &Caller,
    id: TransferId,
) -> Result<TransferInfo, ApiError> {
    let record = visible_transfer(state, auth, id, Capability::ManageActivity).await?;
    let by = if record.owner_id == auth.identity_id {
        "cancelled by its owner".to_owned()
    } else {
        format!(
            "cancelled by identity {} (activity manager)",
            auth.identity_id
        )
    };
    if record.status.is_final() {
        return Err(ApiError::conflict(format!(
            "transfer {id} is already {}",
            record.status.as_str()
        )));
    }
    let cancelled = state
        .store
        .update_transfer(
            id,
            &TransferProgress {
                status: TransferStatus::Cancelled,
                status_message: Some(&by),
                items_done: record.items_done,
                attempts: record.attempts,
                counters: &record.counters,
                completed_at: Some(Utc::now()),
            },
        )
        .await?;
    if !cancelled {
        let now = state
            .store
            .transfer(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("transfer {id} does not exist")))?;
        return Err(ApiError::conflict(format!(
            "transfer {id} is already {}",
            now.status.as_str()
        )));
    }
    state
        .store
        .insert_transfer_event(&NewTransferEvent {
            transfer_id: id,
            time: Utc::now(),
            code: "CANCELLED".into(),
            fault: false,
            side: None,
            path: None,
            message: by.clone(),
            item: record.items_done,
            attempt: record.attempts,
        })
        .await?;
    state.data.cancel(id);
    let record = state
        .store
        .transfer(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("transfer {id} does not exist")))?;
    info(state, record, false).await
}

/// Faults and status changes of a transfer after `after`, oldest first
/// (`limit` clamped to 1..=10,000).
pub(crate) async fn events(
    state: &AppState,
    auth: &Caller,
    id: TransferId,
    after: i64,
    limit: u32,
) -> Result<Vec<TransferEventInfo>, ApiError> {
    visible_transfer(state, auth, id, Capability::SeeActivity).await?;
    Ok(state
        .store
        .transfer_events(id, after, limit.clamp(1, 10_000))
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_protocol::{CollectionId, EndpointId, IdentityId};

    fn collection(name: &str, endpoint: EndpointId, root: &str) -> CollectionRecord {
        CollectionRecord {
            id: CollectionId::new(),
            owner_id: IdentityId::new(),
            endpoint_id: endpoint,
            name: name.into(),
            root: root.into(),
            created_at: Utc::now(),
            announced_at: Utc::now(),
            withdrawn_at: None,
            guest_of: None,
            sharing_policy: None,
        }
    }

    fn check(
        (source, from): (&CollectionRecord, &str),
        (destination, to): (&CollectionRecord, &str),
        recursive: bool,
        delete_extraneous: bool,
    ) -> Result<(), String> {
        let items = [TransferItem {
            source_path: from.into(),
            destination_path: to.into(),
            recursive,
        }];
        let options = TransferOptions {
            delete_extraneous,
            ..TransferOptions::default()
        };
        check_overlap(source, destination, &items, &options).map_err(|e| e.message)
    }

    #[test]
    fn overlapping_sides_on_one_endpoint_are_refused() {
        let endpoint = EndpointId::new();
        let data = collection("data", endpoint, "/srv/data");
        let runs = collection("runs", endpoint, "/srv/data/runs");
        let elsewhere = collection("far", EndpointId::new(), "/srv/data");

        let same = check((&data, "/a.txt"), (&data, "a.txt"), false, false).unwrap_err();
        assert!(same.contains("are the same path"), "{same}");
        let same = check((&data, "/runs/x"), (&runs, "//x/."), true, false).unwrap_err();
        assert!(same.contains("are the same path"), "{same}");
        let into = check((&data, "/in"), (&data, "/in/copy"), true, false).unwrap_err();
        assert!(into.contains("copied into itself"), "{into}");
        let into = check((&data, "/"), (&runs, "/x"), true, false).unwrap_err();
        assert!(into.contains("copied into itself"), "{into}");
        let deletes = check((&data, "/in/sub"), (&data, "/in"), true, true).unwrap_err();
        assert!(deletes.contains("would delete the source"), "{deletes}");

        // Side by side, a file into a directory beside it, a subtree out
        // without delete, and anything between endpoints: fine.
        check((&data, "/in"), (&data, "/out"), true, true).unwrap();
        check((&data, "/in"), (&data, "/input"), true, false).unwrap();
        check((&data, "/in/a.txt"), (&data, "/in/b.txt"), false, false).unwrap();
        check((&data, "/in/sub"), (&data, "/in"), true, false).unwrap();
        check((&data, "/in"), (&elsewhere, "/in/copy"), true, true).unwrap();
        check((&data, "/in"), (&elsewhere, "/in"), true, true).unwrap();
    }
}
