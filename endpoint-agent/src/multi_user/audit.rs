//! The audit log: one JSON line per task start and end, appended to a file
//! (mode 0600) that rotates by size (`audit.log` -> `audit.log.1` ... `.N`).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub time: String,
    /// `start` or `end`.
    pub event: String,
    pub identity_id: String,
    pub identity_username: String,
    /// Empty when the identity maps to no account.
    pub local_user: String,
    pub function_id: String,
    pub task_id: String,
    pub child_pid: Option<u32>,
    /// On `end`: `success`, `failed: ...` or `refused: ...`.
    pub outcome: Option<String>,
}

/// An append-only, size-rotated JSON-lines file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
}

impl AuditLog {
    /// Defaults: 10 MB per file, 5 rotated files kept.
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64, keep: u32) -> Self {
        Self {
            path: path.into(),
            max_bytes: max_bytes.max(1),
            keep,
            file: None,
            size: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let name = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            return std::fs::remove_file(&self.path);
        }
        let _ = std::fs::remove_file(name(self.keep));
        for n in (1..self.keep).rev() {
            let from = name(n);
            if from.exists() {
                std::fs::rename(&from, name(n + 1))?;
            }
        }
        std::fs::rename(&self.path, name(1))
    }

    /// Appends one record (rotating first if the line would overflow the
    /// file). Blocking; one write per line.
    pub fn write(&mut self, record: &AuditRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.open()?;
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let file = self.open()?;
        file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }
}

/// Now, as the audit log writes it.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(task: u32) -> AuditRecord {
        AuditRecord {
            time: now(),
            event: "start".into(),
            identity_id: "i1".into(),
            identity_username: "alice@uni.edu\n{\"forged\":1}".into(),
            local_user: "alice".into(),
            function_id: "f1".into(),
            task_id: format!("t{task}"),
            child_pid: Some(42),
            outcome: None,
        }
    }

    #[test]
    fn lines_are_json_and_hostile_strings_cannot_forge_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::new(dir.path().join("audit.log"), 1 << 20, 5);
        log.write(&record(1)).unwrap();
        log.write(&record(2)).unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let back: AuditRecord = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(
            back,
            AuditRecord {
                time: back.time.clone(),
                ..record(2)
            }
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(log.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let line_len = serde_json::to_vec(&record(1)).unwrap().len() as u64 + 1;
        let mut log = AuditLog::new(&path, line_len * 2, 2);
        for i in 0..10 {
            log.write(&record(i)).unwrap();
        }
        let count = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
        assert_eq!(count(&path), 2);
        assert_eq!(count(&dir.path().join("audit.log.1")), 2);
        assert_eq!(count(&dir.path().join("audit.log.2")), 2);
        assert!(!dir.path().join("audit.log.3").exists());
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(last.contains("\"t9\""));
        // A reopened log continues with the file's size.
        drop(log);
        let mut log = AuditLog::new(&path, line_len * 2, 2);
        log.write(&record(10)).unwrap();
        assert_eq!(count(&path), 1);
    }
}
