//! `lattice timer ...`: timers that start a transfer, a task or a flow run
//! once or every interval (`--interval 1d`), and what each tick did.
//! Durations are written `90s`, `15m`, `1h`, `1d`; times in RFC 3339 or
//! as a duration from now.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use lattice_client::Client;
use lattice_protocol::compute::TaskArgs;
use lattice_protocol::flows::RunStart;
use lattice_protocol::timers::{
    format_duration, parse_duration, Schedule, ScheduleEnd, TimerCreate, TimerInfo, TimerKind,
    TimerList, TimerRunList, TimerStatus, TimerUpdate,
};
use lattice_protocol::TimerId;
use serde_json::{json, Value};

use crate::commands::tasks::{parse_arg, Limits};
use crate::commands::transfers::{parse_deadline, SubmitArgs};
use crate::context::Context;
use crate::output::UsageError;

const TIMER_HELP: &str = "\
Examples:
  Mirror a directory every night at 02:00 UTC, skipping files that are up to date:
    lattice timer create transfer instrument:/data/ cluster:/mirror/ -r --sync-level mtime \\
        --interval 1d --start 2026-12-08T02:00:00Z --name nightly-mirror
  Start a flow every hour, ten times:
    lattice timer create flow Ingest --input '{\"dir\": \"/incoming\"}' --interval 1h --stop-after-runs 10
  Run a function once, in 15 minutes:
    lattice timer create task cleanup --endpoint local --arg days=30 --start 15m
  What each tick did:
    lattice timer runs nightly-mirror";

#[derive(Subcommand, Debug)]
#[command(after_help = TIMER_HELP)]
pub(crate) enum TimerCommand {
    /// Create a timer (transfer, task or flow); prints its id.
    #[command(subcommand)]
    Create(Box<CreateCommand>),
    /// Your timers (not the deleted ones, unless asked with --status).
    List {
        /// Only these statuses (comma-separated: active, inactive, ended, deleted).
        #[arg(long, value_delimiter = ',', value_parser = parse_status)]
        status: Vec<TimerStatus>,
        /// Only timers whose name contains this.
        #[arg(long)]
        name: Option<String>,
    },
    /// One timer: schedule, status, next tick, counts and last error.
    Show {
        /// Timer id or name.
        timer: String,
    },
    /// Stop ticking until resumed.
    Pause {
        /// Timer id or name.
        timer: String,
    },
    /// Tick again; a tick missed while paused runs once, now.
    Resume {
        /// Timer id or name.
        timer: String,
    },
    /// Give a timer a new name.
    Rename {
        /// Timer id or name.
        timer: String,
        /// The new name.
        name: String,
    },
    /// Delete a timer (what it started goes on).
    Delete {
        /// Timer id or name.
        timer: String,
    },
    /// What each tick did, newest first: when it was due and ran, what it
    /// started, how that ended (or why it was skipped or failed).
    Runs {
        /// Timer id or name.
        timer: String,
        /// At most this many ticks.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CreateCommand {
    /// A timer that starts a transfer (the same arguments as `lattice transfer`).
    Transfer {
        #[command(flatten)]
        schedule: ScheduleArgs,
        #[command(flatten)]
        transfer: SubmitArgs,
    },
    /// A timer that runs a registered function on an endpoint.
    Task {
        /// The function: its id, or its name when no other function of yours has it.
        function: String,
        /// Endpoint id or name.
        #[arg(long)]
        endpoint: String,
        /// A template argument (repeatable); VALUE is used as a string.
        #[arg(long = "arg", value_name = "NAME=VALUE", value_parser = parse_arg)]
        args: Vec<(String, String)>,
        #[command(flatten)]
        limits: Limits,
        #[command(flatten)]
        schedule: ScheduleArgs,
    },
    /// A timer that starts a run of a flow.
    Flow {
        /// Flow id or title.
        flow: String,
        /// The run's input, a JSON object.
        #[arg(long, value_name = "JSON", default_value = "{}")]
        input: String,
        /// The runs' label [default: the timer's name].
        #[arg(long)]
        label: Option<String>,
        /// A tag for the runs (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        schedule: ScheduleArgs,
    },
}

/// When the timer ticks.
#[derive(Args, Debug)]
pub(crate) struct ScheduleArgs {
    /// The timer's name [default: its kind and interval].
    #[arg(long)]
    name: Option<String>,
    /// Tick every this long (90s, 15m, 1h, 1d); without it the timer ticks once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    interval: Option<u64>,
    /// The first tick: RFC 3339 (2026-12-08T02:00:00Z) or a duration from
    /// now (15m) [default: now].
    #[arg(long, value_name = "TIME", value_parser = parse_deadline)]
    start: Option<DateTime<Utc>>,
    /// End after this many runs (skipped ticks do not count).
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "stop_after",
        requires = "interval"
    )]
    stop_after_runs: Option<u64>,
    /// No tick after this time (RFC 3339 or a duration from now).
    #[arg(long, value_name = "TIME", value_parser = parse_deadline, requires = "interval")]
    stop_after: Option<DateTime<Utc>>,
}

impl ScheduleArgs {
    fn schedule(&self) -> Schedule {
        match self.interval {
            None => Schedule::Once {
                datetime: self.start,
            },
            Some(interval_seconds) => Schedule::Recurring {
                interval_seconds,
                start: self.start,
                end: match (self.stop_after_runs, self.stop_after) {
                    (Some(count), _) => Some(ScheduleEnd::Iterations { count }),
                    (None, Some(datetime)) => Some(ScheduleEnd::Time { datetime }),
                    (None, None) => None,
                },
            },
        }
    }
}

fn parse_status(text: &str) -> Result<TimerStatus, String> {
    serde_json::from_value(Value::String(text.trim().to_owned()))
        .map_err(|_| format!("`{text}` is not a timer status (active, inactive, ended, deleted)"))
}

/// A timer named by id, or by a name that one of the caller's timers has.
async fn timer_id(client: &Client, given: &str) -> anyhow::Result<TimerId> {
    if let Ok(id) = given.parse::<TimerId>() {
        return Ok(id);
    }
    let list = client.timers(&[], None).await?;
    let matching: Vec<&TimerInfo> = list.timers.iter().filter(|t| t.name == given).collect();
    match matching.as_slice() {
        [one] => Ok(one.id),
        [] => Err(UsageError(format!(
            "no timer of yours is named `{given}` (`lattice timer list`)"
        ))
        .into()),
        _ => Err(UsageError(format!(
            "{} timers are named `{given}`; give the id (`lattice timer list --name {given}`)",
            matching.len()
        ))
        .into()),
    }
}

async fn create(client: &Client, command: CreateCommand) -> anyhow::Result<TimerInfo> {
    let (kind, flow_id, body, schedule) = match command {
        CreateCommand::Transfer { schedule, transfer } => {
            if transfer.deadline.is_some() || transfer.submission_id.is_some() {
                return Err(UsageError(
                    "--deadline and --submission-id belong to one transfer; a timer starts a new transfer at each tick"
                        .into(),
                )
                .into());
            }
            let submission = crate::commands::transfers::submission(transfer)?;
            (
                TimerKind::Transfer,
                None,
                serde_json::to_value(submission)?,
                schedule,
            )
        }
        CreateCommand::Task {
            function,
            endpoint,
            args,
            limits,
            schedule,
        } => {
            let function_id = crate::commands::functions::resolve(client, &function).await?;
            let endpoint_id = crate::commands::endpoints::resolve(client, &endpoint).await?;
            let args: TaskArgs = args
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let mut body = json!({
                "function_id": function_id,
                "endpoint_id": endpoint_id,
                "args": args,
            });
            if let Some(w) = limits.walltime {
                body["walltime_secs"] = json!(w);
            }
            if let Some(r) = limits.max_retries {
                body["max_retries"] = json!(r);
            }
            if let Some(c) = limits.user_endpoint_config {
                body["user_endpoint_config"] = c;
            }
            (TimerKind::Task, None, body, schedule)
        }
        CreateCommand::Flow {
            flow,
            input,
            label,
            tags,
            schedule,
        } => {
            let flow_id = crate::commands::flows::flow_id(client, &flow).await?;
            let input: Value = serde_json::from_str(&input)
                .map_err(|e| UsageError(format!("--input is not JSON: {e}")))?;
            if !input.is_object() {
                return Err(UsageError("--input must be a JSON object".into()).into());
            }
            let start = RunStart {
                body: input,
                request_id: None,
                label,
                tags,
                run_monitors: Vec::new(),
                run_managers: Vec::new(),
            };
            (
                TimerKind::Flow,
                Some(flow_id),
                serde_json::to_value(start)?,
                schedule,
            )
        }
    };
    let request = TimerCreate {
        name: schedule.name.clone(),
        timer_type: kind,
        schedule: schedule.schedule(),
        flow_id,
        body,
    };
    Ok(client.create_timer(&request).await?)
}

pub(crate) async fn run(ctx: &Context, command: TimerCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        TimerCommand::Create(command) => {
            let timer = create(&client, *command).await?;
            ctx.output.emit(&timer, |t| t.id.to_string())
        }
        TimerCommand::List { status, name } => {
            let list = client.timers(&status, name.as_deref()).await?;
            ctx.output.emit(&list, table)
        }
        TimerCommand::Show { timer } => {
            let id = timer_id(&client, &timer).await?;
            let info = client.timer(id).await?;
            ctx.output.emit(&info, describe)
        }
        TimerCommand::Pause { timer } => {
            let id = timer_id(&client, &timer).await?;
            let info = client.pause_timer(id).await?;
            ctx.output.emit(&info, describe)
        }
        TimerCommand::Resume { timer } => {
            let id = timer_id(&client, &timer).await?;
            let info = client.resume_timer(id).await?;
            ctx.output.emit(&info, describe)
        }
        TimerCommand::Rename { timer, name } => {
            let id = timer_id(&client, &timer).await?;
            let info = client
                .update_timer(id, &TimerUpdate { name: Some(name) })
                .await?;
            ctx.output.emit(&info, describe)
        }
        TimerCommand::Delete { timer } => {
            let id = timer_id(&client, &timer).await?;
            let info = client.delete_timer(id).await?;
            ctx.output
                .emit(&info, |t| format!("deleted timer {} ({})", t.id, t.name))
        }
        TimerCommand::Runs { timer, limit } => {
            let id = timer_id(&client, &timer).await?;
            let runs = client.timer_runs(id, None, Some(limit)).await?;
            ctx.output.emit(&runs, runs_table)
        }
    }
}

fn when(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

fn schedule_text(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Once { datetime } => format!("once at {}", when(*datetime)),
        Schedule::Recurring {
            interval_seconds,
            start,
            end,
        } => {
            let mut text = format!(
                "every {} from {}",
                format_duration(*interval_seconds),
                when(*start)
            );
            match end {
                Some(ScheduleEnd::Iterations { count }) => {
                    text.push_str(&format!(", {count} runs"))
                }
                Some(ScheduleEnd::Time { datetime }) => {
                    text.push_str(&format!(", until {}", when(Some(*datetime))))
                }
                None => {}
            }
            text
        }
    }
}

fn status_text(t: &TimerInfo) -> String {
    match &t.inactive_reason {
        Some(reason) => match &reason.detail {
            Some(detail) => format!("inactive ({}: {detail})", reason.cause),
            None => format!("inactive ({})", reason.cause),
        },
        None => t.status.as_str().to_owned(),
    }
}

fn describe(t: &TimerInfo) -> String {
    let mut lines = vec![
        format!("Timer:     {} ({})", t.name, t.id),
        format!("Starts:    {}", t.timer_type.as_str()),
        format!("Schedule:  {}", schedule_text(&t.schedule)),
        format!("Status:    {}", status_text(t)),
        format!("Next run:  {}", when(t.next_run)),
        format!("Last ran:  {}", when(t.last_ran_at)),
        format!(
            "Runs:      {} ({} skipped, {} errors)",
            t.number_of_runs, t.number_of_skips, t.number_of_errors
        ),
    ];
    if let Some(flow) = t.flow_id {
        lines.insert(2, format!("Flow:      {flow}"));
    }
    if let Some(e) = &t.last_error {
        lines.push(format!("Last error: {e}"));
    }
    lines.join("\n")
}

fn table(list: &TimerList) -> String {
    if list.timers.is_empty() {
        return "no timers (create one with `lattice timer create`)".into();
    }
    let mut out = vec![format!(
        "{:<36}  {:<24}  {:<8}  {:<10}  {:<23}  {:>5}",
        "ID", "NAME", "TYPE", "STATUS", "NEXT RUN", "RUNS"
    )];
    for t in &list.timers {
        out.push(format!(
            "{:<36}  {:<24}  {:<8}  {:<10}  {:<23}  {:>5}",
            t.id,
            t.name.chars().take(24).collect::<String>(),
            t.timer_type.as_str(),
            t.status.as_str(),
            when(t.next_run),
            t.number_of_runs
        ));
    }
    out.join("\n")
}

fn runs_table(list: &TimerRunList) -> String {
    if list.runs.is_empty() {
        return "no ticks yet".into();
    }
    let mut out = vec![format!(
        "{:>5}  {:<23}  {:<23}  {:<9}  {}",
        "SEQ", "DUE", "RAN", "STATUS", "STARTED / ERROR"
    )];
    for r in &list.runs {
        let what = match (&r.error, &r.resource_id) {
            (Some(e), _) => e.clone(),
            (None, Some(resource)) => resource.clone(),
            (None, None) => r.details["skipped"].as_str().unwrap_or("").to_owned(),
        };
        out.push(format!(
            "{:>5}  {:<23}  {:<23}  {:<9}  {}",
            r.seq,
            when(Some(r.due_at)),
            when(r.ran_at),
            r.status.as_str(),
            what
        ));
    }
    out.join("\n")
}
