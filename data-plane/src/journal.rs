//! Restart markers: the destination's per-transfer journal.
//!
//! One append-only file per transfer in the agent's state directory,
//! `<state_dir>/<hash of transfer id>.journal`, holding length-prefixed
//! MessagePack records: a chunk was written (with its chaining value) and a
//! file was completed (renamed into place). Records are appended after the
//! data is written and flushed before the source is acknowledged, so after a
//! dropped connection or an agent restart the next attempt re-sends only
//! what was in flight. Chunks claimed by the journal are re-hashed from the
//! partial file before they are trusted (a crash may have lost page-cache
//! data). A torn last record is ignored. The journal is removed when the
//! transfer succeeds (or fails for good). A partial file is recorded before
//! it is created, so a transfer abandoned by the service (cancelled, past
//! its deadline) can have its partial files removed from the journal alone
//! ([`crate::discard_destination`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Chunk {
        path: Vec<u8>,
        size: u64,
        mtime_ns: i64,
        chunk_size: u64,
        index: u32,
        cv: [u8; 32],
    },
    File {
        path: Vec<u8>,
        size: u64,
        mtime_ns: i64,
    },
    /// A partial file is about to be created for `path`.
    Partial { path: Vec<u8> },
}

/// A file the source described as (size, mtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SourceVersion {
    pub size: u64,
    pub mtime_ns: i64,
}

#[derive(Debug, Default)]
pub(crate) struct PartialChunks {
    pub version: Option<(SourceVersion, u64)>,
    pub chunks: BTreeMap<u32, [u8; 32]>,
}

/// What earlier attempts completed.
#[derive(Debug, Default)]
pub(crate) struct Resume {
    pub done: HashMap<Vec<u8>, SourceVersion>,
    pub partial: HashMap<Vec<u8>, PartialChunks>,
}

pub(crate) struct Journal {
    path: PathBuf,
    writer: BufWriter<File>,
}

pub(crate) fn journal_path(state_dir: &Path, transfer_id: &str) -> PathBuf {
    let name = &blake3::hash(transfer_id.as_bytes()).to_hex()[..32];
    state_dir.join(format!("{name}.journal"))
}

impl Journal {
    /// Opens (creating) the journal of `transfer_id` and reads what it holds. Blocking.
    pub(crate) fn open(state_dir: &Path, transfer_id: &str) -> io::Result<(Journal, Resume)> {
        std::fs::create_dir_all(state_dir)?;
        let path = journal_path(state_dir, transfer_id);
        let mut resume = Resume::default();
        let mut valid_len = 0u64;
        if let Ok(mut file) = File::open(&path) {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            let mut at = 0usize;
            while at + 4 <= bytes.len() {
                let len =
                    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
                let Some(body) = bytes.get(at + 4..at + 4 + len) else {
                    break;
                };
                let Ok(record) = rmp_serde::from_slice::<Record>(body) else {
                    break;
                };
                apply(&mut resume, record);
                at += 4 + len;
            }
            valid_len = at as u64;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(false)
            .write(true)
            .truncate(false)
            .open(&path)?;
        // Drop a torn tail so new records follow the last good one.
        file.set_len(valid_len)?;
        let mut writer = BufWriter::with_capacity(64 << 10, file);
        io::Seek::seek(&mut writer, io::SeekFrom::Start(valid_len))?;
        Ok((Journal { path, writer }, resume))
    }

    pub(crate) fn chunk_done(
        &mut self,
        path: &[u8],
        version: SourceVersion,
        chunk_size: u64,
        index: u32,
        cv: [u8; 32],
    ) -> io::Result<()> {
        self.append(&Record::Chunk {
            path: path.to_vec(),
            size: version.size,
            mtime_ns: version.mtime_ns,
            chunk_size,
            index,
            cv,
        })
    }

    /// Records (and flushes) that a partial file for `path` is about to be created.
    pub(crate) fn partial_created(&mut self, path: &[u8]) -> io::Result<()> {
        self.append(&Record::Partial {
            path: path.to_vec(),
        })?;
        self.flush()
    }

    pub(crate) fn file_done(&mut self, path: &[u8], version: SourceVersion) -> io::Result<()> {
        self.append(&Record::File {
            path: path.to_vec(),
            size: version.size,
            mtime_ns: version.mtime_ns,
        })
    }

    fn append(&mut self, record: &Record) -> io::Result<()> {
        let body = rmp_serde::to_vec(record).map_err(io::Error::other)?;
        self.writer.write_all(&(body.len() as u32).to_le_bytes())?;
        self.writer.write_all(&body)
    }

    /// Hands buffered records to the kernel (survives a process restart).
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// Deletes the journal file; later appends go nowhere visible.
    pub(crate) fn remove_file(&mut self) -> io::Result<()> {
        let _ = self.writer.flush();
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn apply(resume: &mut Resume, record: Record) {
    match record {
        Record::Chunk {
            path,
            size,
            mtime_ns,
            chunk_size,
            index,
            cv,
        } => {
            let version = SourceVersion { size, mtime_ns };
            let partial = resume.partial.entry(path).or_default();
            if partial.version != Some((version, chunk_size)) {
                partial.version = Some((version, chunk_size));
                partial.chunks.clear();
            }
            partial.chunks.insert(index, cv);
        }
        Record::File {
            path,
            size,
            mtime_ns,
        } => {
            resume.partial.remove(&path);
            resume.done.insert(path, SourceVersion { size, mtime_ns });
        }
        Record::Partial { path } => {
            resume.partial.entry(path).or_default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_and_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let v = SourceVersion {
            size: 10,
            mtime_ns: 5,
        };
        {
            let (mut j, resume) = Journal::open(dir.path(), "t1").unwrap();
            assert!(resume.done.is_empty());
            j.chunk_done(b"big", v, 1024, 3, [7; 32]).unwrap();
            j.file_done(b"small\nname", v).unwrap();
            j.flush().unwrap();
        }
        // A torn record at the end.
        let path = journal_path(dir.path(), "t1");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (mut j, resume) = Journal::open(dir.path(), "t1").unwrap();
        assert_eq!(resume.done.get(&b"small\nname"[..]), Some(&v));
        assert_eq!(resume.partial[&b"big"[..]].chunks[&3], [7; 32]);
        j.file_done(b"big", v).unwrap();
        j.flush().unwrap();
        drop(j);
        let (mut j, resume) = Journal::open(dir.path(), "t1").unwrap();
        assert!(resume.partial.is_empty());
        assert_eq!(resume.done.len(), 2);
        // A partial file recorded before any of its chunks: known, nothing to resume.
        j.partial_created(b"next").unwrap();
        drop(j);
        let (j, resume) = Journal::open(dir.path(), "t1").unwrap();
        let next = &resume.partial[&b"next"[..]];
        assert!(next.version.is_none() && next.chunks.is_empty());
        let mut j = j;
        j.remove_file().unwrap();
        assert!(!path.exists());
    }
}
