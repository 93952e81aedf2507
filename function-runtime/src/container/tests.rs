//! The container runtime against a real podman (or docker) API, with the
//! `localbusybox` image that `.ci/runtime.sh` builds. Without them the
//! tests skip with the reason, or fail when `LATTICE_REQUIRE_SERVICES=1`.

use super::*;
use crate::testing::task;
use crate::Status;
use bollard::query_parameters::ListContainersOptions;
use serde_json::json;

const IMAGE: &str = "localbusybox";
/// Where `.ci/runtime.sh` starts podman's API.
const CI_SOCKET: &str = "/tmp/lattice-podman/podman.sock";

/// A runtime connected to a live container API with the test image, or
/// `None` (skip) with the reason printed.
async fn require_podman() -> Option<(tempfile::TempDir, ContainerRuntime)> {
    let dir = tempfile::tempdir().unwrap();
    let mut runtime = ContainerRuntime::new(dir.path());
    if std::env::var_os(CONTAINER_SOCKET_ENV).is_none() && Path::new(CI_SOCKET).exists() {
        runtime.socket = Some(CI_SOCKET.into());
    }
    let reason = match runtime.ping().await {
        Err(e) => format!("no container runtime ({e}); run .ci/runtime.sh"),
        Ok(socket) => {
            let docker = runtime.client().unwrap().docker;
            match docker.inspect_image(IMAGE).await {
                Ok(_) => return Some((dir, runtime)),
                Err(e) => format!(
                    "image {IMAGE} missing at {} ({e}); run .ci/runtime.sh",
                    socket.display()
                ),
            }
        }
    };
    if std::env::var("LATTICE_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("LATTICE_REQUIRE_SERVICES=1 but {reason}");
    }
    eprintln!("skipping a container test: {reason}");
    None
}

fn container_task(
    image: &str,
    command: &str,
    args: &[(&str, serde_json::Value)],
    walltime_secs: u32,
) -> Invocation {
    task(
        FunctionSpec::Container {
            image: image.into(),
            command: command.into(),
        },
        args,
        walltime_secs,
    )
}

/// Containers (running or not) labelled with `task`'s id.
async fn containers_of(runtime: &ContainerRuntime, task: &Invocation) -> usize {
    let docker = runtime.client().unwrap().docker;
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{TASK_LABEL}={}", task.task_id)],
    )]);
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn runs_the_command_with_the_scratch_dir_mounted() {
    let Some((dir, runtime)) = require_podman().await else {
        return;
    };
    let t = container_task(
        IMAGE,
        "echo {msg}; echo err >&2; pwd; echo data > /work/f; cat f; echo $LATTICE_TASK_ID; ls /sys/class/net",
        &[("msg", json!("it's $(not) run"))],
        60,
    );
    let outcome = runtime.run(&t).await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    let result = outcome.result.unwrap();
    assert_eq!(
        result.stdout,
        format!("it's $(not) run\n/work\ndata\n{}\nlo\n", t.task_id),
        "no network but loopback"
    );
    assert_eq!(result.stderr, "err\n");
    assert_eq!(result.returncode, Some(0));
    assert_eq!(containers_of(&runtime, &t).await, 0, "container removed");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "scratch removed"
    );
}

#[tokio::test]
async fn nonzero_exit_fails_with_the_status() {
    let Some((_dir, runtime)) = require_podman().await else {
        return;
    };
    let t = container_task(IMAGE, "echo out; exit 3", &[], 60);
    let outcome = runtime.run(&t).await;
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(
        outcome.error.as_deref(),
        Some("command exited with status 3")
    );
    let result = outcome.result.unwrap();
    assert_eq!(result.returncode, Some(3));
    assert_eq!(result.stdout, "out\n");
    assert_eq!(containers_of(&runtime, &t).await, 0);
}

#[tokio::test]
async fn walltime_kills_and_removes_the_container() {
    let Some((_dir, runtime)) = require_podman().await else {
        return;
    };
    let t = container_task(IMAGE, "echo started; sleep 60", &[], 1);
    let outcome = runtime.run(&t).await;
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    assert_eq!(
        outcome.error.as_deref(),
        Some("timeout: exceeded walltime of 1 s")
    );
    assert_eq!(containers_of(&runtime, &t).await, 0);
}

#[tokio::test]
async fn cancel_removes_the_container() {
    let Some((_dir, runtime)) = require_podman().await else {
        return;
    };
    let t = container_task(IMAGE, "sleep 60", &[], 0);
    let outcome = runtime
        .run_cancellable(&t, tokio::time::sleep(Duration::from_millis(1500)))
        .await;
    assert!(outcome.is_none());
    assert_eq!(containers_of(&runtime, &t).await, 0);
}

#[tokio::test]
async fn output_is_capped() {
    let Some((_dir, mut runtime)) = require_podman().await else {
        return;
    };
    runtime.output_tail_bytes = 100;
    let t = container_task(
        IMAGE,
        "head -c 300000 /dev/zero | tr '\\0' x; echo END",
        &[],
        60,
    );
    let outcome = runtime.run(&t).await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    let stdout = outcome.result.unwrap().stdout;
    assert_eq!(stdout.len(), 100);
    assert!(stdout.ends_with("xxxEND\n"), "{stdout}");

    runtime.max_output_bytes = Some(10_000);
    let t = container_task(IMAGE, "while true; do echo flood; done", &[], 60);
    let outcome = runtime.run(&t).await;
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(
        outcome.error.as_deref(),
        Some("output limit: the function wrote more than 10000 bytes to stdout and stderr")
    );
    assert_eq!(containers_of(&runtime, &t).await, 0);
}

#[tokio::test]
async fn a_missing_image_is_a_clear_error() {
    let Some((_dir, runtime)) = require_podman().await else {
        return;
    };
    let t = container_task("lattice-no-such-image:never", "true", &[], 60);
    let outcome = runtime.run(&t).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(
        error.starts_with("image `lattice-no-such-image:never` not found"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unreachable_runtime_is_a_clear_error() {
    // Needs no container runtime: the socket does not exist.
    let dir = tempfile::tempdir().unwrap();
    let mut runtime = ContainerRuntime::new(dir.path());
    runtime.socket = Some(dir.path().join("no-such.sock"));
    let t = container_task(IMAGE, "true", &[], 60);
    let outcome = runtime.run(&t).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(
        error.starts_with("container runtime unavailable: cannot reach the Docker API at "),
        "{error}"
    );
    assert!(error.contains("no-such.sock"), "{error}");
}

#[test]
fn socket_resolution_order() {
    let none = |_: &Path| false;
    let all = |_: &Path| true;
    let docker_only = |p: &Path| p == Path::new("/var/run/docker.sock");
    assert_eq!(
        resolve_socket(Some(Path::new("/c.sock")), Some("/e.sock"), all).unwrap(),
        PathBuf::from("/c.sock")
    );
    assert_eq!(
        resolve_socket(None, Some("unix:///e.sock"), none).unwrap(),
        PathBuf::from("/e.sock")
    );
    assert_eq!(
        resolve_socket(None, Some(" "), all).unwrap(),
        PathBuf::from("/run/podman/podman.sock")
    );
    assert_eq!(
        resolve_socket(None, None, docker_only).unwrap(),
        PathBuf::from("/var/run/docker.sock")
    );
    let error = resolve_socket(None, None, none).unwrap_err();
    assert!(error.contains(CONTAINER_SOCKET_ENV), "{error}");
}
