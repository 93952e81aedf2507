//! The CLI's contract for scripts, through the real binary on `lattice
//! dev`: output to a reader that went away ends quietly, `submit-batch`
//! prints a count (ids in JSON), a bad `LATTICE_TOKEN` is named as the
//! source of the token, every create returns `id`, functions can be named,
//! exit codes follow the README (not found 4 by id or name, client-side
//! mistakes 2), `--jmespath` that matches nothing fails, a mistyped option
//! of `lattice run` is caught, and clients can be deleted and re-keyed.

use std::process::{Command, Output, Stdio};

use lattice_tests::platform::{eventually, DevOptions, DevPlatform};

const LATTICE: &str = env!("CARGO_BIN_EXE_lattice");

/// Runs the CLI against `platform` with stdout a pipe whose reader is
/// already closed, so every write fails with EPIPE.
fn with_closed_stdout(platform: &DevPlatform, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(LATTICE)
        .args(args)
        .env("XDG_CONFIG_HOME", platform.config_dir())
        .env("LATTICE_LOG", "warn")
        .env_remove("LATTICE_URL")
        .env_remove("LATTICE_TOKEN")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run the lattice CLI")
}

#[test]
fn scripts_get_quiet_pipes_counts_and_named_token_sources() {
    let platform = DevPlatform::start(
        LATTICE.as_ref(),
        DevOptions {
            local_workers: Some(1),
            ..Default::default()
        },
    );
    let function = platform.cli(&[
        "function",
        "register",
        "--shell",
        "echo {n}",
        "--format",
        "json",
        "--jmespath",
        "id",
    ]);
    let function: String = serde_json::from_slice(&function.stdout).unwrap();
    let args = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(args.path(), "{\"n\": 1}\n{\"n\": 2}\n{\"n\": 3}\n").unwrap();
    let args = args.path().to_str().unwrap();

    let submit_batch = |extra: &[&str]| {
        let mut command = vec![
            "task",
            "submit-batch",
            &function,
            "--endpoint",
            "local",
            "--args-file",
            args,
        ];
        command.extend_from_slice(extra);
        platform.cli(&command)
    };
    // Text: the batch id alone (for `B=$(...)`), the count on stderr.
    let submitted = submit_batch(&[]);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    let text = String::from_utf8_lossy(&submitted.stdout);
    let batch_id: lattice_protocol::BatchId = text.trim().parse().expect("the batch id alone");
    let said = String::from_utf8_lossy(&submitted.stderr);
    assert!(
        said.contains("3 tasks submitted") && said.contains(&batch_id.to_string()),
        "{said}"
    );
    // JSON: every id.
    let submitted = submit_batch(&["--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&submitted.stdout).unwrap();
    assert_eq!(json["task_ids"].as_array().map(Vec::len), Some(3), "{json}");
    let batch = json["batch_id"].as_str().unwrap().to_owned();
    let task = json["task_ids"][0].as_str().unwrap().to_owned();
    let waited = platform.cli(&["task", "wait", "--batch", &batch]);
    assert_eq!(waited.status.code(), Some(0), "{waited:?}");

    // A reader that went away (`| head`): no error, no panic, exit 0.
    for command in [
        vec!["task", "list"],
        vec!["task", "wait", task.as_str()],
        vec!["task", "show", task.as_str(), "--format", "json"],
    ] {
        let output = with_closed_stdout(&platform, &command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{command:?}: {stderr}");
        assert!(stderr.trim().is_empty(), "{command:?}: {stderr}");
    }

    // A bad LATTICE_TOKEN: exit 3, and the message names the variable.
    let output = Command::new(LATTICE)
        .args(["whoami"])
        .env("XDG_CONFIG_HOME", platform.config_dir())
        .env("LATTICE_TOKEN", "lat_not_a_real_token")
        .env_remove("LATTICE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("LATTICE_TOKEN") && stderr.contains("unset"),
        "{stderr}"
    );
}

/// The exit code and stderr of a CLI call.
fn code_and_stderr(output: &Output) -> (Option<i32>, String) {
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn names_ids_exit_codes_and_clients_follow_one_contract() {
    let platform = DevPlatform::start(
        LATTICE.as_ref(),
        DevOptions {
            local_workers: Some(1),
            ..Default::default()
        },
    );
    // Every create answers `id`.
    let registered = platform.cli(&[
        "function", "register", "--shell", "echo {n}", "--name", "greet", "--format", "json",
    ]);
    let function: serde_json::Value = serde_json::from_slice(&registered.stdout).unwrap();
    let function_id = function["id"].as_str().unwrap().to_owned();
    let submitted = platform.cli(&[
        "task",
        "submit",
        "greet",
        "--endpoint",
        "local",
        "--arg",
        "n=7",
        "--format",
        "json",
    ]);
    let task: serde_json::Value = serde_json::from_slice(&submitted.stdout).unwrap();
    assert!(
        task["id"].is_string() && task["id"] == task["task_id"],
        "{task}"
    );
    assert!(task["batch_id"].is_string(), "{task}");
    let waited = platform.cli(&["task", "wait", task["id"].as_str().unwrap()]);
    assert_eq!(waited.status.code(), Some(0), "{waited:?}");
    assert!(String::from_utf8_lossy(&waited.stdout).contains("    7"));

    // Functions by name wherever an id is accepted.
    let shown = platform.cli(&[
        "function",
        "show",
        "greet",
        "--format",
        "json",
        "--jmespath",
        "id",
    ]);
    let shown: String = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown, function_id);

    // Not found is 4, by name or by id; several of one name is 4 too.
    let (code, stderr) =
        code_and_stderr(&platform.cli(&["task", "submit", "nosuch", "--endpoint", "local"]));
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("no function named `nosuch`") && stderr.contains("greet"),
        "{stderr}"
    );
    let (code, stderr) =
        code_and_stderr(&platform.cli(&["task", "submit", &function_id, "--endpoint", "nowhere"]));
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("no endpoint named `nowhere`") && stderr.contains("local"),
        "{stderr}"
    );
    let (code, _) =
        code_and_stderr(&platform.cli(&["task", "show", "0d6f6a3e-5c1b-4b7e-9a62-3f1c2d4e5f60"]));
    assert_eq!(code, Some(4));
    platform.cli(&["function", "register", "--shell", "true", "--name", "greet"]);
    let (code, stderr) = code_and_stderr(&platform.cli(&["function", "show", "greet"]));
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("2 functions are named `greet`"), "{stderr}");

    // Client-side mistakes are 2, in words.
    let (code, stderr) = code_and_stderr(&platform.cli(&["task", "show", "oops"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("`oops` is not a task id"), "{stderr}");
    let (code, stderr) = code_and_stderr(&platform.cli(&["task", "list", "--state", "bogus"]));
    assert_eq!(code, Some(2), "{stderr}");
    let (code, stderr) = code_and_stderr(&platform.cli(&[
        "run",
        "--endpoint",
        "local",
        "--walltme",
        "5",
        "--",
        "true",
    ]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("did you mean `--walltime`"), "{stderr}");
    let broken = platform.config_dir().join("lattice/endpoints/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("config.toml"),
        "service_url = \"x\"\nworkerz = 3\n",
    )
    .unwrap();
    let (code, stderr) = code_and_stderr(&platform.cli(&["endpoint", "start", "broken"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("workerz"), "{stderr}");

    // A JMESPath that selects nothing prints nothing and fails.
    let nothing = platform.cli(&["whoami", "--jmespath", "no.such.field"]);
    assert_eq!(nothing.status.code(), Some(1), "{nothing:?}");
    assert!(nothing.stdout.is_empty());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("matched nothing"));

    // Clients: created with `id`, re-keyed, deleted; the old secrets stop working.
    let created = platform.cli(&["client", "create", "nightly", "--format", "json"]);
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let client_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["id"], created["client_id"]);
    let text = platform.cli(&["client", "create", "other"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("not your endpoints or collections"));
    let client = platform.client();
    let token = |secret: &serde_json::Value| {
        let client = client.clone();
        let request = lattice_protocol::api::TokenRequest::ClientCredentials {
            client_id: client_id.parse().unwrap(),
            client_secret: secret.as_str().unwrap().to_owned(),
            scope: None,
        };
        runtime().block_on(async move { client.token(&request).await })
    };
    assert!(token(&created["client_secret"]).is_ok());
    let rotated = platform.cli(&["client", "rotate-secret", &client_id, "--format", "json"]);
    let rotated: serde_json::Value = serde_json::from_slice(&rotated.stdout).unwrap();
    assert!(token(&created["client_secret"]).is_err());
    assert!(token(&rotated["client_secret"]).is_ok());
    let deleted = platform.cli(&["client", "delete", &client_id]);
    assert_eq!(deleted.status.code(), Some(0), "{deleted:?}");
    assert!(token(&rotated["client_secret"]).is_err());
    let (code, _) = code_and_stderr(&platform.cli(&["client", "delete", &client_id]));
    assert_eq!(code, Some(4));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_wait_says_why_it_waits_and_outlives_a_service_restart() {
    let mut platform = DevPlatform::start(
        LATTICE.as_ref(),
        DevOptions {
            local_workers: Some(1),
            ..Default::default()
        },
    );
    // An endpoint whose agent was there and is gone.
    let mut agent = platform.agent("away", 1);
    let online = || {
        let shown = platform.cli(&["endpoint", "show", "away", "--format", "json"]);
        serde_json::from_slice::<serde_json::Value>(&shown.stdout)
            .is_ok_and(|v| v["status"] == "online")
    };
    eventually("the agent `away` online", online);
    agent.kill();
    eventually("the agent `away` offline", || !online());

    let (code, stderr) = code_and_stderr(&platform.cli(&[
        "run",
        "--endpoint",
        "away",
        "--timeout",
        "3",
        "--",
        "true",
    ]));
    assert_eq!(code, Some(7), "{stderr}");
    assert_eq!(
        stderr
            .matches("note: endpoint `away` is offline (last seen ")
            .count(),
        1,
        "said once: {stderr}"
    );
    let waiting = platform.cli(&[
        "task",
        "list",
        "--state",
        "waiting",
        "--format",
        "json",
        "--jmespath",
        "[0].id",
    ]);
    let waiting: String = serde_json::from_slice(&waiting.stdout).unwrap();
    let shown = platform.cli(&["task", "show", &waiting]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("waiting:") && shown.contains("`away` is offline"),
        "{shown}"
    );

    // `task wait` across a restart of the service: reconnects, then reports.
    let task = platform.cli(&[
        "run",
        "--endpoint",
        "local",
        "--timeout",
        "1",
        "--",
        "sleep",
        "3",
    ]);
    assert_eq!(task.status.code(), Some(7), "{task:?}");
    let sleeping = platform.cli(&[
        "task",
        "list",
        "--format",
        "json",
        "--jmespath",
        "[?state!='waiting'] | [0].id",
    ]);
    let sleeping: String = serde_json::from_slice(&sleeping.stdout).unwrap();
    // The service goes away while `task wait` follows the task: the wait
    // says so, keeps trying, and reports the task once the service is back.
    // (The URL and token come from the environment: a restart rewrites
    // the profile.)
    platform.kill();
    let mut waiter = Command::new(LATTICE)
        .args(["task", "wait", &sleeping, "--timeout", "120"])
        .env("XDG_CONFIG_HOME", platform.config_dir())
        .env("LATTICE_LOG", "warn")
        .env("LATTICE_URL", &platform.url)
        .env("LATTICE_TOKEN", &platform.token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = waiter.stderr.take().unwrap();
    let (lines, said) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let first = said
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the wait says it lost the service");
    assert!(
        first.contains("reconnecting") && first.contains(&platform.url),
        "names the URL: {first}"
    );
    platform.restart();
    let waited = waiter.wait_with_output().unwrap();
    let stderr = reader.join().unwrap();
    assert_eq!(waited.status.code(), Some(0), "{stderr}");
    let shown = String::from_utf8_lossy(&waited.stdout);
    assert!(shown.contains("state:      success"), "{shown}");
}
