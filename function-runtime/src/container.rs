//! The `container` kind: an image and a command template, run through the
//! Docker Engine API (docker, or podman's `podman system service`).
//!
//! An invocation creates a container from the image with
//! `/bin/sh -c COMMAND` (the template rendered with shell-quoted argument
//! values, as for `shell`), the task's scratch directory bind-mounted at
//! `/work` (also the working directory), no network unless
//! [`ContainerRuntime::network`], and only `LATTICE_TASK_ID` and
//! `LATTICE_SCRATCH_DIR=/work` in the environment beyond the image's own.
//! Its stdout and stderr are followed while it runs (tails kept, an optional
//! hard cap). Walltime, cancellation and the output cap kill it; whatever
//! happens, the container is removed (a dropped invocation removes it from
//! a background task). The image must already be on the host: nothing is
//! pulled, and a missing image is a clear error on the task.
//!
//! Cost: the API client is made once per runtime (and its clones), on the
//! first container task; each invocation creates, starts, waits for and
//! removes a container (about half a second with podman).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Invocation, Outcome};
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{KillContainerOptions, LogsOptions, RemoveContainerOptions};
use bollard::{Docker, API_DEFAULT_VERSION};
use chrono::Utc;
use futures::StreamExt;
use lattice_protocol::compute::{FunctionSpec, TaskResult};
use lattice_protocol::template::render_shell;

use crate::output::{
    failed, outcome, output_limit_error, scratch_dir, timeout_error, Tail,
    DEFAULT_OUTPUT_TAIL_BYTES,
};

/// Environment variable naming the Docker API socket.
pub const CONTAINER_SOCKET_ENV: &str = "LATTICE_CONTAINER_SOCKET";
/// Sockets tried, in order, when none is configured.
pub const DEFAULT_SOCKETS: &[&str] = &["/run/podman/podman.sock", "/var/run/docker.sock"];
/// Label put on every container, valued with the task id.
pub const TASK_LABEL: &str = "lattice.task_id";
/// Longest wait for one API call that does not follow the container.
const API_TIMEOUT: Duration = Duration::from_secs(60);
/// How long output is still read after the container ended.
const LOG_DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Runs `container` functions.
#[derive(Clone)]
pub struct ContainerRuntime {
    /// Parent of the per-task scratch directories.
    pub scratch_root: PathBuf,
    /// The Docker API socket [default: `$LATTICE_CONTAINER_SOCKET`, then the
    /// first of [`DEFAULT_SOCKETS`] that exists]. Read on first use.
    pub socket: Option<PathBuf>,
    /// Bytes kept from the end of stdout, and separately of stderr.
    pub output_tail_bytes: usize,
    /// When set, a container that writes more than this many bytes to
    /// stdout and stderr together is killed: `output limit: ...`.
    pub max_output_bytes: Option<u64>,
    /// Give containers the default network instead of none.
    pub network: bool,
    /// Processes a container may have (`--pids-limit`) [default: 1024].
    pub pids_limit: Option<i64>,
    /// Memory a container may use, in bytes (`--memory`) [default: no limit].
    pub memory_bytes: Option<i64>,
    client: Arc<Mutex<Option<Client>>>,
}

#[derive(Clone)]
struct Client {
    docker: Docker,
    socket: PathBuf,
}

impl std::fmt::Debug for ContainerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerRuntime")
            .field("scratch_root", &self.scratch_root)
            .field("socket", &self.socket)
            .field("network", &self.network)
            .field("pids_limit", &self.pids_limit)
            .field("memory_bytes", &self.memory_bytes)
            .finish_non_exhaustive()
    }
}

/// Which socket to use: the configured one, else `env_value` (the value of
/// [`CONTAINER_SOCKET_ENV`]), else the first of [`DEFAULT_SOCKETS`] that
/// `exists`.
pub fn resolve_socket(
    configured: Option<&Path>,
    env_value: Option<&str>,
    exists: impl Fn(&Path) -> bool,
) -> Result<PathBuf, String> {
    if let Some(path) = configured {
        return Ok(path.to_owned());
    }
    if let Some(value) = env_value.map(str::trim).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(value.trim_start_matches("unix://")));
    }
    DEFAULT_SOCKETS
        .iter()
        .map(PathBuf::from)
        .find(|path| exists(path))
        .ok_or_else(|| {
            format!(
                "no Docker API socket: none of {} exists; start `podman system service` or docker, or set {CONTAINER_SOCKET_ENV}",
                DEFAULT_SOCKETS.join(", ")
            )
        })
}

impl ContainerRuntime {
    pub fn new(scratch_root: impl Into<PathBuf>) -> Self {
        Self {
            scratch_root: scratch_root.into(),
            socket: None,
            output_tail_bytes: DEFAULT_OUTPUT_TAIL_BYTES,
            max_output_bytes: None,
            network: false,
            pids_limit: Some(1024),
            memory_bytes: None,
            client: Arc::default(),
        }
    }

    fn client(&self) -> Result<Client, String> {
        let mut client = self.client.lock().expect("container client");
        if let Some(client) = client.as_ref() {
            return Ok(client.clone());
        }
        let socket = resolve_socket(
            self.socket.as_deref(),
            std::env::var(CONTAINER_SOCKET_ENV).ok().as_deref(),
            Path::exists,
        )?;
        let path = socket
            .to_str()
            .ok_or_else(|| format!("the socket path {} is not UTF-8", socket.display()))?;
        // Following a container can take as long as its walltime: the
        // client's own timeout is long, and short calls get API_TIMEOUT.
        let docker = Docker::connect_with_unix(path, 7 * 24 * 3600, API_DEFAULT_VERSION)
            .map_err(|e| format!("cannot reach the Docker API at {}: {e}", socket.display()))?;
        let made = Client { docker, socket };
        *client = Some(made.clone());
        Ok(made)
    }

    /// Whether the container runtime answers, and at which socket.
    pub async fn ping(&self) -> Result<PathBuf, String> {
        let client = self.client()?;
        match tokio::time::timeout(API_TIMEOUT, client.docker.ping()).await {
            Ok(Ok(_)) => Ok(client.socket),
            Ok(Err(e)) => Err(format!("no answer at {}: {e}", client.socket.display())),
            Err(_) => Err(format!(
                "no answer at {} within {API_TIMEOUT:?}",
                client.socket.display()
            )),
        }
    }

    /// Runs `task` to its end.
    pub async fn run(&self, task: &Invocation) -> Outcome {
        self.run_cancellable(task, std::future::pending())
            .await
            .unwrap_or_else(|| failed(Utc::now(), None, "cancelled".into()))
    }

    /// Runs `task` until it ends or `cancel` completes (`None`: cancelled;
    /// the container is killed and removed).
    pub async fn run_cancellable(
        &self,
        task: &Invocation,
        cancel: impl Future<Output = ()>,
    ) -> Option<Outcome> {
        let started_at = Utc::now();
        let FunctionSpec::Container { image, command } = &task.spec else {
            return Some(failed(
                started_at,
                None,
                format!(
                    "function kind {} is not run by the container runtime",
                    task.spec.kind()
                ),
            ));
        };
        let command = match render_shell(command, &task.args) {
            Ok(command) => command,
            Err(e) => {
                return Some(failed(
                    started_at,
                    None,
                    format!("invalid command template: {e}"),
                ))
            }
        };
        let client = match self.client() {
            Ok(client) => client,
            Err(e) => {
                return Some(failed(
                    started_at,
                    None,
                    format!("container runtime unavailable: {e}"),
                ))
            }
        };
        let scratch = scratch_dir(&self.scratch_root, task);
        if let Err(e) = tokio::fs::create_dir_all(&scratch).await {
            return Some(failed(
                started_at,
                None,
                format!(
                    "cannot create the scratch directory {}: {e}",
                    scratch.display()
                ),
            ));
        }
        let ran = self
            .run_container(&client, task, image, &command, &scratch, cancel)
            .await;
        if let Err(e) = tokio::fs::remove_dir_all(&scratch).await {
            tracing::warn!(task_id = %task.task_id, dir = %scratch.display(), "cannot remove the scratch directory: {e}");
        }
        let ran = match ran {
            Ok(ran) => ran,
            Err(error) => return Some(failed(started_at, None, error)),
        };
        let result = TaskResult {
            stdout: ran.stdout,
            stderr: ran.stderr,
            returncode: ran.status.and_then(|code| i32::try_from(code).ok()),
            ..Default::default()
        };
        let error = match ran.ending {
            Ending::Cancelled => return None,
            Ending::Timeout => Some(timeout_error(task.walltime_secs)),
            Ending::OutputLimit(limit) => Some(output_limit_error(limit)),
            Ending::Exited => match ran.status {
                Some(0) => None,
                Some(code) => Some(format!("command exited with status {code}")),
                None => Some("the container's exit status was lost".into()),
            },
        };
        Some(outcome(started_at, Some(result), error))
    }

    async fn run_container(
        &self,
        client: &Client,
        task: &Invocation,
        image: &str,
        command: &str,
        scratch: &Path,
        cancel: impl Future<Output = ()>,
    ) -> Result<Ran, String> {
        let docker = &client.docker;
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: Some(vec!["/bin/sh".into(), "-c".into(), command.to_owned()]),
            working_dir: Some("/work".into()),
            env: Some(vec![
                format!("LATTICE_TASK_ID={}", task.task_id),
                "LATTICE_SCRATCH_DIR=/work".into(),
            ]),
            labels: Some(HashMap::from([(
                TASK_LABEL.to_owned(),
                task.task_id.to_string(),
            )])),
            stop_timeout: Some(0),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{}:/work:rw", scratch.display())]),
                network_mode: Some(if self.network { "bridge" } else { "none" }.into()),
                pids_limit: self.pids_limit,
                memory: self.memory_bytes,
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = match tokio::time::timeout(API_TIMEOUT, docker.create_container(None, body)).await {
            Err(_) => {
                return Err(format!(
                    "container runtime unavailable: no answer at {} within {API_TIMEOUT:?}",
                    client.socket.display()
                ))
            }
            Ok(Err(DockerError::DockerResponseServerError {
                status_code: 404,
                message,
            })) => {
                return Err(format!(
                    "image `{image}` not found on this endpoint's container runtime ({message}): pull or build it on the endpoint's host first"
                ))
            }
            Ok(Err(e @ DockerError::DockerResponseServerError { .. })) => {
                return Err(format!("cannot create the container: {e}"))
            }
            Ok(Err(e)) => {
                return Err(format!(
                    "container runtime unavailable: cannot reach the Docker API at {}: {e}",
                    client.socket.display()
                ))
            }
            Ok(Ok(created)) => created,
        };
        let container = Container {
            docker: docker.clone(),
            id: created.id,
            removed: false,
        };
        let ran = follow(&container, self, task, cancel).await;
        container.remove().await;
        ran
    }
}

/// Starts the container and follows it to its end.
async fn follow(
    container: &Container,
    options: &ContainerRuntime,
    task: &Invocation,
    cancel: impl Future<Output = ()>,
) -> Result<Ran, String> {
    let docker = &container.docker;
    let id = container.id.as_str();
    match tokio::time::timeout(API_TIMEOUT, docker.start_container(id, None)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("cannot start the container: {e}")),
        Err(_) => {
            return Err(format!(
                "the container runtime did not start the container within {API_TIMEOUT:?}"
            ))
        }
    }
    let logs = docker.logs(
        id,
        Some(LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    );
    let wait = docker.wait_container(id, None);
    tokio::pin!(logs);
    tokio::pin!(wait);
    tokio::pin!(cancel);
    let walltime_expired = async {
        match task.walltime_secs {
            0 => std::future::pending().await,
            secs => tokio::time::sleep(Duration::from_secs(secs.into())).await,
        }
    };
    tokio::pin!(walltime_expired);
    let drain_deadline = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(drain_deadline);

    let mut out = Tail::new(options.output_tail_bytes);
    let mut err = Tail::new(options.output_tail_bytes);
    let mut written: u64 = 0;
    let mut logs_open = true;
    let mut status: Option<i64> = None;
    let ending = loop {
        if status.is_some() && !logs_open {
            break Ending::Exited;
        }
        if let Some(limit) = options.max_output_bytes.filter(|&limit| written > limit) {
            break Ending::OutputLimit(limit);
        }
        tokio::select! {
            chunk = logs.next(), if logs_open => match chunk {
                Some(Ok(LogOutput::StdOut { message })) => {
                    written += message.len() as u64;
                    out.push(&message);
                }
                Some(Ok(LogOutput::StdErr { message })) => {
                    written += message.len() as u64;
                    err.push(&message);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(task_id = %task.task_id, "lost the container's output: {e}");
                    logs_open = false;
                }
                None => logs_open = false,
            },
            waited = wait.next(), if status.is_none() => {
                status = Some(match waited {
                    Some(Ok(response)) => response.status_code,
                    // bollard reports a non-zero exit as an error.
                    Some(Err(DockerError::DockerContainerWaitError { code, .. })) => code,
                    Some(Err(e)) => return Err(format!("lost the container while waiting for it: {e}")),
                    None => return Err("lost the container while waiting for it".into()),
                });
                drain_deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + LOG_DRAIN_GRACE);
            }
            () = &mut walltime_expired, if status.is_none() => break Ending::Timeout,
            () = &mut cancel, if status.is_none() => break Ending::Cancelled,
            () = &mut drain_deadline, if status.is_some() => {
                tracing::debug!(task_id = %task.task_id, "the container's output did not end after it exited");
                break Ending::Exited;
            }
        }
    };
    Ok(Ran {
        status: if matches!(ending, Ending::Exited) {
            status
        } else {
            None
        },
        ending,
        stdout: out.to_lossy_string(),
        stderr: err.to_lossy_string(),
    })
}

/// A created container; removed (killed first) by [`Container::remove`], or
/// from a background task when dropped without it (an abandoned invocation).
struct Container {
    docker: Docker,
    id: String,
    removed: bool,
}

impl Container {
    async fn remove(mut self) {
        remove_container(&self.docker, &self.id).await;
        self.removed = true;
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let (docker, id) = (self.docker.clone(), std::mem::take(&mut self.id));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { remove_container(&docker, &id).await });
        } else {
            tracing::warn!(container = %id, "cannot remove an abandoned container outside a runtime");
        }
    }
}

async fn remove_container(docker: &Docker, id: &str) {
    // SIGKILL first: an init-less PID 1 (busybox sh) ignores SIGTERM.
    let kill = docker.kill_container(
        id,
        Some(KillContainerOptions {
            signal: "SIGKILL".into(),
        }),
    );
    let _ = tokio::time::timeout(API_TIMEOUT, kill).await;
    let remove = docker.remove_container(
        id,
        Some(RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        }),
    );
    match tokio::time::timeout(API_TIMEOUT, remove).await {
        Ok(Ok(()))
        | Ok(Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        })) => {}
        Ok(Err(e)) => tracing::warn!(container = %id, "cannot remove the container: {e}"),
        Err(_) => {
            tracing::warn!(container = %id, "the container runtime did not remove the container in time")
        }
    }
}

enum Ending {
    Exited,
    Timeout,
    OutputLimit(u64),
    Cancelled,
}

struct Ran {
    status: Option<i64>,
    ending: Ending,
    stdout: String,
    stderr: String,
}

#[cfg(test)]
mod tests;
