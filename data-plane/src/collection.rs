//! Collections: a root directory whose every path is resolved beneath it.
//!
//! Confinement is enforced by the kernel, not by string checks: the root is
//! opened once as a capability ([`cap_std::fs::Dir`]) and every operation goes
//! through it, which on Linux uses `openat2(RESOLVE_BENEATH)` (or a
//! component-by-component `O_NOFOLLOW` walk where that is missing). A symlink
//! pointing outside, absolute or relative, is refused even when it is swapped
//! in while the operation runs. On top of that, [`CollectionPath::parse`]
//! refuses `..` and NUL up front so the error names the problem clearly.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use cap_std::fs::{Dir, MetadataExt};
use serde::{Deserialize, Serialize};

use crate::error::CollectionError;

/// A path inside a collection: relative, normalized, never containing `..`.
///
/// User paths are written collection-absolute (`/data/run 1`) or relative
/// (`data/run 1`); both mean the same place under the root. There is no way to
/// name a host path: `/etc/passwd` is `<root>/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CollectionPath(PathBuf);

impl CollectionPath {
    /// The collection root itself.
    pub fn root() -> Self {
        CollectionPath(PathBuf::new())
    }

    /// Parses a user-supplied path (see the type's doc).
    pub fn parse(path: &str) -> Result<Self, CollectionError> {
        Self::from_bytes(path.as_bytes())
    }

    /// Parses raw path bytes (file names need not be UTF-8).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CollectionError> {
        let shown = || String::from_utf8_lossy(bytes).into_owned();
        if bytes.contains(&0) {
            return Err(CollectionError::InvalidPath {
                path: shown(),
                reason: "it contains a NUL byte",
            });
        }
        let mut normalized = PathBuf::new();
        for component in Path::new(OsStr::from_bytes(bytes)).components() {
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(name) => normalized.push(name),
                Component::ParentDir => {
                    return Err(CollectionError::InvalidPath {
                        path: shown(),
                        reason: "`..` is not allowed: paths are resolved inside the collection",
                    })
                }
                Component::Prefix(_) => {
                    return Err(CollectionError::InvalidPath {
                        path: shown(),
                        reason: "path prefixes are not allowed",
                    })
                }
            }
        }
        Ok(CollectionPath(normalized))
    }

    pub fn is_root(&self) -> bool {
        self.0.as_os_str().is_empty()
    }

    /// The relative path to hand to the root's capability (`.` for the root).
    pub fn as_relative(&self) -> &Path {
        if self.is_root() {
            Path::new(".")
        } else {
            &self.0
        }
    }

    /// The raw bytes, `/`-separated, empty for the root.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_os_str().as_bytes()
    }

    /// Appends a relative path (already validated).
    pub fn join(&self, other: &CollectionPath) -> CollectionPath {
        if other.is_root() {
            return self.clone();
        }
        CollectionPath(self.0.join(&other.0))
    }

    pub(crate) fn join_name(&self, name: &OsStr) -> CollectionPath {
        CollectionPath(self.0.join(name))
    }

    /// The parent directory and the final name; `None` for the root.
    pub fn split_last(&self) -> Option<(CollectionPath, &OsStr)> {
        let name = self.0.file_name()?;
        let parent = self.0.parent().map(Path::to_path_buf).unwrap_or_default();
        Some((CollectionPath(parent), name))
    }

    pub fn file_name(&self) -> Option<&OsStr> {
        self.0.file_name()
    }
}

impl std::fmt::Display for CollectionPath {
    /// Collection-absolute form, e.g. `/data/run 1` (lossy for non-UTF-8 names).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", self.0.to_string_lossy())
    }
}

// An entry (what `ls --long` shows; symlinks are reported, never followed
// by listings), its kind and a delete's summary are the protocol's own
// types: the agent hands them to the service as they are.
pub use lattice_protocol::transfer::{DeleteSummary, EntryKind, FileEntry as Entry};

/// How far [`Collection::list`] descends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOptions {
    /// 1 lists the directory's children; 2 adds grandchildren, and so on.
    pub depth: u32,
    /// Stop after this many entries (protects the agent from huge trees).
    pub max_entries: usize,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            depth: 1,
            max_entries: 100_000,
        }
    }
}

/// Live counts of a running delete, and its stop switch (checked between
/// two entries). Shared between the blocking thread that deletes and the
/// task that reports progress.
#[derive(Debug, Default)]
pub struct DeleteControl {
    files: AtomicU64,
    directories: AtomicU64,
    stop: AtomicBool,
}

impl DeleteControl {
    /// What was removed so far.
    pub fn summary(&self) -> DeleteSummary {
        DeleteSummary {
            files: self.files.load(Ordering::Relaxed),
            directories: self.directories.load(Ordering::Relaxed),
        }
    }

    /// Makes the delete stop before its next entry with [`CollectionError::Stopped`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn check(&self) -> Result<(), CollectionError> {
        if self.stop.load(Ordering::Relaxed) {
            Err(CollectionError::Stopped)
        } else {
            Ok(())
        }
    }
}

/// A mapped collection: a root directory opened once as a capability.
///
/// Cheap to clone (an `Arc` of the root's file descriptor). The async methods
/// run the file system work on tokio's blocking pool; the `*_blocking`
/// functions in this crate are for code already off the async threads.
#[derive(Debug, Clone)]
pub struct Collection {
    root_path: Arc<PathBuf>,
    dir: Arc<Dir>,
}

impl Collection {
    /// Opens `root` (which must be an existing directory). Blocking: call it
    /// at agent start-up or through `spawn_blocking`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, CollectionError> {
        let root = root.as_ref().to_path_buf();
        let dir = Dir::open_ambient_dir(&root, cap_std::ambient_authority()).map_err(|source| {
            CollectionError::Root {
                root: root.clone(),
                source,
            }
        })?;
        Ok(Collection {
            root_path: Arc::new(root),
            dir: Arc::new(dir),
        })
    }

    /// The collection made of one directory of this one (a guest
    /// collection's root): every path is then resolved beneath `path`, so
    /// nothing outside it is reachable, through symlinks neither. Blocking.
    pub fn subtree_blocking(&self, path: &str) -> Result<Self, CollectionError> {
        let path = CollectionPath::parse(path)?;
        if path.is_root() {
            return Ok(self.clone());
        }
        let dir = self
            .dir
            .open_dir(path.as_relative())
            .map_err(|e| CollectionError::from_io("open", path.to_string(), e))?;
        Ok(Collection {
            root_path: Arc::new(self.root_path.join(path.as_relative())),
            dir: Arc::new(dir),
        })
    }

    /// The host directory this collection maps (shown to its owner only).
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    pub(crate) fn dir(&self) -> &Dir {
        &self.dir
    }

    pub async fn stat(&self, path: &str) -> Result<Entry, CollectionError> {
        let path = CollectionPath::parse(path)?;
        self.blocking(move |c| c.stat_blocking(&path)).await
    }

    /// Lists a directory down to `options.depth` levels (a file lists as
    /// itself). Entries are sorted by path; symlinks are not followed.
    pub async fn list(
        &self,
        path: &str,
        options: ListOptions,
    ) -> Result<Vec<Entry>, CollectionError> {
        let path = CollectionPath::parse(path)?;
        self.blocking(move |c| c.list_blocking(&path, options))
            .await
    }

    /// Creates a directory; with `parents`, also its missing parents (and an
    /// existing directory is fine).
    pub async fn mkdir(&self, path: &str, parents: bool) -> Result<Entry, CollectionError> {
        let path = CollectionPath::parse(path)?;
        self.blocking(move |c| c.mkdir_blocking(&path, parents))
            .await
    }

    /// Renames within the collection (replacing a file at `to`, like rename(2)).
    pub async fn rename(&self, from: &str, to: &str) -> Result<Entry, CollectionError> {
        let from = CollectionPath::parse(from)?;
        let to = CollectionPath::parse(to)?;
        self.blocking(move |c| c.rename_blocking(&from, &to)).await
    }

    /// Deletes a file, a symlink (not its target) or, with `recursive`, a tree.
    pub async fn delete(
        &self,
        path: &str,
        recursive: bool,
    ) -> Result<DeleteSummary, CollectionError> {
        let path = CollectionPath::parse(path)?;
        self.blocking(move |c| c.delete_blocking(&path, recursive, &DeleteControl::default()))
            .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Collection) -> Result<T, CollectionError> + Send + 'static,
    ) -> Result<T, CollectionError> {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || f(&this)).await {
            Ok(result) => result,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    pub(crate) fn stat_blocking(&self, path: &CollectionPath) -> Result<Entry, CollectionError> {
        let metadata = self
            .dir
            .symlink_metadata(path.as_relative())
            .map_err(|e| CollectionError::from_io("stat", path.to_string(), e))?;
        Ok(self.entry(path, &metadata))
    }

    fn entry(&self, path: &CollectionPath, metadata: &cap_std::fs::Metadata) -> Entry {
        let file_type = metadata.file_type();
        let kind = if file_type.is_symlink() {
            EntryKind::Symlink
        } else if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_file() {
            EntryKind::File
        } else {
            EntryKind::Other
        };
        let link_target = if kind == EntryKind::Symlink {
            self.dir
                .read_link_contents(path.as_relative())
                .ok()
                .map(|target| target.to_string_lossy().into_owned())
        } else {
            None
        };
        Entry {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/".to_string()),
            path: path.to_string(),
            kind,
            size: metadata.len(),
            modified_ms: metadata.mtime() * 1000 + metadata.mtime_nsec() / 1_000_000,
            permissions: metadata.mode() & 0o7777,
            uid: metadata.uid(),
            gid: metadata.gid(),
            link_target,
        }
    }

    pub(crate) fn list_blocking(
        &self,
        path: &CollectionPath,
        options: ListOptions,
    ) -> Result<Vec<Entry>, CollectionError> {
        let top = self.stat_blocking(path)?;
        let is_dir = match top.kind {
            EntryKind::Dir => true,
            // Like `ls`: a symlink given by name is followed, confined to the root.
            EntryKind::Symlink => self
                .dir
                .metadata(path.as_relative())
                .map_err(|e| CollectionError::from_io("list", path.to_string(), e))?
                .is_dir(),
            _ => false,
        };
        if !is_dir {
            return Ok(vec![top]);
        }
        let mut out = Vec::new();
        self.list_into(path, options.depth.max(1), options.max_entries, &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn list_into(
        &self,
        path: &CollectionPath,
        depth: u32,
        max_entries: usize,
        out: &mut Vec<Entry>,
    ) -> Result<(), CollectionError> {
        let read = self
            .dir
            .read_dir(path.as_relative())
            .map_err(|e| CollectionError::from_io("list", path.to_string(), e))?;
        for item in read {
            if out.len() >= max_entries {
                return Ok(());
            }
            let item = item.map_err(|e| CollectionError::from_io("list", path.to_string(), e))?;
            let child = path.join_name(&item.file_name());
            // The entry may vanish between readdir and stat: skip it quietly.
            let metadata = match self.dir.symlink_metadata(child.as_relative()) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(CollectionError::from_io("stat", child.to_string(), e)),
            };
            let entry = self.entry(&child, &metadata);
            let descend = entry.kind == EntryKind::Dir && depth > 1;
            out.push(entry);
            if descend {
                self.list_into(&child, depth - 1, max_entries, out)?;
            }
        }
        Ok(())
    }

    pub(crate) fn mkdir_blocking(
        &self,
        path: &CollectionPath,
        parents: bool,
    ) -> Result<Entry, CollectionError> {
        if path.is_root() && !parents {
            return Err(CollectionError::AlreadyExists {
                path: path.to_string(),
            });
        }
        let result = if parents {
            self.dir.create_dir_all(path.as_relative())
        } else {
            self.dir.create_dir(path.as_relative())
        };
        result.map_err(|e| CollectionError::from_io("mkdir", path.to_string(), e))?;
        let entry = self.stat_blocking(path)?;
        if entry.kind != EntryKind::Dir {
            return Err(CollectionError::NotADirectory {
                path: path.to_string(),
            });
        }
        Ok(entry)
    }

    pub(crate) fn rename_blocking(
        &self,
        from: &CollectionPath,
        to: &CollectionPath,
    ) -> Result<Entry, CollectionError> {
        if from.is_root() || to.is_root() {
            return Err(CollectionError::RootOperation { op: "rename" });
        }
        if let Err(e) = self
            .dir
            .rename(from.as_relative(), &self.dir, to.as_relative())
        {
            // ENOENT names neither side: say which one is missing.
            if e.kind() == std::io::ErrorKind::NotFound {
                let missing = if self.dir.symlink_metadata(from.as_relative()).is_err() {
                    from.clone()
                } else {
                    to.split_last()
                        .map(|(parent, _)| parent)
                        .unwrap_or_else(|| to.clone())
                };
                return Err(CollectionError::NotFound {
                    path: missing.to_string(),
                });
            }
            return Err(CollectionError::from_io(
                "rename",
                format!("{from} -> {to}"),
                e,
            ));
        }
        self.stat_blocking(to)
    }

    /// Deletes `path` (a directory only if empty, unless `recursive`),
    /// counting into `control` and stopping when it says so. Entries that
    /// vanish meanwhile count as deleted by someone else and are passed over.
    pub fn delete_blocking(
        &self,
        path: &CollectionPath,
        recursive: bool,
        control: &DeleteControl,
    ) -> Result<DeleteSummary, CollectionError> {
        if path.is_root() {
            return Err(CollectionError::RootOperation { op: "delete" });
        }
        control.check()?;
        let entry = self.stat_blocking(path)?;
        if entry.kind != EntryKind::Dir {
            self.dir
                .remove_file(path.as_relative())
                .map_err(|e| CollectionError::from_io("delete", path.to_string(), e))?;
            control.files.fetch_add(1, Ordering::Relaxed);
        } else if !recursive {
            self.dir
                .remove_dir(path.as_relative())
                .map_err(|e| CollectionError::from_io("delete", path.to_string(), e))?;
            control.directories.fetch_add(1, Ordering::Relaxed);
        } else {
            self.delete_tree(path, control)?;
        }
        Ok(control.summary())
    }

    /// Depth-first delete that never follows symlinks (they are unlinked).
    fn delete_tree(
        &self,
        path: &CollectionPath,
        control: &DeleteControl,
    ) -> Result<(), CollectionError> {
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        let read = match self.dir.read_dir(path.as_relative()) {
            Ok(read) => read,
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(CollectionError::from_io("delete", path.to_string(), e)),
        };
        for item in read {
            control.check()?;
            let item = item.map_err(|e| CollectionError::from_io("delete", path.to_string(), e))?;
            let child = path.join_name(&item.file_name());
            let is_dir = match item.file_type() {
                Ok(t) => t.is_dir(),
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(CollectionError::from_io("delete", child.to_string(), e)),
            };
            if is_dir {
                self.delete_tree(&child, control)?;
            } else {
                match self.dir.remove_file(child.as_relative()) {
                    Ok(()) => {
                        control.files.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if gone(&e) => {}
                    Err(e) => return Err(CollectionError::from_io("delete", child.to_string(), e)),
                }
            }
        }
        match self.dir.remove_dir(path.as_relative()) {
            Ok(()) => {
                control.directories.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if gone(&e) => Ok(()),
            Err(e) => Err(CollectionError::from_io("delete", path.to_string(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalizes_and_refuses_parent() {
        assert_eq!(CollectionPath::parse("/").unwrap(), CollectionPath::root());
        assert_eq!(
            CollectionPath::parse("//a/./b/").unwrap().as_bytes(),
            b"a/b"
        );
        assert_eq!(
            CollectionPath::parse("/a b/c").unwrap().to_string(),
            "/a b/c"
        );
        for bad in ["..", "a/../b", "/../etc", "a/..", "a\0b"] {
            let err = CollectionPath::parse(bad).unwrap_err();
            assert!(
                matches!(err, CollectionError::InvalidPath { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn split_last_gives_parent_and_name() {
        let p = CollectionPath::parse("a/b/c").unwrap();
        let (parent, name) = p.split_last().unwrap();
        assert_eq!(parent.as_bytes(), b"a/b");
        assert_eq!(name, "c");
        assert!(CollectionPath::root().split_last().is_none());
    }
}
