//! `lattice task ...` and `lattice run`.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lattice_client::{Client, ClientError};
use lattice_protocol::compute::{
    BatchStatus, BatchSubmit, FunctionRegister, FunctionSpec, StreamEvent, TaskArgs, TaskInfo,
    TaskState, TaskSubmit,
};
use lattice_protocol::{template, BatchId, TaskId};
use serde::Serialize;

use crate::commands::endpoints::resolve;
use crate::context::Context;
use crate::output::{id_of, UsageError};

/// Exit code when a waited-for task failed or was cancelled.
pub(crate) const EXIT_TASK_FAILED: u8 = 6;
/// Exit code when waiting timed out.
pub(crate) const EXIT_TIMEOUT: u8 = 7;

/// A non-error exit with a specific code (task failed, timeout, the task's return code).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ExitWith {
    pub(crate) code: u8,
    pub(crate) message: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TaskCommand {
    /// Submit one task; prints its id. Tasks for an offline endpoint wait until it returns.
    Submit {
        /// The function to run: its id, or its name when no other function of
        /// yours has it (`lattice function list`).
        function: String,
        /// Endpoint id or name.
        #[arg(long)]
        endpoint: String,
        /// A template argument (repeatable); VALUE is used as a string.
        #[arg(long = "arg", value_name = "NAME=VALUE", value_parser = parse_arg)]
        args: Vec<(String, String)>,
        #[command(flatten)]
        limits: Limits,
    },
    /// Submit many tasks from a JSON-lines file (one object of arguments per line);
    /// prints the batch id (and how many tasks on stderr; `--format json`:
    /// every task id).
    SubmitBatch {
        /// The function to run: its id, or its name when no other function of
        /// yours has it (`lattice function list`).
        function: String,
        /// Endpoint id or name.
        #[arg(long)]
        endpoint: String,
        /// JSON lines; `-` reads standard input.
        #[arg(long, value_name = "FILE")]
        args_file: PathBuf,
        #[command(flatten)]
        limits: Limits,
    },
    /// Show a task: state, result, error, timestamps.
    Show {
        /// Task id.
        #[arg(value_parser = id_of::<TaskId>("task", "`lattice task list`"))]
        id: TaskId,
    },
    /// List your tasks, newest first.
    List {
        /// Only tasks in this state.
        #[arg(long, value_parser = ["waiting", "dispatched", "running", "success", "failed", "cancelled"])]
        state: Option<String>,
        /// Only the tasks of this batch.
        #[arg(long, value_parser = id_of::<BatchId>("batch", "`lattice task submit-batch --format json`"))]
        batch: Option<BatchId>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Cancel a task that has not finished.
    Cancel {
        /// Task id.
        #[arg(value_parser = id_of::<TaskId>("task", "`lattice task list`"))]
        id: TaskId,
    },
    /// Wait for a task or a batch. Exit code 0 when all succeeded, 6 when any
    /// failed or was cancelled, 7 on timeout.
    Wait {
        /// The task to wait for.
        #[arg(
            required_unless_present = "batch",
            conflicts_with = "batch",
            value_parser = id_of::<TaskId>("task", "`lattice task list`")
        )]
        id: Option<TaskId>,
        /// Wait for every task of this batch instead (a progress bar; results
        /// stream as they land).
        #[arg(long, value_name = "BATCH_ID", value_parser = id_of::<BatchId>("batch", "`lattice task submit-batch --format json`"))]
        batch: Option<BatchId>,
        /// Give up after this many seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub(crate) struct Limits {
    /// Seconds the task may run [default: the service's default].
    #[arg(long, value_name = "SECS")]
    pub(crate) walltime: Option<u32>,
    /// Retries when the task's worker or agent is lost [default: 2].
    #[arg(long, value_name = "N")]
    pub(crate) max_retries: Option<u32>,
    /// For a multi-user endpoint: variables of its per-user config template,
    /// as a JSON object (e.g. '{"account": "p42", "walltime": 600}'); the
    /// agent checks them against the admin's schema.
    #[arg(long, value_name = "JSON", value_parser = parse_user_endpoint_config)]
    pub(crate) user_endpoint_config: Option<serde_json::Value>,
}

fn parse_user_endpoint_config(text: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str(text) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err("must be a JSON object, e.g. '{\"account\": \"p42\"}'".to_owned()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

pub(crate) fn parse_arg(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    Ok((name.to_owned(), value.to_owned()))
}

/// What `task submit` prints in JSON: `id` like every command that creates
/// something, plus the batch the task belongs to.
#[derive(Serialize)]
struct Submitted {
    id: TaskId,
    /// The same as `id` (kept for scripts written before `id`).
    task_id: TaskId,
    batch_id: BatchId,
}

/// What `task submit-batch` prints in JSON: the batch as `id`, and every task.
#[derive(Serialize)]
struct BatchCreated {
    id: BatchId,
    #[serde(flatten)]
    submitted: lattice_protocol::compute::BatchSubmitted,
}

pub(crate) async fn run(ctx: &Context, command: TaskCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        TaskCommand::Submit {
            function,
            endpoint,
            args,
            limits,
        } => {
            let function_id = super::functions::resolve(&client, &function).await?;
            let endpoint_id = resolve(&client, &endpoint).await?;
            let args: TaskArgs = args
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            let submitted = client
                .submit_task(&TaskSubmit {
                    function_id,
                    endpoint_id,
                    args,
                    walltime_secs: limits.walltime,
                    max_retries: limits.max_retries,
                    user_endpoint_config: limits.user_endpoint_config,
                })
                .await?;
            let out = Submitted {
                id: submitted.task_ids[0],
                task_id: submitted.task_ids[0],
                batch_id: submitted.batch_id,
            };
            ctx.output.emit(&out, |s| s.task_id.to_string())
        }
        TaskCommand::SubmitBatch {
            function,
            endpoint,
            args_file,
            limits,
        } => {
            let function_id = super::functions::resolve(&client, &function).await?;
            let endpoint_id = resolve(&client, &endpoint).await?;
            let tasks = read_args_file(&args_file)?;
            let submitted = client
                .submit_batch(&BatchSubmit {
                    function_id,
                    endpoint_id,
                    tasks,
                    walltime_secs: limits.walltime,
                    max_retries: limits.max_retries,
                    user_endpoint_config: limits.user_endpoint_config,
                })
                .await?;
            // Text: the batch id alone on stdout (for `B=$(...)`), the count
            // on stderr; every task id is in `--format json`.
            let created = BatchCreated {
                id: submitted.batch_id,
                submitted,
            };
            if ctx.output.format == crate::output::Format::Text && ctx.output.jmespath.is_none() {
                eprintln!(
                    "{} tasks submitted; wait with `lattice task wait --batch {}` (task ids: --format json)",
                    created.submitted.task_ids.len(),
                    created.id
                );
            }
            ctx.output.emit(&created, |c| c.id.to_string())
        }
        TaskCommand::Show { id } => {
            let task = client.task(id).await?;
            ctx.output.emit(&task, describe)
        }
        TaskCommand::List {
            state,
            batch,
            limit,
        } => {
            let tasks = client
                .list_tasks(state.as_deref(), batch, Some(limit))
                .await?;
            ctx.output.emit(&tasks, |list| {
                if list.is_empty() {
                    return "no tasks".into();
                }
                list.iter()
                    .map(|t| {
                        format!(
                            "{}  {:<10}  {}",
                            t.id,
                            t.state.as_str(),
                            t.submitted_at.to_rfc3339()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        TaskCommand::Cancel { id } => {
            let task = client.cancel_task(id).await?;
            ctx.output
                .emit(&task, |t| format!("task {} {}", t.id, t.state.as_str()))
        }
        TaskCommand::Wait { id, batch, timeout } => {
            let timeout = timeout.map(Duration::from_secs);
            match (id, batch) {
                (Some(id), _) => {
                    let task = wait_task(&client, id, timeout).await?;
                    ctx.output.emit(&task, describe)?;
                    if task.state != TaskState::Success {
                        return Err(ExitWith {
                            code: EXIT_TASK_FAILED,
                            message: format!("task {} {}", task.id, task.state.as_str()),
                        }
                        .into());
                    }
                    Ok(())
                }
                (None, Some(batch)) => {
                    let status = wait_batch(&client, batch, timeout).await?;
                    ctx.output.emit(&status, |s| {
                        format!(
                            "batch {}: {} tasks, {} succeeded, {} failed, {} cancelled",
                            s.batch_id, s.total, s.success, s.failed, s.cancelled
                        )
                    })?;
                    if status.failed + status.cancelled > 0 {
                        return Err(ExitWith {
                            code: EXIT_TASK_FAILED,
                            message: format!(
                                "{} of {} tasks did not succeed",
                                status.failed + status.cancelled,
                                status.total
                            ),
                        }
                        .into());
                    }
                    Ok(())
                }
                (None, None) => Err(UsageError("give a task id or --batch".into()).into()),
            }
        }
    }
}

fn read_args_file(path: &PathBuf) -> anyhow::Result<Vec<TaskArgs>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        ))
    };
    let mut tasks = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let args: TaskArgs = serde_json::from_str(&line).map_err(|e| {
            UsageError(format!(
                "{}:{}: not a JSON object of arguments: {e}",
                path.display(),
                number + 1
            ))
        })?;
        tasks.push(args);
    }
    if tasks.is_empty() {
        return Err(UsageError(format!("{} holds no tasks", path.display())).into());
    }
    Ok(tasks)
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks {msg}",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Waits for every task of a batch over the result stream.
pub(crate) async fn wait_batch(
    client: &Client,
    batch: BatchId,
    timeout: Option<Duration>,
) -> anyhow::Result<BatchStatus> {
    let status = client.batch_status(batch).await?;
    let bar = progress_bar(status.total);
    let waiting = async {
        let mut stream = client.stream_batch(batch).await?;
        let mut failed = 0u64;
        while let Some(event) = stream.next().await? {
            match event {
                StreamEvent::Task { task } => {
                    if task.state != TaskState::Success {
                        failed += 1;
                        bar.set_message(format!("({failed} failed)"));
                    }
                    bar.inc(1);
                }
                StreamEvent::Done { status } => return Ok::<_, anyhow::Error>(status),
            }
        }
        // Stream closed early (service restart): fall back to the status.
        Ok(client.batch_status(batch).await?)
    };
    let result = with_timeout(timeout, waiting).await;
    bar.finish_and_clear();
    result
}

/// Waits for one task (over its batch's stream).
pub(crate) async fn wait_task(
    client: &Client,
    id: TaskId,
    timeout: Option<Duration>,
) -> anyhow::Result<TaskInfo> {
    with_timeout(timeout, follow_task(client, id)).await
}

/// How long `task wait` keeps trying to reach a service that went away.
const UNREACHABLE_GIVE_UP: Duration = Duration::from_secs(300);
/// How often a waiting task is looked at for a new reason to wait.
const WAIT_REASON_EVERY: Duration = Duration::from_secs(5);

/// Follows one task over its batch's result stream until it is final.
/// Says once on stderr why it waits (endpoint offline, since when; or
/// unable to start workers) and again when the reason changes. A broken
/// stream or an unreachable service (a restart) is retried with backoff,
/// for up to [`UNREACHABLE_GIVE_UP`] without contact.
async fn follow_task(client: &Client, id: TaskId) -> anyhow::Result<TaskInfo> {
    let mut said: Option<String> = None;
    let mut backoff = Backoff::default();
    loop {
        let task = match client.task(id).await {
            Ok(task) => task,
            Err(e @ ClientError::Transport { .. }) => {
                backoff.failed(&e).await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if task.state.is_final() {
            return Ok(task);
        }
        tell_waiting_reason(&task, &mut said);
        let mut stream = match client.stream_batch(task.batch_id).await {
            Ok(stream) => stream,
            Err(e @ ClientError::Transport { .. }) => {
                backoff.failed(&e).await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        backoff.reached();
        let mut look = tokio::time::interval(WAIT_REASON_EVERY);
        look.tick().await;
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    Ok(Some(StreamEvent::Task { task })) if task.id == id => return Ok(*task),
                    Ok(Some(_)) => {}
                    // Closed (the batch is done, or the service stops): read
                    // the task again.
                    Ok(None) => break,
                    Err(e) => {
                        backoff.failed(&e).await?;
                        break;
                    }
                },
                _ = look.tick() => {
                    if let Ok(task) = client.task(id).await {
                        if task.state.is_final() {
                            return Ok(task);
                        }
                        tell_waiting_reason(&task, &mut said);
                    }
                }
            }
        }
    }
}

/// Prints why a task waits when that is news.
fn tell_waiting_reason(task: &TaskInfo, said: &mut Option<String>) {
    if task.endpoint_problem != *said {
        if let Some(reason) = &task.endpoint_problem {
            eprintln!("note: {reason}");
        }
        said.clone_from(&task.endpoint_problem);
    }
}

/// Reconnection delays of a wait: 250 ms doubling to 10 s; gives up after
/// [`UNREACHABLE_GIVE_UP`] without reaching the service.
struct Backoff {
    delay: Duration,
    since: Option<std::time::Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(250),
            since: None,
        }
    }
}

impl Backoff {
    /// The service answered: start over.
    fn reached(&mut self) {
        *self = Self::default();
    }

    /// A connection failed: say so the first time, sleep, or give up.
    async fn failed(&mut self, error: &ClientError) -> Result<(), ClientError> {
        let since = *self.since.get_or_insert_with(|| {
            eprintln!("note: {error}; reconnecting");
            std::time::Instant::now()
        });
        if since.elapsed() > UNREACHABLE_GIVE_UP {
            return Err(ClientError::Transport {
                url: match error {
                    ClientError::Transport { url, .. } => url.clone(),
                    _ => String::new(),
                },
                detail: format!(
                    "gave up after {} s without reaching the service (the task may still run; `lattice task show` tells)",
                    UNREACHABLE_GIVE_UP.as_secs()
                ),
            });
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(10));
        Ok(())
    }
}

async fn with_timeout<T>(
    timeout: Option<Duration>,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match timeout {
        None => work.await,
        Some(limit) => tokio::time::timeout(limit, work).await.map_err(|_| {
            anyhow::Error::new(ExitWith {
                code: EXIT_TIMEOUT,
                message: format!(
                    "timed out after {} s; the tasks keep running",
                    limit.as_secs()
                ),
            })
        })?,
    }
}

pub(crate) fn describe(t: &TaskInfo) -> String {
    fn line(text: &mut String, label: &str, value: impl std::fmt::Display) {
        text.push_str(&format!("\n  {:<11} {value}", format!("{label}:")));
    }
    let mut text = t.id.to_string();
    line(&mut text, "state", t.state.as_str());
    line(&mut text, "function", t.function_id);
    line(&mut text, "endpoint", t.endpoint_id);
    line(&mut text, "batch", t.batch_id);
    line(&mut text, "submitted", t.submitted_at.to_rfc3339());
    for (label, at) in [
        ("dispatched", t.dispatched_at),
        ("started", t.started_at),
        ("finished", t.finished_at),
    ] {
        if let Some(at) = at {
            line(&mut text, label, at.to_rfc3339());
        }
    }
    if let Some(worker) = &t.worker {
        line(&mut text, "worker", worker);
    }
    line(&mut text, "attempts", t.attempts);
    if let Some(problem) = &t.endpoint_problem {
        line(&mut text, "waiting", problem);
    }
    if let Some(error) = &t.error {
        line(&mut text, "error", error);
    }
    if let Some(result) = &t.result {
        if let Some(code) = result.returncode {
            line(&mut text, "exit code", code);
        }
        for (label, output) in [("stdout", &result.stdout), ("stderr", &result.stderr)] {
            if !output.is_empty() {
                text.push_str(&format!("\n  {label}:\n{}", indent(output)));
            }
        }
    }
    text
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Endpoint id or name.
    #[arg(long)]
    endpoint: String,
    #[command(flatten)]
    limits: Limits,
    /// Give up waiting after this many seconds (exit code 7; the task keeps running).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// The command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Options of `lattice run` itself, for spotting a mistyped one.
const RUN_OPTIONS: &[&str] = &[
    "--endpoint",
    "--walltime",
    "--max-retries",
    "--user-endpoint-config",
    "--timeout",
    "--format",
    "--jmespath",
    "--url",
    "--ca-file",
];

/// A word that clap took into the command but that the user meant as an
/// option of `lattice run`: one before `--` (everything before `--` that is
/// not an option of `run` is an unknown option), or, without `--`, a first
/// word that looks like a mistyped option. `argv` is the process's.
fn check_run_flags(command: &[String], argv: &[String]) -> Result<(), UsageError> {
    let suspect = match argv.iter().position(|a| a == "--") {
        // Words after `--` are the command; any more came from before it.
        Some(dash) => {
            let after = argv.len() - dash - 1;
            (command.len() > after && command[0].starts_with('-')).then(|| command[0].clone())
        }
        None => command
            .first()
            .filter(|w| w.starts_with("--") && closest_option(w).is_some())
            .cloned(),
    };
    let Some(word) = suspect else {
        return Ok(());
    };
    let flag = word.split('=').next().unwrap_or(&word);
    let hint = match closest_option(flag) {
        Some(option) => format!(" (did you mean `{option}`?)"),
        None => String::new(),
    };
    Err(UsageError(format!(
        "unknown option `{flag}` for `lattice run`{hint}; the command goes after `--`, e.g. `lattice run --endpoint local -- hostname`"
    )))
}

/// The option of `lattice run` closest to `word`, if it is close.
fn closest_option(word: &str) -> Option<&'static str> {
    let flag = word.split('=').next().unwrap_or(word);
    RUN_OPTIONS
        .iter()
        .map(|option| (strsim::damerau_levenshtein(flag, option), *option))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, option)| option)
}

/// `lattice run`: register if needed, submit, wait, print stdout and stderr,
/// exit with the task's return code.
pub(crate) async fn run_command(ctx: &Context, args: RunArgs) -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    check_run_flags(&args.command, &argv)?;
    let client = ctx.client().await?;
    let endpoint_id = resolve(&client, &args.endpoint).await?;
    // Each word is quoted, and braces are escaped so they are not placeholders.
    let command = args
        .command
        .iter()
        .map(|w| {
            template::shell_quote(w)
                .replace('{', "{{")
                .replace('}', "}}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let function = client
        .register_function(&FunctionRegister {
            name: None,
            description: Some("registered by `lattice run`".into()),
            spec: FunctionSpec::Shell { command },
        })
        .await?;
    let submitted = client
        .submit_task(&TaskSubmit {
            function_id: function.id,
            endpoint_id,
            args: HashMap::<String, serde_json::Value>::new()
                .into_iter()
                .collect(),
            walltime_secs: args.limits.walltime,
            max_retries: args.limits.max_retries,
            user_endpoint_config: args.limits.user_endpoint_config,
        })
        .await?;
    let task = wait_task(
        &client,
        submitted.task_ids[0],
        args.timeout.map(Duration::from_secs),
    )
    .await?;
    if ctx.output.format == crate::output::Format::Json || ctx.output.jmespath.is_some() {
        ctx.output.emit(&task, describe)?;
    } else if let Some(result) = &task.result {
        use std::io::Write;
        std::io::stdout().write_all(result.stdout.as_bytes())?;
        std::io::stderr().write_all(result.stderr.as_bytes())?;
    }
    if task.state == TaskState::Success {
        return Ok(());
    }
    let code = task
        .result
        .as_ref()
        .and_then(|r| r.returncode)
        .filter(|c| (1..=255).contains(c))
        .map(|c| c as u8)
        .unwrap_or(EXIT_TASK_FAILED);
    Err(ExitWith {
        code,
        message: format!(
            "task {} {}: {}",
            task.id,
            task.state.as_str(),
            task.error.as_deref().unwrap_or("no error recorded")
        ),
    }
    .into())
}

#[cfg(test)]
mod run_flag_tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn a_mistyped_option_of_run_is_refused_with_a_suggestion() {
        // clap passed `--walltme 5 -- true` into the command.
        let argv = words("lattice run --endpoint local --walltme 5 -- true");
        let err = check_run_flags(&words("--walltme 5 -- true"), &argv).unwrap_err();
        assert!(
            err.0.contains("`--walltme`") && err.0.contains("`--walltime`"),
            "{}",
            err.0
        );
        // Without `--`: a first word that looks like an option of run.
        let argv = words("lattice run --endpoint local --timout 5 true");
        let err = check_run_flags(&words("--timout 5 true"), &argv).unwrap_err();
        assert!(err.0.contains("`--timeout`"), "{}", err.0);
    }

    #[test]
    fn commands_are_left_alone() {
        for (argv, command) in [
            (
                "lattice run --endpoint local -- sh -c x -- y",
                "sh -c x -- y",
            ),
            (
                "lattice run --endpoint local hostname -- foo",
                "hostname -- foo",
            ),
            ("lattice run --endpoint local -- --version", "--version"),
            ("lattice run --endpoint local ls -la", "ls -la"),
        ] {
            assert!(
                check_run_flags(&words(command), &words(argv)).is_ok(),
                "{argv}"
            );
        }
    }
}
