//! Multi-user endpoint, end to end below the service: the root agent's
//! runner maps identities to the local accounts `.ci/users.sh` creates
//! (`lattice-alice`, `lattice-bob`), starts a child per (user, variables)
//! whose workers are the real `lattice` binary running with privileges
//! dropped, and refuses what must not run. Needs root (CI is root).

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use lattice_endpoint_agent::multi_user::mapping::{lookup_account, Field, RuleConfig};
use lattice_endpoint_agent::multi_user::privdrop::is_root;
use lattice_endpoint_agent::multi_user::{
    AuditLog, Identity, MultiUser, MultiUserConfig, MultiUserRunner, PoolSettings, UserPool,
};
use lattice_protocol::compute::FunctionSpec;
use lattice_protocol::frames::{OutcomeStatus, TaskAssignment, TaskOutcome};
use lattice_protocol::{FunctionId, TaskId};
use lattice_tests::{lattice_bin, require_service};
use serde_json::json;

const HANG_GUARD: Duration = Duration::from_secs(60);

fn available() -> Result<std::path::PathBuf, String> {
    if !is_root() {
        return Err("the multi-user agent needs root".to_owned());
    }
    for user in ["lattice-alice", "lattice-bob"] {
        if lookup_account(user).is_none() {
            return Err(format!("no local account `{user}` (run .ci/users.sh)"));
        }
    }
    lattice_bin()
}

fn identity(email: &str) -> Identity {
    Identity {
        identity_id: format!("id-{email}"),
        username: email.to_owned(),
        email: Some(email.to_owned()),
        identity_provider: Some("https://idp.uni.edu".to_owned()),
    }
}

fn shell(command: &str) -> TaskAssignment {
    TaskAssignment {
        task_id: TaskId::new(),
        function_id: FunctionId::new(),
        spec: FunctionSpec::Shell {
            command: command.to_owned(),
        },
        args: Default::default(),
        walltime_secs: 30,
        attempt: 1,
        max_retries: 0,
        submitter: None,
        user_config: None,
    }
}

async fn run(
    runner: &mut MultiUserRunner,
    who: &str,
    command: &str,
    vars: Option<serde_json::Value>,
) -> TaskOutcome {
    let task = shell(command);
    let id = task.task_id;
    if let Some(refused) = runner.submit(identity(who), task, vars).await {
        return refused;
    }
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            let outcome = runner.next_outcome().await;
            if outcome.task_id == id {
                return outcome;
            }
        }
    })
    .await
    .expect("task finished")
}

fn stdout(outcome: &TaskOutcome) -> String {
    outcome
        .result
        .as_ref()
        .map(|r| r.stdout.clone())
        .unwrap_or_default()
}

fn stderr(outcome: &TaskOutcome) -> String {
    outcome
        .result
        .as_ref()
        .map(|r| r.stderr.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_user_tasks_run_as_their_mapped_accounts() {
    let bin = available();
    if !require_service(
        "multi_user_tasks_run_as_their_mapped_accounts",
        bin.as_ref().map(|_| ()).map_err(Clone::clone),
    ) {
        return;
    }
    let bin = bin.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The users' workers must traverse the state dir to their scratch dirs.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    let config = MultiUserConfig {
        idle_timeout_secs: 1,
        rules: vec![RuleConfig {
            field: Field::Email,
            pattern: r"([a-z]+)@uni\.edu".to_owned(),
            output: "lattice-{0}".to_owned(),
        }],
        ..MultiUserConfig::default()
    };
    let router = MultiUser::new(
        &config,
        Some("workers = 1\nworker_capacity = 2\ndefault_walltime_secs = {{ walltime }}\n".to_owned()),
        json!({"properties": {"walltime": {"type": "integer", "minimum": 1, "maximum": 3600, "default": 600}}}),
    )
    .unwrap();
    let pool = UserPool::new(PoolSettings {
        worker_command: bin,
        workers: 1,
        capacity: 2,
        state_dir: state.clone(),
        idle_timeout: config.idle_timeout(),
        environment: Vec::new(),
    });
    let audit_path = state.join("audit.log");
    let mut runner = MultiUserRunner::new(router, pool, AuditLog::new(&audit_path, 1 << 20, 5));
    let alice = lookup_account("lattice-alice").unwrap();
    let bob = lookup_account("lattice-bob").unwrap();

    // Each identity's task runs under its own uid, with real = effective =
    // saved uid and the user's own groups.
    let a = run(
        &mut runner,
        "alice@uni.edu",
        "id -u; grep -E '^(Uid|Gid|Groups):' /proc/self/status; echo HOME=$HOME",
        None,
    )
    .await;
    assert_eq!(a.status, OutcomeStatus::Success, "{a:?}");
    let out = stdout(&a);
    assert_eq!(
        out.lines().next(),
        Some(alice.uid.to_string().as_str()),
        "{out}"
    );
    let uid = alice.uid;
    assert!(
        out.contains(&format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("Groups:\t{} \n", alice.gid))
            || out.contains(&format!("Groups:\t{}\n", alice.gid)),
        "{out}"
    );
    assert!(
        out.contains(&format!("HOME={}", alice.home.display())),
        "{out}"
    );
    let b = run(&mut runner, "bob@uni.edu", "id -u", None).await;
    assert_eq!(stdout(&b).trim(), bob.uid.to_string(), "{b:?}");
    assert_eq!(runner.pool().len(), 2);

    // Another account (here root) cannot pose as bob's worker: the user's
    // dispatcher closes connections from sockets of other uids.
    let (_, bob_dispatcher) = runner
        .pool()
        .dispatcher_addresses()
        .into_iter()
        .find(|(user, _)| user == "lattice-bob")
        .unwrap();
    let mut intruder = tokio::net::TcpStream::connect(bob_dispatcher)
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut intruder, &mut buf),
    )
    .await
    .expect("the intruder's connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // A child (the user's agent) that died is started again on its next task.
    let bob_pids: Vec<u32> = runner
        .pool()
        .children()
        .into_iter()
        .find(|(user, _, _)| user == "lattice-bob")
        .unwrap()
        .2;
    for pid in &bob_pids {
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = run(&mut runner, "bob@uni.edu", "id -u", None).await;
    assert_eq!(stdout(&again).trim(), bob.uid.to_string(), "{again:?}");

    // The child cannot regain root.
    let r = run(
        &mut runner,
        "alice@uni.edu",
        "sudo -n true 2>/dev/null || su -c true root </dev/null 2>/dev/null || echo NOROOT",
        None,
    )
    .await;
    assert_eq!(stdout(&r).trim(), "NOROOT", "{r:?}");

    // A task cannot read another user's scratch dir.
    let bob_scratch = state.join("users/lattice-bob/scratch");
    assert!(bob_scratch.is_dir());
    let peek = run(
        &mut runner,
        "alice@uni.edu",
        &format!("ls {}", bob_scratch.display()),
        None,
    )
    .await;
    assert_eq!(peek.status, OutcomeStatus::Failed, "{peek:?}");
    assert!(stderr(&peek).contains("Permission denied"), "{peek:?}");

    // An unmapped identity is refused with a clear error; nothing starts.
    let m = run(
        &mut runner,
        "mallory@evil.org",
        "touch /tmp/lattice-should-not-exist",
        None,
    )
    .await;
    assert_eq!(m.status, OutcomeStatus::Failed);
    let error = m.error.clone().unwrap();
    assert!(
        error.starts_with("no local account for identity id-mallory@evil.org"),
        "{error}"
    );
    assert!(!std::path::Path::new("/tmp/lattice-should-not-exist").exists());
    assert_eq!(runner.pool().len(), 2);

    // A variable outside the schema is refused with the schema's message.
    let bad = run(
        &mut runner,
        "alice@uni.edu",
        "true",
        Some(json!({"walltime": 99999})),
    )
    .await;
    assert!(
        bad.error
            .clone()
            .unwrap()
            .contains("greater than the maximum of 3600"),
        "{bad:?}"
    );
    let wrong_type = run(
        &mut runner,
        "alice@uni.edu",
        "true",
        Some(json!({"walltime": "600\nprovider = 1"})),
    )
    .await;
    assert_eq!(wrong_type.status, OutcomeStatus::Failed, "{wrong_type:?}");
    let unknown = run(
        &mut runner,
        "alice@uni.edu",
        "true",
        Some(json!({"qos": "high"})),
    )
    .await;
    assert!(
        unknown
            .error
            .clone()
            .unwrap()
            .contains("not an allowed variable"),
        "{unknown:?}"
    );

    // Another variable set gets its own child.
    let p2 = run(
        &mut runner,
        "alice@uni.edu",
        "id -u",
        Some(json!({"walltime": 120})),
    )
    .await;
    assert_eq!(stdout(&p2).trim(), alice.uid.to_string());
    assert_eq!(runner.pool().len(), 3);

    // The audit log has a start and an end per task that ran, one end per refusal.
    let log = std::fs::read_to_string(&audit_path).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let starts = lines.iter().filter(|l| l["event"] == "start").count();
    let ends = lines.iter().filter(|l| l["event"] == "end").count();
    assert_eq!((starts, ends), (6, 10), "{log}");
    assert!(lines
        .iter()
        .any(|l| l["local_user"] == "lattice-bob" && l["outcome"] == "success"));
    assert!(lines
        .iter()
        .any(|l| l["identity_username"] == "mallory@evil.org"
            && l["outcome"]
                .as_str()
                .unwrap()
                .starts_with("refused: no local account")));

    // Idle children stop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut stopped = runner.pool_mut().reap_idle();
    stopped.sort();
    assert_eq!(stopped, ["lattice-alice", "lattice-alice", "lattice-bob"]);
    assert!(runner.pool().is_empty());
}

// ---- through the service, with the real `lattice agent --multi-user` -----

/// The service in-process, local identities with tokens, and the root agent
/// as the real binary (which starts `lattice user-agent` children).
struct Facility {
    service: lattice_tests::TestService,
    admin: String,
    endpoint: lattice_protocol::EndpointId,
    agent: std::process::Child,
    state: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Facility {
    /// Starts the root agent with `multi_user` settings (template text and
    /// schema written next to its config).
    async fn start(
        bin: &std::path::Path,
        template: &str,
        schema: serde_json::Value,
        environment: &[(&str, &str)],
        allowed_groups: Option<&[&str]>,
    ) -> Self {
        use lattice_endpoint_agent::{EndpointCredential, EndpointFileConfig};
        let service = lattice_tests::ServiceListener::bind()
            .await
            .start(|_| {})
            .await;
        let admin = token(&service, "admin").await;
        let registered = service
            .post_json("/v1/endpoints", Some(&admin), &json!({"name": "facility"}))
            .await;
        assert!(registered.status.is_success(), "{registered:?}");
        let endpoint: lattice_protocol::EndpointId =
            serde_json::from_value(registered.body["endpoint"]["id"].clone()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let state = dir.path().join("facility");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        EndpointCredential {
            endpoint_id: endpoint,
            agent_secret: registered.body["agent_secret"].as_str().unwrap().to_owned(),
            service_url: service.url.to_string(),
        }
        .save(&state)
        .unwrap();
        std::fs::write(state.join("user-template.toml"), template).unwrap();
        std::fs::write(state.join("user-schema.json"), schema.to_string()).unwrap();
        let mut file = EndpointFileConfig::new(service.url.to_string());
        file.workers = Some(1);
        file.multi_user = Some(MultiUserConfig {
            idle_timeout_secs: 60,
            rules: vec![RuleConfig {
                field: Field::Username,
                pattern: "(alice|bob)".to_owned(),
                output: "lattice-{0}".to_owned(),
            }],
            user_config_template: Some(state.join("user-template.toml")),
            user_config_schema: Some(state.join("user-schema.json")),
            user_environment: environment
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            policy: lattice_endpoint_agent::multi_user::Policy {
                allowed_groups: allowed_groups
                    .map(|groups| groups.iter().map(|g| (*g).to_owned()).collect()),
                ..Default::default()
            },
            ..MultiUserConfig::default()
        });
        file.save(&state.join("config.toml"), "facility").unwrap();
        let agent = std::process::Command::new(bin)
            .args(["agent", "--multi-user", "--name", "facility", "--state-dir"])
            .arg(&state)
            .arg("--worker-command")
            .arg(bin)
            .env("RUST_LOG", "info")
            .spawn()
            .expect("start the multi-user agent");
        let facility = Self {
            service,
            admin,
            endpoint,
            agent,
            state,
            _dir: dir,
        };
        // Other identities may submit once the agent announced multi-user mode.
        facility
            .endpoint_until(|e| {
                e.multi_user && e.status == lattice_protocol::compute::EndpointStatus::Online
            })
            .await;
        facility
    }

    /// Registers `command` as `token`'s function and runs it on the
    /// facility; returns the final task.
    async fn run(
        &self,
        token: &str,
        command: &str,
        user_config: serde_json::Value,
    ) -> lattice_protocol::compute::TaskInfo {
        let function = self
            .service
            .post_json(
                "/v1/functions",
                Some(token),
                &json!({"spec": {"kind": "shell", "command": command}}),
            )
            .await;
        assert!(function.status.is_success(), "{function:?}");
        let submitted = self
            .service
            .post_json(
                "/v1/batches",
                Some(token),
                &json!({
                    "function_id": function.body["id"],
                    "endpoint_id": self.endpoint,
                    "tasks": [{}],
                    "user_endpoint_config": user_config,
                }),
            )
            .await;
        assert!(submitted.status.is_success(), "{submitted:?}");
        let id = submitted.body["task_ids"][0].as_str().unwrap().to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        loop {
            let task = self
                .service
                .get(&format!("/v1/tasks/{id}"), Some(token))
                .await;
            assert!(task.status.is_success(), "{task:?}");
            let task: lattice_protocol::compute::TaskInfo =
                serde_json::from_value(task.body).unwrap();
            if task.state.is_final() {
                return task;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "hang guard: task {id} never finished: {task:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The endpoint as its owner sees it, once `done` holds.
    async fn endpoint_until(
        &self,
        done: impl Fn(&lattice_protocol::compute::EndpointInfo) -> bool,
    ) -> lattice_protocol::compute::EndpointInfo {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self
                .service
                .get(
                    &format!("/v1/endpoints/{}", self.endpoint),
                    Some(&self.admin),
                )
                .await;
            let info: lattice_protocol::compute::EndpointInfo =
                serde_json::from_value(answer.body).unwrap();
            if done(&info) {
                return info;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "hang guard: the endpoint never got there: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the root agent with SIGTERM (it stops its children, which
    /// cancel their blocks) and waits for it.
    async fn stop(&mut self) {
        // SAFETY: kill on a pid we own.
        unsafe {
            libc::kill(self.agent.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.agent.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.agent.kill();
        panic!("the multi-user agent did not stop within 60 s of SIGTERM");
    }
}

impl Drop for Facility {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

async fn token(service: &lattice_tests::TestService, username: &str) -> String {
    lattice_service::auth::tokens::bootstrap_local_identity(
        &service.state.store,
        username,
        chrono::Duration::hours(1),
    )
    .await
    .expect("a local identity")
    .1
    .access_token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_user_agent_serves_several_identities_through_the_service() {
    let bin = available();
    if !require_service(
        "multi_user_agent_serves_several_identities_through_the_service",
        bin.as_ref().map(|_| ()).map_err(Clone::clone),
    ) {
        return;
    }
    let bin = bin.unwrap();
    let mut facility = Facility::start(
        &bin,
        "workers = 1\ndefault_walltime_secs = {{ walltime }}\n",
        json!({"properties": {"walltime": {"type": "integer", "minimum": 1, "maximum": 3600, "default": 600}}}),
        &[],
        Some(&["lattice-alice", "lattice-bob"]),
    )
    .await;
    let alice = lookup_account("lattice-alice").unwrap();
    let bob = lookup_account("lattice-bob").unwrap();
    let (alice_token, bob_token, mallory_token) = (
        token(&facility.service, "alice").await,
        token(&facility.service, "bob").await,
        token(&facility.service, "mallory").await,
    );

    let a = facility.run(&alice_token, "id -u", json!(null)).await;
    assert_eq!(
        a.state,
        lattice_protocol::compute::TaskState::Success,
        "{a:?}"
    );
    assert_eq!(a.result.unwrap().stdout.trim(), alice.uid.to_string());
    let b = facility.run(&bob_token, "id -u", json!(null)).await;
    assert_eq!(
        b.state,
        lattice_protocol::compute::TaskState::Success,
        "{b:?}"
    );
    assert_eq!(b.result.unwrap().stdout.trim(), bob.uid.to_string());

    // Alice cannot read bob's scratch dir.
    let bob_scratch = facility.state.join("users/lattice-bob/scratch");
    let peek = facility
        .run(
            &alice_token,
            &format!("ls {}", bob_scratch.display()),
            json!(null),
        )
        .await;
    assert_eq!(
        peek.state,
        lattice_protocol::compute::TaskState::Failed,
        "{peek:?}"
    );
    assert!(
        peek.result.unwrap().stderr.contains("Permission denied"),
        "alice listed bob's scratch dir"
    );

    // An identity no rule maps is refused; nothing runs.
    let marker = facility.state.join("mallory-was-here");
    let m = facility
        .run(
            &mallory_token,
            &format!("touch {}", marker.display()),
            json!(null),
        )
        .await;
    assert_eq!(
        m.state,
        lattice_protocol::compute::TaskState::Failed,
        "{m:?}"
    );
    let error = m.error.unwrap_or_default();
    assert!(
        error.starts_with("no local account for identity"),
        "{error}"
    );
    assert!(!marker.exists());

    // A variable outside the schema is refused with the schema's message.
    let bad = facility
        .run(&alice_token, "true", json!({"walltime": 99999}))
        .await;
    assert_eq!(bad.state, lattice_protocol::compute::TaskState::Failed);
    assert!(
        bad.error
            .clone()
            .unwrap_or_default()
            .contains("maximum of 3600"),
        "{bad:?}"
    );

    // The owner sees the children: one per user, with their pids.
    let info = facility.endpoint_until(|e| e.children.len() == 2).await;
    assert!(info.multi_user);
    let mut users: Vec<&str> = info
        .children
        .iter()
        .map(|c| c.local_user.as_str())
        .collect();
    users.sort();
    assert_eq!(users, ["lattice-alice", "lattice-bob"]);
    assert!(info.children.iter().all(|c| c.pid.is_some()));

    // The audit log saw every task, refusals included.
    let log = std::fs::read_to_string(facility.state.join("audit.log")).unwrap();
    assert!(log.contains("\"local_user\":\"lattice-bob\""), "{log}");
    assert!(log.contains("refused: no local account"), "{log}");
    facility.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_backed_user_config_submits_blocks_as_the_mapped_user() {
    let ready = available().and_then(|bin| lattice_tests::slurm_available().map(|()| bin));
    if !require_service(
        "slurm_backed_user_config_submits_blocks_as_the_mapped_user",
        ready.as_ref().map(|_| ()).map_err(Clone::clone),
    ) {
        return;
    }
    let bin = ready.unwrap();
    let conf = lattice_tests::slurm_conf();
    let conf = conf.to_str().unwrap().to_owned();
    let mut facility = Facility::start(
        &bin,
        "[provider]\ntype = \"slurm\"\nwalltime = {{ walltime }}\n[strategy]\nmax_blocks = 1\nmax_idletime_secs = 120\npoll_interval_secs = 1\n",
        json!({"properties": {"walltime": {"type": "string", "pattern": "^00:[0-5][0-9]:00$", "default": "00:05:00"}}}),
        &[("SLURM_CONF", conf.as_str())],
        // Only alice's group may use this endpoint.
        Some(&["lattice-alice"]),
    )
    .await;
    let alice = lookup_account("lattice-alice").unwrap();
    let alice_token = token(&facility.service, "alice").await;
    let bob_token = token(&facility.service, "bob").await;
    let refused = facility.run(&bob_token, "id -u", json!(null)).await;
    assert_eq!(
        refused.state,
        lattice_protocol::compute::TaskState::Failed,
        "{refused:?}"
    );
    let error = refused.error.unwrap_or_default();
    assert!(
        error.contains("not in a group allowed on this endpoint"),
        "{error}"
    );
    let task = facility
        .run(&alice_token, "id -u; echo JOB=$SLURM_JOB_ID", json!(null))
        .await;
    assert_eq!(
        task.state,
        lattice_protocol::compute::TaskState::Success,
        "{task:?}"
    );
    let out = task.result.unwrap().stdout;
    assert_eq!(
        out.lines().next(),
        Some(alice.uid.to_string().as_str()),
        "{out}"
    );
    let job = out
        .lines()
        .find_map(|l| l.strip_prefix("JOB="))
        .filter(|j| !j.is_empty())
        .unwrap_or_else(|| panic!("the task did not run in a Slurm job: {out}"))
        .to_owned();
    // Slurm says the block is the user's job.
    let squeue = std::process::Command::new("squeue")
        .args(["-h", "-u", "lattice-alice", "-o", "%i"])
        .env("SLURM_CONF", &conf)
        .output()
        .unwrap();
    let jobs = String::from_utf8_lossy(&squeue.stdout);
    assert!(
        jobs.lines().any(|j| j.trim() == job),
        "squeue -u lattice-alice: {jobs:?}, job {job}"
    );
    // And the owner sees it under alice's child.
    let info = facility
        .endpoint_until(|e| {
            e.children.iter().any(|c| {
                c.blocks
                    .iter()
                    .any(|b| b.job_id.as_deref() == Some(job.as_str()))
            })
        })
        .await;
    assert_eq!(info.children[0].local_user, "lattice-alice");
    // Stopping the root stops the child, which cancels its block.
    facility.stop().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let squeue = std::process::Command::new("squeue")
            .args(["-h", "-u", "lattice-alice", "-o", "%i"])
            .env("SLURM_CONF", &conf)
            .output()
            .unwrap();
        if !String::from_utf8_lossy(&squeue.stdout)
            .lines()
            .any(|j| j.trim() == job)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {job} still queued after the agent stopped"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
