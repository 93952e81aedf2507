//! The data actions: `transfer` and `delete` (tasks the transfer runner
//! drives; the action follows the task), `ls` and `mkdir` (answered at
//! once). Bodies take the anchor's transfer action-provider shapes
//! (`source_endpoint_id`/`destination_endpoint_id` naming Lattice
//! collections by id or name, `DATA` or `transfer_items` with
//! `source_path`, `destination_path`, `recursive`; `sync_level`,
//! `verify_checksum`, `preserve_timestamp`, `delete_destination_extra`,
//! `skip_source_errors`, `label`, `deadline`) as well as Lattice's own
//! (`source_collection`, `items`, ...), so published flows need only
//! their `ActionUrl`s changed. Every path is checked against the
//! caller's access exactly as the REST API checks it.

use chrono::{DateTime, Utc};
use lattice_protocol::transfer::{
    DeleteItem, DeleteSubmit, EntryKind, FileOp, FileOpOutcome, SyncLevel, TransferItem,
    TransferOptions, TransferStatus, TransferSubmit,
};
use lattice_protocol::TransferId;
use serde_json::{json, Map, Value};

use super::Progress;
use crate::auth::Caller;
use crate::flows::{FlowError, FlowResult};
use crate::sharing::Viewer;
use crate::state::AppState;
use crate::transfers::{files, tasks};

pub(crate) fn transfer_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "source_endpoint_id": {"type": "string"},
            "destination_endpoint_id": {"type": "string"},
            "DATA": {"type": "array", "items": {"type": "object",
                "required": ["source_path", "destination_path"]}},
            "label": {"type": "string"},
            "sync_level": {},
            "verify_checksum": {"type": "boolean"},
            "preserve_timestamp": {"type": "boolean"},
            "delete_destination_extra": {"type": "boolean"},
            "skip_source_errors": {"type": "boolean"}
        }
    })
}

fn invalid(what: &str, message: impl std::fmt::Display) -> FlowError {
    FlowError::Invalid(format!("{what} action body: {message}"))
}

fn object<'a>(what: &str, body: &'a Value) -> FlowResult<&'a Map<String, Value>> {
    body.as_object()
        .ok_or_else(|| invalid(what, "must be a JSON object"))
}

/// The first of `names` present, as a string.
fn text(what: &str, body: &Map<String, Value>, names: &[&str]) -> FlowResult<Option<String>> {
    for name in names {
        match body.get(*name) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => return Ok(Some(s.clone())),
            Some(_) => return Err(invalid(what, format!("`{name}` must be a string"))),
        }
    }
    Ok(None)
}

fn required(what: &str, body: &Map<String, Value>, names: &[&str]) -> FlowResult<String> {
    text(what, body, names)?.ok_or_else(|| invalid(what, format!("`{}` is required", names[0])))
}

fn flag(what: &str, body: &Map<String, Value>, names: &[&str]) -> FlowResult<Option<bool>> {
    for name in names {
        match body.get(*name) {
            None | Some(Value::Null) => continue,
            Some(Value::Bool(b)) => return Ok(Some(*b)),
            Some(_) => return Err(invalid(what, format!("`{name}` must be true or false"))),
        }
    }
    Ok(None)
}

fn deadline(what: &str, body: &Map<String, Value>) -> FlowResult<Option<DateTime<Utc>>> {
    text(what, body, &["deadline"])?
        .map(|d| {
            DateTime::parse_from_rfc3339(&d)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|e| invalid(what, format!("`deadline` `{d}`: {e}")))
        })
        .transpose()
}

/// `sync_level`: the anchor's 0-3 or Lattice's names.
fn sync_level(body: &Map<String, Value>) -> FlowResult<Option<SyncLevel>> {
    match body.get("sync_level") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => Ok(Some(SyncLevel::Exists)),
            Some(1) => Ok(Some(SyncLevel::Size)),
            Some(2) => Ok(Some(SyncLevel::Mtime)),
            Some(3) => Ok(Some(SyncLevel::Checksum)),
            _ => Err(invalid("transfer", "`sync_level` must be 0, 1, 2 or 3")),
        },
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|e: String| invalid("transfer", e)),
        Some(_) => Err(invalid(
            "transfer",
            "`sync_level` must be a number or a name",
        )),
    }
}

fn items_of<'a>(what: &str, body: &'a Map<String, Value>) -> FlowResult<&'a [Value]> {
    for name in ["DATA", "transfer_items", "items"] {
        if let Some(v) = body.get(name) {
            return v
                .as_array()
                .map(Vec::as_slice)
                .ok_or_else(|| invalid(what, format!("`{name}` must be a list")));
        }
    }
    Err(invalid(
        what,
        "`DATA` (or `transfer_items`) lists the items",
    ))
}

/// The transfer submission a body asks for.
fn transfer_submission(body: &Value, submission_id: String) -> FlowResult<TransferSubmit> {
    const W: &str = "transfer";
    let body = object(W, body)?;
    let source = required(
        W,
        body,
        &["source_endpoint_id", "source_endpoint", "source_collection"],
    )?;
    let destination = required(
        W,
        body,
        &[
            "destination_endpoint_id",
            "destination_endpoint",
            "destination_collection",
        ],
    )?;
    let mut items = Vec::new();
    for (i, item) in items_of(W, body)?.iter().enumerate() {
        let item = item
            .as_object()
            .ok_or_else(|| invalid(W, format!("DATA[{i}] must be an object")))?;
        items.push(TransferItem {
            source_path: required(W, item, &["source_path"])
                .map_err(|e| invalid(W, format!("DATA[{i}]: {e}")))?,
            destination_path: required(W, item, &["destination_path"])
                .map_err(|e| invalid(W, format!("DATA[{i}]: {e}")))?,
            recursive: flag(W, item, &["recursive"])?.unwrap_or(false),
        });
    }
    let defaults = TransferOptions::default();
    // Lattice's own submission document carries its options (and tuning)
    // nested, as `lattice transfer` and `lattice timer create transfer`
    // write them; the anchor's document has them at the top level.
    let nested = |name: &str| body.get(name).filter(|v| !v.is_null()).cloned();
    let tuning = match nested("tuning") {
        Some(v) => serde_json::from_value(v).map_err(|e| invalid(W, format!("tuning: {e}")))?,
        None => Default::default(),
    };
    let options = match nested("options") {
        Some(v) => serde_json::from_value(v).map_err(|e| invalid(W, format!("options: {e}")))?,
        None => TransferOptions {
            sync_level: sync_level(body)?,
            verify_checksum: flag(W, body, &["verify_checksum"])?
                .unwrap_or(defaults.verify_checksum),
            preserve_mtime: flag(W, body, &["preserve_timestamp", "preserve_mtime"])?
                .unwrap_or(defaults.preserve_mtime),
            delete_extraneous: flag(W, body, &["delete_destination_extra", "delete_extraneous"])?
                .unwrap_or(defaults.delete_extraneous),
            skip_source_errors: flag(W, body, &["skip_source_errors"])?
                .unwrap_or(defaults.skip_source_errors),
            fail_on_quota: flag(W, body, &["fail_on_quota_errors", "fail_on_quota"])?
                .unwrap_or(defaults.fail_on_quota),
            include: defaults.include,
            exclude: defaults.exclude,
        },
    };
    Ok(TransferSubmit {
        source_collection: source,
        destination_collection: destination,
        items,
        options,
        tuning,
        label: text(W, body, &["label"])?,
        deadline: deadline(W, body)?,
        submission_id: Some(submission_id),
        notify_on_succeeded: flag(W, body, &["notify_on_succeeded"])?.unwrap_or(true),
        notify_on_failed: flag(W, body, &["notify_on_failed"])?.unwrap_or(true),
        notify_on_inactive: flag(W, body, &["notify_on_inactive"])?.unwrap_or(true),
    })
}

fn delete_submission(body: &Value, submission_id: String) -> FlowResult<DeleteSubmit> {
    const W: &str = "delete";
    let body = object(W, body)?;
    let collection = required(W, body, &["endpoint_id", "endpoint", "collection"])?;
    let items = match text(W, body, &["path"])? {
        Some(path) => vec![DeleteItem { path }],
        None => items_of(W, body)?
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let path = match item {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(o) => text(W, o, &["path"])?,
                    _ => None,
                };
                path.map(|path| DeleteItem { path })
                    .ok_or_else(|| invalid(W, format!("DATA[{i}] needs a `path`")))
            })
            .collect::<FlowResult<_>>()?,
    };
    Ok(DeleteSubmit {
        collection,
        items,
        recursive: flag(W, body, &["recursive"])?.unwrap_or(false),
        ignore_missing: flag(W, body, &["ignore_missing"])?.unwrap_or(false),
        label: text(W, body, &["label"])?,
        deadline: deadline(W, body)?,
        submission_id: Some(submission_id),
    })
}

/// Checks a transfer body; the plan carries the submission (with a fresh
/// submission id, which makes beginning it again harmless).
pub(crate) fn plan_transfer(body: &Value) -> FlowResult<Value> {
    let submission = transfer_submission(body, uuid::Uuid::new_v4().to_string())?;
    Ok(json!({"kind": "transfer", "submit": submission}))
}

pub(crate) fn plan_delete(body: &Value) -> FlowResult<Value> {
    let submission = delete_submission(body, uuid::Uuid::new_v4().to_string())?;
    Ok(json!({"kind": "delete", "submit": submission}))
}

fn transfer_id(internal: &Value) -> Option<TransferId> {
    internal
        .get("transfer_id")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
}

/// Submits the planned task (idempotent through its submission id) and
/// records its id.
pub(crate) async fn begin_task(
    state: &AppState,
    caller: &Caller,
    internal: &mut Value,
) -> FlowResult<Progress> {
    let submit = internal.get("submit").cloned().unwrap_or(Value::Null);
    let submitted = if internal.get("kind").and_then(Value::as_str) == Some("delete") {
        let request: DeleteSubmit = serde_json::from_value(submit)
            .map_err(|e| FlowError::Conflict(format!("the delete action's plan: {e}")))?;
        tasks::submit_delete(state, caller, request).await?
    } else {
        let request: TransferSubmit = serde_json::from_value(submit)
            .map_err(|e| FlowError::Conflict(format!("the transfer action's plan: {e}")))?;
        tasks::submit(state, caller, request).await?
    };
    if let Value::Object(map) = internal {
        map.insert("transfer_id".into(), json!(submitted.info.id));
    }
    Ok(progress_of(&submitted.info))
}

fn progress_of(info: &lattice_protocol::transfer::TransferInfo) -> Progress {
    let status = match info.status {
        TransferStatus::Active | TransferStatus::Paused => "ACTIVE",
        TransferStatus::Succeeded => "SUCCEEDED",
        TransferStatus::Failed | TransferStatus::Cancelled => "FAILED",
    };
    let details = json!({
        "task_id": info.id,
        "status": status,
        "nice_status": info.status.as_str(),
        "status_message": info.status_message,
        "label": info.label,
        "source_collection": info.source_collection_name,
        "destination_collection": info.destination_collection_name,
        "files": info.counters.files,
        "directories": info.counters.directories,
        "files_skipped": info.counters.files_skipped,
        "bytes_transferred": info.counters.bytes_transferred,
        "faults": info.counters.faults,
    });
    match info.status {
        TransferStatus::Active | TransferStatus::Paused => Progress::active(details),
        TransferStatus::Succeeded => Progress::done(details),
        TransferStatus::Failed | TransferStatus::Cancelled => Progress::failed(details),
    }
}

pub(crate) async fn refresh_task(
    state: &AppState,
    caller: &Caller,
    internal: &Value,
) -> FlowResult<Progress> {
    let id = transfer_id(internal)
        .ok_or_else(|| FlowError::Conflict("the action's task id is missing".into()))?;
    Ok(progress_of(&tasks::show(state, caller, id).await?))
}

pub(crate) async fn cancel_task(state: &AppState, caller: &Caller, internal: &Value) {
    if let Some(id) = transfer_id(internal) {
        if let Err(e) = tasks::cancel(state, caller, id).await {
            tracing::debug!(transfer_id = %id, error = %e.message, "cancelling a flow's transfer");
        }
    }
}

async fn file_op(
    state: &AppState,
    caller: &Caller,
    what: &str,
    body: &Value,
    op: impl FnOnce(String, &Map<String, Value>) -> FlowResult<FileOp>,
) -> FlowResult<(String, FileOpOutcome)> {
    let body = object(what, body)?;
    let collection = required(what, body, &["endpoint_id", "endpoint", "collection"])?;
    let path = text(what, body, &["path"])?.unwrap_or_else(|| "/".to_owned());
    let op = op(path.clone(), body)?;
    let viewer = Viewer::of(&state.store, caller.identity_id).await?;
    let (record, outcome) = files::checked(state, &viewer, &collection, op).await?;
    Ok((record.name, outcome))
}

/// Lists a directory; details as the anchor's ls action shows them
/// (`DATA` of `{name, type, size, last_modified, permissions}`).
pub(crate) async fn ls(state: &AppState, caller: &Caller, body: &Value) -> FlowResult<Progress> {
    let (collection, outcome) = file_op(state, caller, "ls", body, |path, _| {
        Ok(FileOp::List {
            path,
            depth: 1,
            max_entries: 100_000,
        })
    })
    .await?;
    let path = body.get("path").and_then(Value::as_str).unwrap_or("/");
    let FileOpOutcome::Entries { entries } = outcome else {
        return Err(FlowError::Unavailable(
            "the agent answered a listing with something else".into(),
        ));
    };
    let data: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "DATA_TYPE": "file",
                "name": e.name,
                "type": match e.kind {
                    EntryKind::Dir => "dir",
                    EntryKind::Symlink => "link",
                    _ => "file",
                },
                "size": e.size,
                "last_modified": DateTime::<Utc>::from_timestamp_millis(e.modified_ms)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S+00:00").to_string()),
                "permissions": format!("{:04o}", e.permissions & 0o7777),
            })
        })
        .collect();
    Ok(Progress::done(json!({
        "DATA_TYPE": "file_list",
        "endpoint": collection,
        "path": path,
        "length": data.len(),
        "DATA": data,
    })))
}

/// Creates a directory (with its parents unless `parents` is false; an
/// existing directory is then no error, so a retried step is harmless).
pub(crate) async fn mkdir(state: &AppState, caller: &Caller, body: &Value) -> FlowResult<Progress> {
    let (collection, _) = file_op(state, caller, "mkdir", body, |path, body| {
        Ok(FileOp::Mkdir {
            path,
            parents: flag("mkdir", body, &["parents"])?.unwrap_or(true),
        })
    })
    .await?;
    let path = body.get("path").and_then(Value::as_str).unwrap_or("/");
    Ok(Progress::done(json!({
        "code": "DirectoryCreated",
        "endpoint": collection,
        "path": path,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anchors_transfer_body_becomes_a_submission() {
        let body = json!({
            "source_endpoint_id": "instrument",
            "destination_endpoint_id": "cluster",
            "DATA": [{"DATA_TYPE": "transfer_item", "source_path": "/run1/",
                      "destination_path": "/in/run1/", "recursive": true}],
            "label": "nightly", "sync_level": 3, "verify_checksum": true,
            "preserve_timestamp": true, "delete_destination_extra": false,
            "deadline": "2030-01-01T00:00:00Z"
        });
        let s = transfer_submission(&body, "sub".into()).unwrap();
        assert_eq!(
            (
                s.source_collection.as_str(),
                s.destination_collection.as_str()
            ),
            ("instrument", "cluster")
        );
        assert_eq!(s.items.len(), 1);
        assert!(s.items[0].recursive);
        assert_eq!(s.options.sync_level, Some(SyncLevel::Checksum));
        assert!(s.options.preserve_mtime);
        assert_eq!(s.label.as_deref(), Some("nightly"));
        assert!(s.deadline.is_some());
        // Lattice's own names.
        let ours = json!({"source_collection": "a", "destination_collection": "b",
            "items": [{"source_path": "/x", "destination_path": "/y"}], "sync_level": "size"});
        let s = transfer_submission(&ours, "sub".into()).unwrap();
        assert_eq!(s.options.sync_level, Some(SyncLevel::Size));
        assert!(!s.items[0].recursive);
    }

    #[test]
    fn bad_transfer_bodies_are_refused_naming_the_field() {
        let cases = [
            (
                json!({"destination_endpoint_id": "b", "DATA": []}),
                "source_endpoint_id",
            ),
            (
                json!({"source_endpoint_id": "a", "destination_endpoint_id": "b"}),
                "DATA",
            ),
            (
                json!({"source_endpoint_id": "a", "destination_endpoint_id": "b",
                "DATA": [{"source_path": "/x"}]}),
                "DATA[0]",
            ),
            (
                json!({"source_endpoint_id": "a", "destination_endpoint_id": "b",
                "DATA": [], "sync_level": 9}),
                "sync_level",
            ),
            (
                json!({"source_endpoint_id": 5, "destination_endpoint_id": "b", "DATA": []}),
                "source_endpoint_id",
            ),
            (
                json!({"source_endpoint_id": "a", "destination_endpoint_id": "b", "DATA": [],
                "deadline": "tomorrow"}),
                "deadline",
            ),
        ];
        for (body, field) in cases {
            let e = transfer_submission(&body, "s".into())
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{body}: {e}");
        }
    }

    #[test]
    fn delete_bodies_take_one_path_or_a_list() {
        let one = delete_submission(
            &json!({"endpoint_id": "c", "path": "/x", "recursive": true}),
            "s".into(),
        )
        .unwrap();
        assert_eq!(one.items.len(), 1);
        assert!(one.recursive);
        let many = delete_submission(
            &json!({"collection": "c", "DATA": [{"path": "/a"}, "/b"]}),
            "s".into(),
        )
        .unwrap();
        assert_eq!(many.items.len(), 2);
        assert!(delete_submission(&json!({"collection": "c", "DATA": [{}]}), "s".into()).is_err());
    }
}
