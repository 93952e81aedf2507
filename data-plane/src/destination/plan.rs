//! Sync planning: for one entry of the source's manifest, given what the
//! destination holds at its path and what the restart journal says, decide
//! whether the source skips it, sends it, or sends it unless the hashes
//! match; and check that the entry's path is one the source may send.
//!
//! Pure: no file-system access, no clock, no shared state. The caller
//! (`super::control`) stats, hashes and reads the journal, then carries the
//! decision out.

use crate::collection::CollectionPath;
use crate::error::{FaultCode, TransferError};
use crate::journal::{Resume, SourceVersion};
use crate::spec::SyncLevel;
use crate::wire::WireEntry;

/// What the destination holds at an entry's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Existing {
    pub is_dir: bool,
    pub len: u64,
    pub mtime_ns: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Nothing to send: `resumed` if an earlier attempt finished it (the
    /// journal says so), otherwise up to date at the sync level.
    Skip { resumed: bool },
    /// Sync level checksum and the same size: hash ours, the source sends
    /// unless its hash is the same.
    CompareHash,
    /// Send it; `resume`: the journal holds chunks of this very version in a
    /// partial file, which may be reused once re-verified.
    Send { resume: bool },
    /// A directory is where the source has a file: the attempt fails.
    DirectoryInTheWay,
}

/// Decides what to do with the file `rel` (relative to the transfer root),
/// which the source has at `source`.
pub(super) fn decide(
    rel: &[u8],
    source: SourceVersion,
    existing: Option<Existing>,
    sync_level: Option<SyncLevel>,
    resume: &Resume,
    chunk_size: u64,
) -> Decision {
    if existing.is_some_and(|e| e.is_dir) {
        return Decision::DirectoryInTheWay;
    }
    if resume.done.get(rel) == Some(&source) && existing.is_some_and(|e| e.len == source.size) {
        return Decision::Skip { resumed: true };
    }
    if let (Some(level), Some(existing)) = (sync_level, existing) {
        let same_size = existing.len == source.size;
        let up_to_date = match level {
            SyncLevel::Exists => true,
            SyncLevel::Size => same_size,
            // A destination at least as new as the source is kept.
            SyncLevel::Mtime => same_size && existing.mtime_ns >= source.mtime_ns,
            SyncLevel::Checksum => false,
        };
        if up_to_date {
            return Decision::Skip { resumed: false };
        }
        if level == SyncLevel::Checksum && same_size {
            return Decision::CompareHash;
        }
    }
    let resume = resume.partial.get(rel).is_some_and(|partial| {
        partial.version == Some((source, chunk_size)) && !partial.chunks.is_empty()
    });
    Decision::Send { resume }
}

/// The entry's path beneath the transfer root: a canonical relative path,
/// the root itself exactly for a single-file transfer.
pub(super) fn entry_target(
    root: &CollectionPath,
    recursive: bool,
    entry: &WireEntry,
) -> Result<CollectionPath, TransferError> {
    let not_allowed = || {
        TransferError::fatal(
            FaultCode::InvalidPath,
            format!(
                "the source sent a path that is not allowed: {:?}",
                String::from_utf8_lossy(&entry.path)
            ),
        )
    };
    let rel =
        CollectionPath::from_bytes(&entry.path).map_err(|e| TransferError::from_collection(&e))?;
    if rel.as_bytes() != entry.path.as_slice() || recursive == rel.is_root() {
        return Err(not_allowed());
    }
    Ok(root.join(&rel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::PartialChunks;

    const CHUNK: u64 = 1 << 20;
    const SOURCE: SourceVersion = SourceVersion {
        size: 100,
        mtime_ns: 5_000,
    };

    fn file(len: u64, mtime_ns: i64) -> Option<Existing> {
        Some(Existing {
            is_dir: false,
            len,
            mtime_ns,
        })
    }

    fn decide_at(level: Option<SyncLevel>, existing: Option<Existing>) -> Decision {
        decide(b"f", SOURCE, existing, level, &Resume::default(), CHUNK)
    }

    const SEND: Decision = Decision::Send { resume: false };
    const UP_TO_DATE: Decision = Decision::Skip { resumed: false };

    #[test]
    fn without_a_sync_level_everything_is_sent() {
        assert_eq!(decide_at(None, None), SEND);
        assert_eq!(decide_at(None, file(100, 5_000)), SEND);
    }

    #[test]
    fn a_missing_file_is_sent_at_every_level() {
        for level in [
            SyncLevel::Exists,
            SyncLevel::Size,
            SyncLevel::Mtime,
            SyncLevel::Checksum,
        ] {
            assert_eq!(decide_at(Some(level), None), SEND, "{level:?}");
        }
    }

    #[test]
    fn level_exists_keeps_any_file() {
        assert_eq!(decide_at(Some(SyncLevel::Exists), file(1, 0)), UP_TO_DATE);
    }

    #[test]
    fn level_size_keeps_a_file_of_the_same_size() {
        let level = Some(SyncLevel::Size);
        assert_eq!(decide_at(level, file(100, 0)), UP_TO_DATE);
        assert_eq!(decide_at(level, file(99, 5_000)), SEND);
    }

    #[test]
    fn level_mtime_keeps_a_destination_as_new_or_newer_of_the_same_size() {
        let level = Some(SyncLevel::Mtime);
        assert_eq!(decide_at(level, file(100, 5_000)), UP_TO_DATE);
        assert_eq!(decide_at(level, file(100, 9_000)), UP_TO_DATE, "newer");
        assert_eq!(decide_at(level, file(100, 4_999)), SEND, "older");
        assert_eq!(
            decide_at(level, file(101, 9_000)),
            SEND,
            "newer, other size"
        );
    }

    #[test]
    fn level_checksum_compares_hashes_only_at_the_same_size() {
        let level = Some(SyncLevel::Checksum);
        assert_eq!(decide_at(level, file(100, 0)), Decision::CompareHash);
        assert_eq!(decide_at(level, file(7, 5_000)), SEND);
    }

    #[test]
    fn a_directory_where_the_source_has_a_file_is_refused() {
        let dir = Some(Existing {
            is_dir: true,
            len: 100,
            mtime_ns: 5_000,
        });
        assert_eq!(decide_at(None, dir), Decision::DirectoryInTheWay);
        assert_eq!(
            decide_at(Some(SyncLevel::Exists), dir),
            Decision::DirectoryInTheWay
        );
    }

    #[test]
    fn the_journal_skips_what_an_earlier_attempt_finished() {
        let mut resume = Resume::default();
        resume.done.insert(b"f".to_vec(), SOURCE);
        let at = |existing| decide(b"f", SOURCE, existing, None, &resume, CHUNK);
        assert_eq!(at(file(100, 0)), Decision::Skip { resumed: true });
        // Finished, then removed or truncated by someone: sent again.
        assert_eq!(at(None), SEND);
        assert_eq!(at(file(3, 0)), SEND);
        // The source changed since: sent again.
        let newer = SourceVersion {
            mtime_ns: 6_000,
            ..SOURCE
        };
        assert_eq!(
            decide(b"f", newer, file(100, 0), None, &resume, CHUNK),
            SEND
        );
    }

    #[test]
    fn the_journal_resumes_a_partial_file_of_the_same_version_and_chunk_size() {
        let mut resume = Resume::default();
        let mut partial = PartialChunks {
            version: Some((SOURCE, CHUNK)),
            ..PartialChunks::default()
        };
        partial.chunks.insert(0, [1; 32]);
        resume.partial.insert(b"f".to_vec(), partial);
        let at = |source, chunk_size| decide(b"f", source, None, None, &resume, chunk_size);
        assert_eq!(at(SOURCE, CHUNK), Decision::Send { resume: true });
        assert_eq!(at(SOURCE, CHUNK * 2), SEND, "other chunk size");
        let changed = SourceVersion {
            size: 101,
            ..SOURCE
        };
        assert_eq!(at(changed, CHUNK), SEND, "the source changed");
        // A partial file without a chunk yet has nothing to reuse.
        resume
            .partial
            .get_mut(b"f".as_slice())
            .unwrap()
            .chunks
            .clear();
        assert_eq!(decide(b"f", SOURCE, None, None, &resume, CHUNK), SEND);
    }

    #[test]
    fn entries_must_be_canonical_paths_beneath_the_root() {
        let root = CollectionPath::parse("/dest").unwrap();
        let entry = |path: &[u8]| WireEntry {
            id: 1,
            path: path.to_vec(),
            dir: false,
            size: 0,
            mtime_ns: 0,
        };
        let target = entry_target(&root, true, &entry(b"a/b")).unwrap();
        assert_eq!(target.to_string(), "/dest/a/b");
        assert!(entry_target(&root, false, &entry(b"")).unwrap() == root);
        for (recursive, path) in [
            (true, b"".as_slice()),
            (false, b"a"),
            (true, b"../x"),
            (true, b"a//b"),
            (true, b"/abs"),
            (true, b"a/\0"),
        ] {
            let err = entry_target(&root, recursive, &entry(path)).unwrap_err();
            assert_eq!(err.code, FaultCode::InvalidPath, "{path:?}");
        }
    }
}
