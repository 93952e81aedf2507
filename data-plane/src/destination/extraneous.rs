//! `--delete`: removes from the destination what the source did not list.
//!
//! It owns the rule of what counts as extraneous: not listed by the source,
//! not excluded by the filters, not a partial file of a transfer. It must
//! not run before the source's manifest is complete (the caller runs it on
//! `Finish`), and it blocks: call it on the blocking pool.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::collection::{Collection, CollectionPath, DeleteControl};
use crate::error::CollectionError;
use crate::filters::Filters;

use super::PARTIAL_PREFIX;

/// Removes what the source did not list (blocking). Partial files and
/// excluded paths are left alone.
pub(super) fn delete_extraneous(
    collection: &Collection,
    root: &CollectionPath,
    rel_dir: &CollectionPath,
    seen: &HashSet<Vec<u8>>,
    filters: &Filters,
    deleted: &mut u64,
) -> Result<(), CollectionError> {
    let dir_path = root.join(rel_dir);
    let read = collection
        .dir()
        .read_dir(dir_path.as_relative())
        .map_err(|e| CollectionError::from_io("list", dir_path.to_string(), e))?;
    for child in read {
        let child = child.map_err(|e| CollectionError::from_io("list", dir_path.to_string(), e))?;
        let name = child.file_name();
        if name.as_bytes().starts_with(PARTIAL_PREFIX.as_bytes()) {
            continue;
        }
        let rel = rel_dir.join_name(&name);
        let is_dir = child.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if filters.excludes(Path::new(OsStr::from_bytes(rel.as_bytes())), is_dir) {
            continue;
        }
        if seen.contains(rel.as_bytes()) {
            if is_dir {
                delete_extraneous(collection, root, &rel, seen, filters, deleted)?;
            }
            continue;
        }
        let summary =
            collection.delete_blocking(&root.join(&rel), true, &DeleteControl::default())?;
        *deleted += summary.files + summary.directories;
    }
    Ok(())
}
