//! What every kind shares: captured output tails, the per-task scratch
//! directory, and building outcomes.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::{Invocation, Outcome, Status};
use chrono::{DateTime, Utc};
use lattice_protocol::compute::TaskResult;

/// Bytes of stdout and of stderr kept by default (the tail).
pub const DEFAULT_OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// The last `cap` bytes of a stream.
#[derive(Debug)]
pub(crate) struct Tail {
    cap: usize,
    bytes: VecDeque<u8>,
}

impl Tail {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            bytes: VecDeque::with_capacity(cap.min(8192)),
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        let chunk = &chunk[chunk.len().saturating_sub(self.cap)..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.cap);
        self.bytes.drain(..overflow);
        self.bytes.extend(chunk);
    }

    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.bytes.into()
    }

    pub(crate) fn to_lossy_string(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        if b.is_empty() {
            return String::from_utf8_lossy(a).into_owned();
        }
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    }
}

/// `SCRATCH_ROOT/<task id>`, the only directory a task is given.
pub(crate) fn scratch_dir(root: &Path, task: &Invocation) -> PathBuf {
    root.join(task.task_id.to_string())
}

/// The error text of a task that wrote too much.
pub(crate) fn output_limit_error(limit: u64) -> String {
    format!("output limit: the function wrote more than {limit} bytes to stdout and stderr")
}

/// The error text of a task that ran past its walltime.
pub(crate) fn timeout_error(walltime_secs: u32) -> String {
    format!("timeout: exceeded walltime of {walltime_secs} s")
}

/// A finished invocation: success when `error` is `None`.
pub(crate) fn outcome(
    started_at: DateTime<Utc>,
    result: Option<TaskResult>,
    error: Option<String>,
) -> Outcome {
    Outcome {
        status: if error.is_none() {
            Status::Success
        } else {
            Status::Failed
        },
        result,
        error,
        started_at,
        finished_at: Utc::now(),
    }
}

pub(crate) fn failed(
    started_at: DateTime<Utc>,
    result: Option<TaskResult>,
    error: String,
) -> Outcome {
    outcome(started_at, result, Some(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_bytes_across_chunks() {
        let mut tail = Tail::new(5);
        tail.push(b"abc");
        tail.push(b"defg");
        assert_eq!(tail.to_lossy_string(), "cdefg");
        assert_eq!(tail.into_vec(), b"cdefg");
        let mut tail = Tail::new(3);
        tail.push(b"0123456789");
        assert_eq!(tail.into_vec(), b"789");
    }
}
