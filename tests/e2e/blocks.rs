//! Worker blocks end to end: the service in-process on a real socket, an
//! endpoint registered through the API, the agent in-process with a provider
//! whose workers are the real `lattice` binary, and (for Slurm) the real
//! one-node cluster that `.ci/slurm.sh` starts.
//!
//! Timeouts here only guard against hangs; nothing asserts on durations.
//! The Slurm test prints (does not assert) the time to the first result
//! with a cold block.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lattice_endpoint_agent::scheduler::local::LocalConfig;
use lattice_endpoint_agent::scheduler::slurm::SlurmConfig;
use lattice_endpoint_agent::scheduler::{ProviderConfig, StrategyConfig};
use lattice_endpoint_agent::{
    run_agent, AgentConfig, Credentials, EndpointCredential, ProviderSettings, WorkerLaunch,
};
use lattice_protocol::compute::{BlockPhase, EndpointInfo, TaskInfo, TaskState};
use lattice_protocol::{EndpointId, TaskId};
use lattice_tests::{
    lattice_bin, require_service, slurm_available, slurm_conf, ServiceListener, TestService,
};
use serde_json::{json, Value};

/// Hang guard for anything that waits on a scheduler.
const HANG_GUARD: Duration = Duration::from_secs(180);

struct Scene {
    service: TestService,
    token: String,
    bin: PathBuf,
}

impl Scene {
    async fn start(bin: PathBuf) -> Self {
        let service = ServiceListener::bind().await.start(|_| {}).await;
        let (_, token) = lattice_service::auth::tokens::bootstrap_local_identity(
            &service.state.store,
            "alice",
            chrono::Duration::hours(1),
        )
        .await
        .expect("a local identity");
        Self {
            service,
            token: token.access_token,
            bin,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let answer = self.service.post_json(path, Some(&self.token), &body).await;
        assert!(answer.status.is_success(), "POST {path}: {answer:?}");
        answer.body
    }

    async fn shell_function(&self, command: &str) -> String {
        let body = self
            .post(
                "/v1/functions",
                json!({"spec": {"kind": "shell", "command": command}}),
            )
            .await;
        body["id"].as_str().expect("function id").to_owned()
    }

    async fn submit(&self, function: &str, endpoint: EndpointId, count: usize) -> Vec<TaskId> {
        let body = self
            .post(
                "/v1/batches",
                json!({"function_id": function, "endpoint_id": endpoint, "tasks": vec![json!({}); count]}),
            )
            .await;
        serde_json::from_value(body["task_ids"].clone()).expect("task ids")
    }

    async fn tasks(&self, ids: &[TaskId]) -> Vec<TaskInfo> {
        let body = self
            .post("/v1/tasks/status", json!({"task_ids": ids}))
            .await;
        serde_json::from_value(body).expect("tasks")
    }

    async fn endpoint(&self, id: EndpointId) -> EndpointInfo {
        let path = format!("/v1/endpoints/{id}");
        let answer = self.service.get(&path, Some(&self.token)).await;
        assert!(answer.status.is_success(), "GET {path}: {answer:?}");
        serde_json::from_value(answer.body).expect("an endpoint")
    }

    /// Registers an endpoint through the API and runs its agent in-process.
    async fn agent(&self, name: &str, provider: ProviderConfig, strategy: StrategyConfig) -> Agent {
        let body = self.post("/v1/endpoints", json!({"name": name})).await;
        let endpoint_id: EndpointId =
            serde_json::from_value(body["endpoint"]["id"].clone()).expect("endpoint id");
        let dir = tempfile::tempdir().expect("agent dir");
        let credential = EndpointCredential {
            endpoint_id,
            agent_secret: body["agent_secret"].as_str().expect("secret").to_owned(),
            service_url: self.service.url.to_string(),
        };
        let mut config = AgentConfig::new(Credentials::Preset(credential), dir.path());
        config.workers = 0;
        config.launch = WorkerLaunch::Processes {
            command: Some(self.bin.clone()),
        };
        config.heartbeat_interval = Duration::from_millis(500);
        config.shutdown_grace = Duration::from_secs(5);
        config.provider = Some(ProviderSettings {
            provider,
            strategy,
            dispatcher_address: None,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_agent(config, async move {
            let _ = stopped.await;
        }));
        Agent {
            endpoint_id,
            stop: Some(stop),
            task: Some(task),
            dir,
        }
    }

    /// Waits until every task is final; returns them.
    async fn finished(&self, ids: &[TaskId]) -> Vec<TaskInfo> {
        wait_for("the tasks to finish", || async {
            let tasks = self.tasks(ids).await;
            tasks.iter().all(|t| t.state.is_final()).then_some(tasks)
        })
        .await
    }
}

struct Agent {
    endpoint_id: EndpointId,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), lattice_endpoint_agent::AgentError>>>,
    dir: tempfile::TempDir,
}

impl Agent {
    /// Stops the agent (it cancels its blocks) and waits for it.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(HANG_GUARD, task)
                .await
                .expect("the agent stops")
                .expect("agent task")
                .expect("agent ran cleanly");
        }
    }

    fn block_dir(&self) -> PathBuf {
        self.dir.path().join("blocks")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn strategy(max_blocks: u32, max_idletime_secs: u64) -> StrategyConfig {
    StrategyConfig {
        init_blocks: 0,
        min_blocks: 0,
        max_blocks,
        nodes_per_block: 1,
        workers_per_node: 1,
        max_idletime_secs,
        poll_interval_secs: 1,
    }
}

fn bin_or_skip(test: &str) -> Option<PathBuf> {
    match lattice_bin() {
        Ok(bin) => Some(bin),
        Err(reason) => {
            require_service(test, Err(format!("the lattice binary: {reason}")));
            None
        }
    }
}

/// `squeue`'s state of a job, `None` once it left the queue.
fn squeue_state(job: &str) -> Option<String> {
    let output = Command::new("squeue")
        .args(["-h", "-j", job, "-o", "%T"])
        .env("SLURM_CONF", slurm_conf())
        .output()
        .expect("run squeue");
    let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !state.is_empty()).then_some(state)
}

/// A block's job is gone from the queue (or shown finished).
fn left_queue(job: &str) -> bool {
    match squeue_state(job) {
        None => true,
        Some(state) => {
            !["PENDING", "RUNNING", "CONFIGURING", "COMPLETING"].contains(&state.as_str())
        }
    }
}

#[tokio::test]
async fn local_blocks_scale_out_run_tasks_and_scale_in() {
    let test = "local_blocks_scale_out_run_tasks_and_scale_in";
    let Some(bin) = bin_or_skip(test) else { return };
    let scene = Scene::start(bin).await;
    let agent = scene
        .agent(
            "local-blocks",
            ProviderConfig::Local(LocalConfig::default()),
            strategy(2, 2),
        )
        .await;
    let function = scene
        .shell_function("sleep 1; echo block=$LATTICE_BLOCK_ID")
        .await;
    let ids = scene.submit(&function, agent.endpoint_id, 6).await;

    // Two blocks at once: tasks wait with no free slot, so a second block comes.
    let mut seen_blocks = std::collections::BTreeSet::new();
    let deadline = Instant::now() + HANG_GUARD;
    while seen_blocks.len() < 2 {
        let info = scene.endpoint(agent.endpoint_id).await;
        for block in info
            .blocks
            .iter()
            .filter(|b| b.state == BlockPhase::Running)
        {
            seen_blocks.insert(block.id.clone());
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: two blocks running: {:?}",
            info.blocks
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tasks = scene.finished(&ids).await;
    for task in &tasks {
        assert_eq!(task.state, TaskState::Success, "{task:?}");
        let stdout = &task.result.as_ref().expect("result").stdout;
        assert!(
            stdout.starts_with("block=b"),
            "the task ran in a block: {stdout:?}"
        );
    }
    // Idle for max_idletime: both blocks are cancelled.
    let info = wait_for("the idle blocks to be cancelled", || async {
        let info = scene.endpoint(agent.endpoint_id).await;
        let active = info
            .blocks
            .iter()
            .any(|b| matches!(b.state, BlockPhase::Pending | BlockPhase::Running));
        (!active && info.workers == 0).then_some(info)
    })
    .await;
    assert!(
        info.blocks.iter().all(|b| b.state == BlockPhase::Cancelled),
        "{:?}",
        info.blocks
    );
    assert_eq!(info.provider_error, None);
    agent.stop().await;
}

#[tokio::test]
async fn local_block_that_cannot_start_workers_is_reported_on_tasks() {
    let test = "local_block_that_cannot_start_workers_is_reported_on_tasks";
    let Some(bin) = bin_or_skip(test) else { return };
    let scene = Scene::start(bin).await;
    let broken = LocalConfig {
        worker_init: vec!["echo 'module: python/9.9 not found' >&2; exit 3".into()],
        script_dir: None,
    };
    let agent = scene
        .agent(
            "broken-local",
            ProviderConfig::Local(broken),
            strategy(1, 60),
        )
        .await;
    let function = scene.shell_function("true").await;
    let ids = scene.submit(&function, agent.endpoint_id, 1).await;
    let task = wait_for("the task to carry the endpoint's problem", || async {
        let task = scene.tasks(&ids).await.remove(0);
        provider_problem(&task).is_some().then_some(task)
    })
    .await;
    assert!(
        !task.state.is_final(),
        "the task waits, it is not failed: {task:?}"
    );
    let problem = task.endpoint_problem.unwrap();
    assert!(
        problem.contains("module: python/9.9 not found"),
        "{problem}"
    );
    let info = scene.endpoint(agent.endpoint_id).await;
    assert!(info.provider_error.unwrap().contains("exit status 3"));
    agent.stop().await;
}

/// Issue #18: `source ~/venv/bin/activate` (the template's example then)
/// under the local block's /bin/sh printed `source: not found` into the
/// block's log only, and the workers started without the venv. Now the
/// block stops at that line, and its stderr reaches the endpoint and the
/// waiting task, which is not failed.
#[tokio::test]
async fn local_block_whose_worker_init_fails_reports_its_stderr_on_tasks() {
    let test = "local_block_whose_worker_init_fails_reports_its_stderr_on_tasks";
    let Some(bin) = bin_or_skip(test) else { return };
    let scene = Scene::start(bin).await;
    let venv = tempfile::tempdir().expect("venv dir");
    std::fs::create_dir_all(venv.path().join("bin")).expect("venv/bin");
    std::fs::write(
        venv.path().join("bin/activate"),
        "VIRTUAL_ENV=/venv\nexport VIRTUAL_ENV\n",
    )
    .expect("activate");
    let past_init = venv.path().join("past-init");
    let activate = format!("source {}/bin/activate", venv.path().display());
    let config = LocalConfig {
        worker_init: vec![activate.clone(), format!("touch {}", past_init.display())],
        script_dir: None,
    };
    let agent = scene
        .agent("venv-local", ProviderConfig::Local(config), strategy(1, 60))
        .await;
    let function = scene.shell_function("true").await;
    let ids = scene.submit(&function, agent.endpoint_id, 1).await;
    let task = wait_for(
        "the task to carry the endpoint's problem (or to run)",
        || async {
            let task = scene.tasks(&ids).await.remove(0);
            (provider_problem(&task).is_some() || task.state.is_final()).then_some(task)
        },
    )
    .await;
    assert!(
        !task.state.is_final(),
        "no worker may start when worker_init fails; the task waits: {task:?}"
    );
    let problem = task.endpoint_problem.unwrap();
    let failed_line = format!("worker_init line 1 (`{activate}`) failed with exit status 127: ");
    for words in [
        failed_line.as_str(),
        "source: not found",
        "write `. FILE` instead",
    ] {
        assert!(problem.contains(words), "{words:?} in {problem}");
    }
    let info = scene.endpoint(agent.endpoint_id).await;
    let error = info.provider_error.expect("provider error");
    assert!(
        error.contains(&failed_line) && error.contains("source: not found"),
        "{error}"
    );
    assert_eq!(info.workers, 0, "no worker connected");
    let block = info
        .blocks
        .iter()
        .find(|b| b.state == BlockPhase::Failed)
        .expect("a failed block");
    assert!(
        block
            .message
            .as_deref()
            .unwrap()
            .contains("source: not found"),
        "{block:?}"
    );
    assert!(
        !past_init.exists(),
        "the line after the failing one did not run"
    );
    agent.stop().await;
}

fn slurm_or_skip(test: &str) -> Option<PathBuf> {
    if !require_service(test, slurm_available().map_err(|e| format!("Slurm: {e}"))) {
        return None;
    }
    // The provider runs sbatch & co. with this process's environment.
    if std::env::var_os("SLURM_CONF").is_none() {
        std::env::set_var("SLURM_CONF", slurm_conf());
    }
    bin_or_skip(test)
}

fn slurm(account: &str) -> ProviderConfig {
    ProviderConfig::Slurm(SlurmConfig {
        account: Some(account.to_owned()),
        walltime: "00:10:00".into(),
        ..SlurmConfig::default()
    })
}

#[tokio::test]
async fn slurm_blocks_run_tasks_in_jobs_scale_out_and_in() {
    let test = "slurm_blocks_run_tasks_in_jobs_scale_out_and_in";
    let Some(bin) = slurm_or_skip(test) else {
        return;
    };
    let scene = Scene::start(bin).await;
    let agent = scene
        .agent("slurm-blocks", slurm("lattice"), strategy(2, 3))
        .await;
    let function = scene
        .shell_function("sleep 2; echo job=$SLURM_JOB_ID block=$LATTICE_BLOCK_ID")
        .await;

    let submitted = Instant::now();
    let ids = scene.submit(&function, agent.endpoint_id, 6).await;
    let first = wait_for("a first result", || async {
        let tasks = scene.tasks(&ids).await;
        tasks.into_iter().find(|t| t.state.is_final())
    })
    .await;
    eprintln!(
        "MEASURED slurm cold block: first result {:.2} s after submission",
        submitted.elapsed().as_secs_f64()
    );
    assert_eq!(first.state, TaskState::Success, "{first:?}");

    // Scale out: while tasks wait, a second block joins; squeue shows both jobs.
    let mut jobs = std::collections::BTreeSet::new();
    let deadline = Instant::now() + HANG_GUARD;
    while jobs.len() < 2 {
        let info = scene.endpoint(agent.endpoint_id).await;
        for block in &info.blocks {
            if let (BlockPhase::Running, Some(job)) = (block.state, &block.job_id) {
                if squeue_state(job).as_deref() == Some("RUNNING") {
                    jobs.insert(job.clone());
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: two slurm jobs running: {:?}",
            info.blocks
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let tasks = scene.finished(&ids).await;
    for task in &tasks {
        assert_eq!(task.state, TaskState::Success, "{task:?}");
        let stdout = &task.result.as_ref().expect("result").stdout;
        let job = stdout
            .trim()
            .strip_prefix("job=")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("");
        assert!(
            !job.is_empty() && job.bytes().all(|b| b.is_ascii_digit()),
            "the task ran inside a Slurm job: {stdout:?}"
        );
        assert!(
            jobs.contains(job),
            "job {job} is one of the blocks {jobs:?}"
        );
    }

    // Scale in: idle past max_idletime, the jobs leave the queue.
    let info = wait_for("the idle slurm jobs to be cancelled", || async {
        let info = scene.endpoint(agent.endpoint_id).await;
        let reported_gone = info
            .blocks
            .iter()
            .all(|b| !matches!(b.state, BlockPhase::Pending | BlockPhase::Running));
        (reported_gone && jobs.iter().all(|job| left_queue(job))).then_some(info)
    })
    .await;
    assert_eq!(info.provider_error, None);
    assert!(
        info.blocks.iter().all(|b| b.state == BlockPhase::Cancelled),
        "{:?}",
        info.blocks
    );
    let script = std::fs::read_dir(agent.block_dir())
        .expect("block dir")
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "sbatch"))
        .expect("a batch script");
    let text = std::fs::read_to_string(script.path()).unwrap();
    assert!(text.contains("#SBATCH --account=lattice"), "{text}");
    agent.stop().await;
}

#[tokio::test]
async fn slurm_invalid_account_surfaces_on_the_endpoint_and_its_tasks() {
    let test = "slurm_invalid_account_surfaces_on_the_endpoint_and_its_tasks";
    let Some(bin) = slurm_or_skip(test) else {
        return;
    };
    let scene = Scene::start(bin).await;
    let agent = scene
        .agent(
            "slurm-bad-account",
            slurm("no-such-account"),
            strategy(1, 60),
        )
        .await;
    let function = scene.shell_function("echo never").await;
    let ids = scene.submit(&function, agent.endpoint_id, 2).await;
    let tasks = wait_for("the tasks to carry sbatch's error", || async {
        let tasks = scene.tasks(&ids).await;
        tasks
            .iter()
            .all(|t| provider_problem(t).is_some())
            .then_some(tasks)
    })
    .await;
    for task in &tasks {
        assert!(!task.state.is_final(), "{task:?}");
        let problem = task.endpoint_problem.as_deref().unwrap();
        assert!(
            problem.contains("sbatch: error: Batch job submission failed: Invalid account"),
            "{problem}"
        );
    }
    let info = scene.endpoint(agent.endpoint_id).await;
    let error = info.provider_error.expect("provider error");
    assert!(error.contains("Invalid account"), "{error}");
    let failed = info
        .blocks
        .iter()
        .find(|b| b.state == BlockPhase::Failed)
        .expect("a failed block");
    assert_eq!(failed.job_id, None, "refused at submission");
    assert!(failed
        .message
        .as_deref()
        .unwrap()
        .contains("Invalid account"));
    agent.stop().await;
}

/// The task's endpoint problem once it is the provider's, not the agent
/// being offline: until the agent first connects, a waiting task already
/// says "has never connected", which is not what these tests wait for.
fn provider_problem(task: &TaskInfo) -> Option<&str> {
    task.endpoint_problem
        .as_deref()
        .filter(|p| p.contains("cannot start workers"))
}

/// A worker_init line that fails in the batch script ends the job before
/// `srun` starts any worker; the line and its stderr (from the report the
/// script leaves in the block dir) reach the endpoint and the waiting
/// tasks, not just the job's output file.
#[tokio::test]
async fn slurm_worker_init_failure_surfaces_its_stderr_on_the_endpoint_and_its_tasks() {
    let test = "slurm_worker_init_failure_surfaces_its_stderr_on_the_endpoint_and_its_tasks";
    let Some(bin) = slurm_or_skip(test) else {
        return;
    };
    let scene = Scene::start(bin).await;
    let missing = tempfile::tempdir().expect("dir");
    let activate = format!(". {}/venv/bin/activate", missing.path().display());
    let config = ProviderConfig::Slurm(SlurmConfig {
        account: Some("lattice".to_owned()),
        walltime: "00:10:00".into(),
        worker_init: vec!["export OMP_NUM_THREADS=1".into(), activate.clone()],
        ..SlurmConfig::default()
    });
    let agent = scene.agent("slurm-bad-init", config, strategy(1, 60)).await;
    let function = scene.shell_function("echo never").await;
    let ids = scene.submit(&function, agent.endpoint_id, 2).await;
    let failed_line = format!("worker_init line 2 (`{activate}`) failed with exit status 1: ");
    let tasks = wait_for("the tasks to carry the worker_init failure", || async {
        let tasks = scene.tasks(&ids).await;
        let reported = |t: &TaskInfo| t.state.is_final() || provider_problem(t).is_some();
        tasks.iter().all(reported).then_some(tasks)
    })
    .await;
    for task in &tasks {
        assert!(!task.state.is_final(), "{task:?}");
        let problem = task.endpoint_problem.as_deref().unwrap();
        assert!(
            problem.contains("slurm job FAILED")
                && problem.contains(&failed_line)
                && problem.contains("venv/bin/activate: No such file or directory"),
            "{problem}"
        );
    }
    let info = scene.endpoint(agent.endpoint_id).await;
    let error = info.provider_error.expect("provider error");
    assert!(error.contains(&failed_line), "{error}");
    let block = info
        .blocks
        .iter()
        .find(|b| b.state == BlockPhase::Failed)
        .expect("a failed block");
    let job = block.job_id.as_deref().expect("it was submitted");
    let output = std::fs::read_dir(agent.block_dir())
        .expect("block dir")
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(&format!(".{job}.out"))
        })
        .expect("the job's output file");
    let output = std::fs::read_to_string(output.path()).unwrap();
    assert!(
        output.contains("No such file or directory")
            && output.contains("lattice: worker_init line 2"),
        "the job's output has it too: {output}"
    );
    agent.stop().await;
}

/// `bench/slurm.sh` runs this in release: a cold block's first result, then
/// 1,000 short tasks through one warm block of 2 workers. Prints, asserts
/// only that the tasks succeeded.
#[tokio::test]
#[ignore = "benchmark: run bench/slurm.sh"]
async fn bench_slurm_one_block_of_two_workers() {
    let test = "bench_slurm_one_block_of_two_workers";
    let Some(bin) = slurm_or_skip(test) else {
        return;
    };
    let scene = Scene::start(bin).await;
    let mut one_block = strategy(1, 120);
    one_block.workers_per_node = 2;
    let agent = scene
        .agent("slurm-bench", slurm("lattice"), one_block)
        .await;
    let function = scene.shell_function("true").await;

    let cold = Instant::now();
    let first = scene.submit(&function, agent.endpoint_id, 1).await;
    let first = scene.finished(&first).await;
    let cold = cold.elapsed();
    assert_eq!(first[0].state, TaskState::Success, "{first:?}");

    let count = 1000;
    let started = Instant::now();
    let ids = scene.submit(&function, agent.endpoint_id, count).await;
    let tasks = scene.finished(&ids).await;
    let elapsed = started.elapsed();
    let failed = tasks
        .iter()
        .filter(|t| t.state != TaskState::Success)
        .count();
    assert_eq!(failed, 0, "all {count} tasks succeed");
    let info = scene.endpoint(agent.endpoint_id).await;
    let jobs: std::collections::BTreeSet<_> = info
        .blocks
        .iter()
        .filter_map(|b| b.job_id.clone())
        .collect();
    eprintln!(
        "MEASURED cold slurm block, submit -> first result: {:.2} s",
        cold.as_secs_f64()
    );
    eprintln!(
        "MEASURED {count} tasks through one block of 2 workers: {:.2} s, {:.0} tasks/s (slurm jobs {jobs:?})",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(jobs.len(), 1, "one block did all the work");
    agent.stop().await;
}
