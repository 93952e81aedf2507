//! Helpers for this crate's tests: block specs and fake scheduler commands.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::{BlockSpec, WorkerCommand};

/// A block of `nodes` x `workers_per_node` with a 30 minute walltime.
pub(crate) fn spec(block_id: &str, nodes: u32, workers_per_node: u32) -> BlockSpec {
    BlockSpec {
        block_id: block_id.to_owned(),
        nodes,
        workers_per_node,
        walltime: Duration::from_secs(1800),
        worker: WorkerCommand {
            program: "/opt/lattice/bin/lattice".into(),
            dispatcher: "login1:9000".into(),
            capacity: 1,
            scratch_dir: None,
        },
        worker_init: Vec::new(),
    }
}

/// Writes an executable `sh` script `dir/name` with `body`: a fake of a
/// scheduler command that prints what the real one prints.
pub(crate) fn fake_bin(dir: &Path, name: &str, body: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
