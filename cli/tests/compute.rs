//! End to end through the real `lattice` binary: the compute core's fault
//! cases (agent killed mid-batch, worker killed mid-task, endpoint offline at
//! submission, service restarted mid-batch) and the CLI's contract.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lattice_client::Client;
use lattice_protocol::compute::{
    BatchStatus, BatchSubmit, FunctionRegister, FunctionSpec, TaskArgs, TaskState,
};
use lattice_protocol::{BatchId, EndpointId, FunctionId};
use lattice_service::testing::{
    postgres_addr, require_service, tcp_reachable, test_amqp_url, TestSchema,
};
use lattice_tests::platform::{DevOptions, DevPlatform};

const LATTICE: &str = env!("CARGO_BIN_EXE_lattice");
/// Hang guard for a whole batch.
const BATCH_TIMEOUT: Duration = Duration::from_secs(240);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn shell_function(client: &Client, command: &str) -> FunctionId {
    client
        .register_function(&FunctionRegister {
            name: None,
            description: None,
            spec: FunctionSpec::Shell {
                command: command.into(),
            },
        })
        .await
        .unwrap()
        .id
}

async fn endpoint_named(client: &Client, name: &str) -> EndpointId {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(e) = client
            .endpoints()
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.name == name)
        {
            return e.id;
        }
        assert!(
            Instant::now() < deadline,
            "endpoint {name} never registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn numbered_args(count: usize) -> Vec<TaskArgs> {
    (0..count)
        .map(|i| BTreeMap::from([("i".to_owned(), serde_json::json!(i))]))
        .collect()
}

async fn wait_until(
    client: &Client,
    batch: BatchId,
    done: impl Fn(&BatchStatus) -> bool,
) -> BatchStatus {
    let deadline = Instant::now() + BATCH_TIMEOUT;
    loop {
        let status = client.batch_status(batch).await.unwrap();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "batch {batch} stuck at {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every task of the batch succeeded exactly once with its own output.
async fn assert_each_task_ran_with_its_argument(client: &Client, batch: BatchId, count: usize) {
    let tasks = client
        .list_tasks(None, Some(batch), Some(10_000))
        .await
        .unwrap();
    assert_eq!(tasks.len(), count);
    for task in &tasks {
        assert_eq!(task.state, TaskState::Success, "{task:?}");
        let expected = format!("{}\n", task.args["i"]);
        assert_eq!(task.result.as_ref().unwrap().stdout, expected, "{task:?}");
    }
}

#[test]
fn agent_killed_mid_batch_loses_no_task() {
    let platform = DevPlatform::start(LATTICE.as_ref(), DevOptions::default());
    let rt = runtime();
    let client = platform.client();
    let mut agent = platform.agent("cluster", 2);
    rt.block_on(async {
        let endpoint = endpoint_named(&client, "cluster").await;
        let function = shell_function(&client, "echo {i}").await;
        let submitted = client
            .submit_batch(&BatchSubmit {
                function_id: function,
                endpoint_id: endpoint,
                tasks: numbered_args(2000),
                walltime_secs: None,
                max_retries: None,
                user_endpoint_config: None,
            })
            .await
            .unwrap();
        let partial = wait_until(&client, submitted.batch_id, |s| s.success >= 200).await;
        assert!(
            partial.finished() < 2000,
            "the batch finished before the kill: {partial:?}"
        );
        agent.kill();
        agent.restart();
        let status = wait_until(&client, submitted.batch_id, |s| s.finished() == s.total).await;
        assert_eq!((status.total, status.success), (2000, 2000), "{status:?}");
        assert_each_task_ran_with_its_argument(&client, submitted.batch_id, 2000).await;
    });
}

#[test]
fn a_task_whose_worker_dies_is_retried_on_another_worker() {
    let platform = DevPlatform::start(LATTICE.as_ref(), DevOptions::default());
    let rt = runtime();
    let client = platform.client();
    let _agent = platform.agent("pool", 2);
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("first-worker");
    rt.block_on(async {
        let endpoint = endpoint_named(&client, "pool").await;
        // The first attempt records its worker's pid and kills that worker;
        // the retry finds the marker and reports both pids.
        let function = shell_function(
            &client,
            "if [ -e {marker} ]; then echo \"$(cat {marker}) $PPID\"; else echo $PPID > {marker}; kill -9 $PPID; sleep 5; fi",
        )
        .await;
        let args = BTreeMap::from([("marker".to_owned(), serde_json::json!(marker.display().to_string()))]);
        let submitted = client
            .submit_task(&lattice_protocol::compute::TaskSubmit {
                function_id: function,
                endpoint_id: endpoint,
                args,
                walltime_secs: Some(60),
                max_retries: Some(2),
                user_endpoint_config: None,
            })
            .await
            .unwrap();
        let status = wait_until(&client, submitted.batch_id, |s| s.finished() == s.total).await;
        assert_eq!(status.success, 1, "{status:?}");
        let task = client.task(submitted.task_ids[0]).await.unwrap();
        let stdout = task.result.unwrap().stdout;
        let pids: Vec<&str> = stdout.split_whitespace().collect();
        assert_eq!(pids.len(), 2, "{stdout:?}");
        assert_ne!(pids[0], pids[1], "the retry ran on the worker that was killed");
    });
}

#[test]
fn tasks_submitted_while_the_endpoint_is_offline_run_when_it_returns() {
    let platform = DevPlatform::start(LATTICE.as_ref(), DevOptions::default());
    let rt = runtime();
    let client = platform.client();
    let mut agent = platform.agent("laptop", 1);
    rt.block_on(async {
        let endpoint = endpoint_named(&client, "laptop").await;
        agent.stop();
        let function = shell_function(&client, "echo {i}").await;
        let submitted = client
            .submit_batch(&BatchSubmit {
                function_id: function,
                endpoint_id: endpoint,
                tasks: numbered_args(20),
                walltime_secs: None,
                max_retries: None,
                user_endpoint_config: None,
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let info = client.endpoint(endpoint).await.unwrap();
        assert_eq!(
            info.status,
            lattice_protocol::compute::EndpointStatus::Offline
        );
        assert_eq!(info.waiting_tasks, 20);
        let status = client.batch_status(submitted.batch_id).await.unwrap();
        assert_eq!(status.waiting, 20);
        let show = platform.cli(&["endpoint", "show", "laptop"]);
        let text = String::from_utf8_lossy(&show.stdout);
        assert!(
            text.contains("offline") && text.contains("20 tasks are queued"),
            "{text}"
        );
    });
    let _agent = platform.agent("laptop", 1);
    rt.block_on(async {
        let batch = client.list_tasks(None, None, Some(1)).await.unwrap()[0].batch_id;
        wait_until(&client, batch, |s| s.success == 20).await;
        assert_each_task_ran_with_its_argument(&client, batch, 20).await;
    });
}

fn service_restart_during_a_batch(options: DevOptions) {
    let mut platform = DevPlatform::start(LATTICE.as_ref(), options);
    let rt = runtime();
    let _agent = platform.agent("hpc", 2);
    let (batch, count) = rt.block_on(async {
        let client = platform.client();
        let endpoint = endpoint_named(&client, "hpc").await;
        let function = shell_function(&client, "echo {i}").await;
        let submitted = client
            .submit_batch(&BatchSubmit {
                function_id: function,
                endpoint_id: endpoint,
                tasks: numbered_args(1000),
                walltime_secs: None,
                max_retries: None,
                user_endpoint_config: None,
            })
            .await
            .unwrap();
        wait_until(&client, submitted.batch_id, |s| s.success >= 100).await;
        (submitted.batch_id, 1000)
    });
    platform.restart();
    rt.block_on(async {
        let client = platform.client();
        let status = wait_until(&client, batch, |s| s.finished() == s.total).await;
        assert_eq!(status.success, count as u64, "{status:?}");
        assert_each_task_ran_with_its_argument(&client, batch, count).await;
    });
}

#[test]
fn service_restart_during_a_batch_loses_no_task_on_sqlite() {
    service_restart_during_a_batch(DevOptions::default());
}

#[test]
fn service_restart_during_a_batch_loses_no_task_on_postgres_and_rabbitmq() {
    let test = "service_restart_during_a_batch_loses_no_task_on_postgres_and_rabbitmq";
    if !require_service(test, tcp_reachable(&postgres_addr())) {
        return;
    }
    if !require_service(test, tcp_reachable(&lattice_service::testing::amqp_addr())) {
        return;
    }
    let rt = runtime();
    let schema = rt.block_on(TestSchema::create()).expect("create schema");
    service_restart_during_a_batch(DevOptions {
        local_workers: None,
        database_url: Some(schema.url_with_search_path()),
        amqp_url: Some(test_amqp_url()),
    });
    rt.block_on(schema.drop_schema()).expect("drop schema");
}

#[test]
fn cli_run_and_wait_report_through_exit_codes() {
    let platform = DevPlatform::start(
        LATTICE.as_ref(),
        DevOptions {
            local_workers: Some(2),
            ..Default::default()
        },
    );
    let ok = platform.cli(&["run", "--endpoint", "local", "--", "echo", "hello; $(id)"]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "hello; $(id)\n");

    let failed = platform.cli(&[
        "run",
        "--endpoint",
        "local",
        "--",
        "sh",
        "-c",
        "echo oops >&2; exit 3",
    ]);
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("oops"));

    let function = platform.cli(&[
        "function",
        "register",
        "--shell",
        "sleep {s}",
        "--format",
        "json",
        "--jmespath",
        "id",
    ]);
    let function: String = serde_json::from_slice(&function.stdout).unwrap();
    let submitted = platform.cli(&[
        "task",
        "submit",
        &function,
        "--endpoint",
        "local",
        "--arg",
        "s=30",
    ]);
    let task = String::from_utf8_lossy(&submitted.stdout).trim().to_owned();
    let timed_out = platform.cli(&["task", "wait", &task, "--timeout", "1"]);
    assert_eq!(timed_out.status.code(), Some(7), "{timed_out:?}");
    let cancelled = platform.cli(&["task", "cancel", &task]);
    assert_eq!(cancelled.status.code(), Some(0), "{cancelled:?}");
    let waited = platform.cli(&["task", "wait", &task]);
    assert_eq!(waited.status.code(), Some(6), "{waited:?}");

    let missing = platform.cli(&["task", "submit", &function, "--endpoint", "local"]);
    assert_eq!(missing.status.code(), Some(4), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("missing argument `s`"));

    let shown = platform.cli(&["task", "show", &task, "--format", "json"]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    for field in [
        "id",
        "state",
        "result",
        "error",
        "endpoint_id",
        "function_id",
        "submitted_at",
        "finished_at",
    ] {
        assert!(
            shown.get(field).is_some(),
            "task show lacks `{field}`: {shown}"
        );
    }
    assert_eq!(shown["state"], "cancelled");

    let whoami = platform.cli(&[
        "whoami",
        "--format",
        "json",
        "--jmespath",
        "identity.identity_provider",
    ]);
    assert_eq!(String::from_utf8_lossy(&whoami.stdout).trim(), "\"local\"");
}
