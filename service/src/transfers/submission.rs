//! What a transfer submission learns from the agents before it is accepted.
//!
//! It owns two rules, applied to each item while its agents are online:
//!
//! - **The source must be there and fit the item.** A missing source path
//!   (404) or a directory named without `recursive` (400) is refused at
//!   once instead of failing later in `wait`. An offline or slow agent is
//!   not asked: the runner's faults still cover that, and what changes
//!   after submission.
//! - **A file lands where `cp` and `rsync` put it.** A destination ending in
//!   `/`, or naming an existing directory, receives the file inside it under
//!   its own name. (Recursive items keep their meaning: the source
//!   directory's contents go into the destination directory.)
//!
//! Only the first [`PROBED_ITEMS`] items are asked about, so a batch of
//! thousands of files does not make thousands of round trips before it
//! starts; the trailing-slash rule needs no agent and applies to all.

use std::time::Duration;

use lattice_protocol::transfer::{EntryKind, FileEntry, FileOp, FileOpOutcome, TransferItem};
use lattice_protocol::ErrorCode;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::CollectionRecord;

/// Items whose paths are looked at on the agents at submission.
pub const PROBED_ITEMS: usize = 100;

/// How long one look may take; a slower agent is not waited for.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What an agent said of a path.
enum Probe {
    Found(FileEntry),
    Missing,
    /// Offline, slow, or an error the transfer itself will report.
    Unknown,
}

async fn probe(state: &AppState, collection: &CollectionRecord, path: &str) -> Probe {
    let stat = super::file_op(
        state,
        collection,
        FileOp::Stat {
            path: path.to_owned(),
        },
    );
    match tokio::time::timeout(PROBE_TIMEOUT, stat).await {
        Ok(Ok(FileOpOutcome::Entry { entry })) => Probe::Found(entry),
        Ok(Err(e)) if e.code == ErrorCode::NotFound => Probe::Missing,
        _ => Probe::Unknown,
    }
}

/// Checks the items against the agents and resolves file destinations as
/// described in the module doc. Refusals name the item as `items[N]`.
pub async fn resolve_items(
    state: &AppState,
    source: &CollectionRecord,
    destination: &CollectionRecord,
    mut items: Vec<TransferItem>,
) -> Result<Vec<TransferItem>, ApiError> {
    for (i, item) in items.iter_mut().enumerate() {
        let ask = i < PROBED_ITEMS;
        if ask {
            match probe(state, source, &item.source_path).await {
                Probe::Missing => {
                    return Err(ApiError::not_found(format!(
                        "items[{i}]: `{}` does not exist in collection `{}`",
                        item.source_path, source.name
                    )))
                }
                Probe::Found(entry) if entry.kind == EntryKind::Dir && !item.recursive => {
                    return Err(ApiError::bad_request(format!(
                        "items[{i}]: `{}` in `{}` is a directory: transfer it with --recursive (`recursive: true`)",
                        item.source_path, source.name
                    )))
                }
                _ => {}
            }
        }
        if item.recursive {
            continue;
        }
        let Some(name) = file_name(&item.source_path) else {
            continue;
        };
        let into_directory = item.destination_path.ends_with('/')
            || (ask
                && matches!(
                    probe(state, destination, &item.destination_path).await,
                    Probe::Found(entry) if entry.kind == EntryKind::Dir
                ));
        if into_directory {
            item.destination_path = inside(&item.destination_path, name);
        }
    }
    Ok(items)
}

/// The last component of a collection path (`None` for the root).
fn file_name(path: &str) -> Option<&str> {
    path.rsplit('/').find(|c| !c.is_empty() && *c != ".")
}

/// `dir/name`, with exactly one `/` between.
fn inside(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_and_joins() {
        assert_eq!(file_name("/a/f1.txt"), Some("f1.txt"));
        assert_eq!(file_name("/a/dir/"), Some("dir"));
        assert_eq!(file_name("f"), Some("f"));
        assert_eq!(file_name("/"), None);
        assert_eq!(inside("/single/", "f1.txt"), "/single/f1.txt");
        assert_eq!(inside("/single", "f1.txt"), "/single/f1.txt");
        assert_eq!(inside("/", "f1.txt"), "/f1.txt");
    }
}
