//! One attempt of a delete task: removes a path of a collection on the
//! blocking pool, reporting progress like a transfer's destination side.
//! Dropping the future (an aborted attempt) stops the delete before its
//! next entry; what was removed stays removed, so a retry continues.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::collection::{Collection, CollectionPath, DeleteControl};
use crate::error::{CollectionError, FaultCode, TransferError, TransferFailure};
use crate::progress::Progress;
use crate::spec::{Side, TransferReport, TransferUpdate, PROGRESS_INTERVAL};

/// What one delete attempt removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTask {
    /// Names the attempt in its report (the service's `<task>.<item>`).
    pub transfer_id: String,
    pub path: String,
    /// Remove a directory with everything in it (otherwise only an empty one).
    pub recursive: bool,
    /// A `path` that does not exist is a success (nothing to delete), not
    /// FILE_NOT_FOUND. A retry sets it: an earlier attempt may have got there.
    pub ignore_missing: bool,
}

/// Stops the delete when the attempt's future is dropped.
struct StopOnDrop(Arc<DeleteControl>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Deletes `task.path` in `collection`. Progress (`files` and `directories`
/// removed) goes to `updates` every [`PROGRESS_INTERVAL`] and at the end.
pub async fn run_delete(
    collection: Collection,
    task: DeleteTask,
    updates: Option<mpsc::UnboundedSender<TransferUpdate>>,
) -> Result<TransferReport, TransferFailure> {
    let progress = Progress::new(Side::Destination, updates);
    let control = Arc::new(DeleteControl::default());
    let stop_on_drop = StopOnDrop(control.clone());
    let path = match CollectionPath::parse(&task.path) {
        Ok(path) if path.is_root() => Err(CollectionError::RootOperation { op: "delete" }),
        other => other,
    };
    let result = match path {
        Err(e) => Err(e),
        Ok(path) => {
            let worker = {
                let control = control.clone();
                let recursive = task.recursive;
                tokio::task::spawn_blocking(move || {
                    collection.delete_blocking(&path, recursive, &control)
                })
            };
            tokio::pin!(worker);
            let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
            ticker.tick().await;
            loop {
                tokio::select! {
                    joined = &mut worker => break match joined {
                        Ok(result) => result,
                        Err(join) => std::panic::resume_unwind(join.into_panic()),
                    },
                    _ = ticker.tick() => {
                        count(&progress, &control);
                        progress.tick();
                    }
                }
            }
        }
    };
    drop(stop_on_drop);
    count(&progress, &control);
    let error = match result {
        Ok(_) => None,
        Err(CollectionError::NotFound { path })
            if task.ignore_missing && path == task_path(&task) =>
        {
            tracing::info!(transfer_id = %task.transfer_id, path, "nothing to delete: the path does not exist");
            None
        }
        Err(e @ CollectionError::Stopped) => Some(TransferError {
            code: FaultCode::Cancelled,
            message: e.to_string(),
            retryable: true,
        }),
        Err(e) => {
            let mut error = TransferError::from_collection(&e);
            // Deleting never fills a disk; anything but an I/O hiccup is the
            // caller's to fix (a missing path, permissions, a non-empty
            // directory without `recursive`).
            let callers = matches!(
                e,
                CollectionError::DirectoryNotEmpty { .. }
                    | CollectionError::NotADirectory { .. }
                    | CollectionError::IsADirectory { .. }
            );
            error.retryable = error.code == FaultCode::IoError && !callers;
            Some(error)
        }
    };
    let report = progress.report(&task.transfer_id, None, 0);
    match error {
        None => Ok(report),
        Some(error) => Err(TransferFailure {
            error,
            report: Box::new(report),
        }),
    }
}

/// The path as the collection reports it in errors (`/a/b`).
fn task_path(task: &DeleteTask) -> String {
    CollectionPath::parse(&task.path)
        .map(|p| p.to_string())
        .unwrap_or_else(|_| task.path.clone())
}

fn count(progress: &Progress, control: &DeleteControl) {
    let summary = control.summary();
    progress.counters.files.store(summary.files, Relaxed);
    progress
        .counters
        .directories
        .store(summary.directories, Relaxed);
}
