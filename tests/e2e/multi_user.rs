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
        Some("workers = 1\nworker_capacity = 2\naccount = {{ account }}\n".to_owned()),
        json!({"properties": {"account": {"type": "string", "pattern": "^[a-z0-9]{1,16}$", "default": "default"}}}),
    )
    .unwrap();
    let pool = UserPool::new(PoolSettings {
        worker_command: bin,
        workers: 1,
        capacity: 2,
        state_dir: state.clone(),
        idle_timeout: config.idle_timeout(),
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

    // A child whose workers died gets new ones on its next task.
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
        Some(json!({"account": "Bad; rm -rf /"})),
    )
    .await;
    assert!(
        bad.error.clone().unwrap().contains("does not match"),
        "{bad:?}"
    );
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
        Some(json!({"account": "p2"})),
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
    assert_eq!((starts, ends), (6, 9), "{log}");
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
