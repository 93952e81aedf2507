//! The CLI's contract for scripts, through the real binary on `lattice
//! dev`: output to a reader that went away ends quietly, `submit-batch`
//! prints a count (ids in JSON), and a bad `LATTICE_TOKEN` is named as the
//! source of the token.

use std::process::{Command, Output, Stdio};

use lattice_tests::platform::{DevOptions, DevPlatform};

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

    // Text: the batch and a count, not one line per task.
    let submitted = platform.cli(&[
        "task",
        "submit-batch",
        &function,
        "--endpoint",
        "local",
        "--args-file",
        args,
    ]);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    let text = String::from_utf8_lossy(&submitted.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("3 tasks submitted"), "{text}");
    // JSON: every id.
    let submitted = platform.cli(&[
        "task",
        "submit-batch",
        &function,
        "--endpoint",
        "local",
        "--args-file",
        args,
        "--format",
        "json",
    ]);
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
