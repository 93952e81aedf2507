//! Runs ONE function invocation, of any kind: `shell` ([`ShellRuntime`]),
//! `wasm` ([`WasmRuntime`], wasmtime + WASI preview 1), `python`
//! ([`PythonRuntime`], persistent interpreters) and `container`
//! ([`ContainerRuntime`], the Docker Engine API of docker or podman).
//!
//! It owns, for each kind: turning a task's arguments into what the function
//! sees (shell-quoted template values, argv and stdin, ...), the per-task
//! scratch directory (`SCRATCH_ROOT/<task id>`, created before and removed
//! after), the limits (walltime, memory, output) and the captured output.
//! A task that hits a limit ends `failed` with an error naming it
//! (`timeout: ...`, `memory limit: ...`, `output limit: ...`); bad input
//! (an invalid module, a missing image, an unreachable container runtime) is
//! an error on that task, never a panic. What each kind does and does not
//! isolate is written down in `docs/runtime.md`.
//!
//! It must not know about queues, agents, the service or other invocations:
//! the worker builds one [`Runtime`] and calls [`Runtime::run_cancellable`]
//! for each task it is given, with an [`Invocation`] made from the task's
//! frame, and turns the [`Outcome`] into the frame it reports. The wire's
//! types (`lattice_protocol::frames`) are not this crate's API.

mod container;
mod invocation;
mod output;
pub mod python;
mod shell;
mod wasm;

use std::future::Future;
use std::path::PathBuf;

use lattice_protocol::compute::FunctionSpec;

pub use container::{
    resolve_socket, ContainerRuntime, CONTAINER_SOCKET_ENV, DEFAULT_SOCKETS, TASK_LABEL,
};
pub use invocation::{Invocation, Outcome, Status};
pub use output::DEFAULT_OUTPUT_TAIL_BYTES;
pub use python::PythonRuntime;
pub use shell::{ShellRuntime, DEFAULT_SHELL_ENV};
pub use wasm::{
    WasmCacheStats, WasmRuntime, DEFAULT_WASM_MEMORY_BYTES, DEFAULT_WASM_OUTPUT_BYTES, EPOCH_TICK,
};

/// Every kind's runtime, built once per worker and shared by all its tasks.
///
/// Cost: [`Runtime::new`] is cheap (no I/O). The expensive, long-lived parts
/// are made on first use and then reused by every task and every clone:
/// the wasmtime `Engine` with its pooling allocator, epoch ticker thread and
/// compiled-module cache (first Wasm task), the Docker API client (first
/// container task), the Python interpreters (first Python task). What a
/// single task needs (a wasmtime `Store`, a process, a container, a scratch
/// directory) is made per invocation and dropped after it. Clones are cheap
/// and share everything long-lived.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub shell: ShellRuntime,
    pub wasm: WasmRuntime,
    pub python: PythonRuntime,
    pub container: ContainerRuntime,
}

impl Runtime {
    /// Every kind with its defaults, scratch directories under `scratch_root`.
    pub fn new(scratch_root: impl Into<PathBuf>) -> Self {
        let scratch_root = scratch_root.into();
        Self {
            shell: ShellRuntime::new(scratch_root.clone()),
            wasm: WasmRuntime::new(scratch_root.clone()),
            python: PythonRuntime::default(),
            container: ContainerRuntime::new(scratch_root),
        }
    }

    /// The default scratch root: `$TMPDIR/lattice-scratch-<uid>`.
    pub fn default_scratch_root() -> PathBuf {
        ShellRuntime::default_scratch_root()
    }

    /// Runs `task` to its end.
    pub async fn run(&self, task: &Invocation) -> Outcome {
        self.run_cancellable(task, std::future::pending())
            .await
            .unwrap_or_else(|| output::failed(chrono::Utc::now(), None, "cancelled".into()))
    }

    /// Runs `task` with the runtime of its kind until it ends or `cancel`
    /// completes; `None` when it was cancelled (everything it started is
    /// stopped and removed, and nothing is reported).
    pub async fn run_cancellable(
        &self,
        task: &Invocation,
        cancel: impl Future<Output = ()>,
    ) -> Option<Outcome> {
        match &task.spec {
            FunctionSpec::Shell { .. } => self.shell.run_cancellable(task, cancel).await,
            FunctionSpec::Wasm { .. } => self.wasm.run_cancellable(task, cancel).await,
            FunctionSpec::Python { .. } => self.python.run_cancellable(task, cancel).await,
            FunctionSpec::Container { .. } => self.container.run_cancellable(task, cancel).await,
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the unit tests of every kind.

    use crate::Invocation;
    use lattice_protocol::compute::{FunctionSpec, TaskArgs};
    use lattice_protocol::{FunctionId, TaskId};

    pub(crate) fn task(
        spec: FunctionSpec,
        args: &[(&str, serde_json::Value)],
        walltime_secs: u32,
    ) -> Invocation {
        Invocation {
            task_id: TaskId::new(),
            function_id: FunctionId::new(),
            spec,
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<TaskArgs>(),
            walltime_secs,
        }
    }

    /// Whether `pid` is a live (not zombie) process.
    pub(crate) fn alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;

    #[tokio::test]
    async fn dispatches_on_the_kind() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(dir.path());
        let shell = testing::task(
            FunctionSpec::Shell {
                command: "echo shell".into(),
            },
            &[],
            10,
        );
        let outcome = runtime.run(&shell).await;
        assert_eq!(outcome.status, Status::Success, "{outcome:?}");
        assert_eq!(outcome.result.unwrap().stdout, "shell\n");

        // Not a module at all: the wasm runtime says so.
        let wasm = testing::task(
            FunctionSpec::Wasm {
                module: "AAAA".into(),
            },
            &[],
            10,
        );
        let outcome = runtime.run(&wasm).await;
        assert_eq!(outcome.status, Status::Failed);
        assert!(
            outcome
                .error
                .as_deref()
                .unwrap()
                .starts_with("invalid wasm module"),
            "{outcome:?}"
        );
    }
}
