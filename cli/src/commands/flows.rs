//! `lattice flow ...`: flows (a definition in the Globus Flows language,
//! from a JSON or YAML file, plus its input schema, metadata and roles),
//! starting runs (and `--wait`ing for them), and managing runs: list,
//! show, log (and `--follow`), cancel, resume, release, relabel, approve.
//! Flows may be named by id or title; principals of roles are written as
//! for `lattice acl` (a username, email or group name is resolved).

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use lattice_client::{Client, ClientError, RunFilter};
use lattice_flows::model::{ChoiceRule, FlowDefinition, State, Transition};
use lattice_protocol::flows::{
    DefinitionProblem, FlowCreate, FlowInfo, FlowList, FlowUpdate, RunApprove, RunInfo, RunList,
    RunLog, RunLogEntry, RunStart, RunStatus, RunUpdate, ValidationReport,
};
use lattice_protocol::{FlowId, FlowRunId};
use serde_json::{Map, Value};

use crate::commands::sharing::principal;
use crate::commands::tasks::{ExitWith, EXIT_TASK_FAILED, EXIT_TIMEOUT};
use crate::context::Context;
use crate::output::{id_of, one_named, UsageError};

#[derive(Subcommand, Debug)]
pub(crate) enum FlowCommand {
    /// Create a flow from a JSON or YAML file: a bare definition
    /// (`{StartAt, States}`) or a whole flow document (`{definition,
    /// input_schema, title, ...}`); options override the file. Prints the
    /// flow's id. Example: `lattice flow create hello.yaml --title Hello --starter all_authenticated_users`.
    Create {
        /// The flow file, JSON or YAML (`-` reads standard input).
        file: String,
        #[command(flatten)]
        fields: FlowFields,
    },
    /// Change a flow (administrators): a new definition or document from
    /// FILE, and/or the options; a role option replaces that role's list.
    /// Example: `lattice flow update Hello hello-v2.yaml --viewer public`.
    Update {
        /// Flow id or title.
        flow: String,
        /// A new definition or flow document, JSON or YAML (`-` reads standard input).
        file: Option<String>,
        #[command(flatten)]
        fields: FlowFields,
    },
    /// One flow: its metadata, roles and states drawn as a graph from
    /// StartAt. Example: `lattice flow show Hello`.
    Show {
        /// Flow id or title.
        flow: String,
    },
    /// The flows you own or hold a role on. Example: `lattice flow list`.
    List,
    /// Delete a flow (owner and administrators). Example: `lattice flow delete Hello`.
    Delete {
        /// Flow id or title.
        flow: String,
    },
    /// Check a flow file without creating anything: prints every error and
    /// warning with its state and field; exits 2 when it has errors.
    /// Example: `lattice flow validate hello.yaml`.
    Validate {
        /// The flow file, JSON or YAML (`-` reads standard input).
        file: String,
    },
    /// Start a run of a flow; prints the run id (with --wait, the finished
    /// run). Example: `lattice flow start Hello --input '{"name": "Ada"}' --wait`.
    Start(StartArgs),
    /// List, show, follow and manage runs (`lattice flow run list --status active`).
    #[command(subcommand)]
    Run(RunCommand),
}

/// The options `create` and `update` share; each overrides the file.
#[derive(Args, Debug, Default)]
pub(crate) struct FlowFields {
    /// The flow's title (flows may be named by it).
    #[arg(long)]
    title: Option<String>,
    /// A line under the title.
    #[arg(long)]
    subtitle: Option<String>,
    /// What the flow does.
    #[arg(long)]
    description: Option<String>,
    /// A keyword to find the flow by; repeatable (replaces the file's keywords).
    #[arg(long = "keyword", value_name = "K")]
    keywords: Vec<String>,
    /// JSON Schema (JSON or YAML file) every run's input must satisfy.
    #[arg(long, value_name = "FILE")]
    input_schema: Option<String>,
    /// May change and delete the flow and manage its runs; repeatable. A username, email, group name, identity:ID, group:ID or all_authenticated_users.
    #[arg(long = "administrator", value_name = "PRINCIPAL")]
    administrators: Vec<String>,
    /// May start runs; repeatable. As --administrator.
    #[arg(long = "starter", value_name = "PRINCIPAL")]
    starters: Vec<String>,
    /// May see the flow; repeatable. As --administrator, or `public`.
    #[arg(long = "viewer", value_name = "PRINCIPAL")]
    viewers: Vec<String>,
    /// May cancel, resume, relabel and release every run of the flow; repeatable.
    #[arg(long = "run-manager", value_name = "PRINCIPAL")]
    run_managers: Vec<String>,
    /// May see every run of the flow and its log; repeatable.
    #[arg(long = "run-monitor", value_name = "PRINCIPAL")]
    run_monitors: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct StartArgs {
    /// Flow id or title.
    flow: String,
    /// The run's input: JSON, or @FILE for a JSON or YAML file (`@-`: standard input). Default `{}`.
    #[arg(long, value_name = "JSON|@FILE")]
    input: Option<String>,
    /// A label for the run (shown in `lattice flow run list`).
    #[arg(long)]
    label: Option<String>,
    /// A tag; repeatable.
    #[arg(long = "tag", value_name = "T")]
    tags: Vec<String>,
    /// Your id for this start: starting again with the same id answers the same run.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// May manage this run; repeatable. A username, email, group name or principal.
    #[arg(long = "run-manager", value_name = "PRINCIPAL")]
    run_managers: Vec<String>,
    /// May see this run and its log; repeatable.
    #[arg(long = "run-monitor", value_name = "PRINCIPAL")]
    run_monitors: Vec<String>,
    /// Wait for the run to finish: exit 0 when it SUCCEEDED, 6 when it FAILED, 7 on timeout.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds (exit 7; the run goes on).
    #[arg(long, default_value_t = 3600, value_name = "SECS", requires = "wait")]
    timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StatusArg {
    /// Running.
    Active,
    /// Waiting on a person (an approval) or on an action.
    Inactive,
    /// Finished with an output.
    Succeeded,
    /// Finished with an error (or cancelled).
    Failed,
}

impl From<StatusArg> for RunStatus {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Active => RunStatus::Active,
            StatusArg::Inactive => RunStatus::Inactive,
            StatusArg::Succeeded => RunStatus::Succeeded,
            StatusArg::Failed => RunStatus::Failed,
        }
    }
}

fn run_id_parser() -> impl Fn(&str) -> Result<FlowRunId, String> + Clone + Send + Sync + 'static {
    id_of::<FlowRunId>("run", "`lattice flow run list`")
}

#[derive(Subcommand, Debug)]
pub(crate) enum RunCommand {
    /// Runs you may see, newest first, as a table. Example: `lattice flow run list --flow Hello --status failed`.
    List {
        /// Only runs of this flow (id or title).
        #[arg(long)]
        flow: Option<String>,
        /// Only runs with this status; repeatable.
        #[arg(long, value_enum)]
        status: Vec<StatusArg>,
        /// Only runs with this label.
        #[arg(long)]
        label: Option<String>,
        /// Runs per page.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Every page, not just the first.
        #[arg(long)]
        all: bool,
    },
    /// One run: status, times, and its output, error or what it waits on.
    /// Example: `lattice flow run show RUN`.
    Show {
        /// The run id (printed by `lattice flow start`).
        #[arg(value_parser = run_id_parser())]
        run: FlowRunId,
    },
    /// A run's log, one line per entry; --follow prints new entries until
    /// the run finishes. Example: `lattice flow run log RUN --follow`.
    Log {
        /// The run id.
        #[arg(value_parser = run_id_parser())]
        run: FlowRunId,
        /// Keep printing new entries until the run has finished.
        #[arg(long)]
        follow: bool,
    },
    /// Cancel a run (its owner and run managers). Example: `lattice flow run cancel RUN`.
    Cancel {
        /// The run id.
        #[arg(value_parser = run_id_parser())]
        run: FlowRunId,
    },
    /// Resume a run waiting on an action (after a consent or a fix). Example: `lattice flow run resume RUN`.
    Resume {
        /// The run id.
        #[arg(value_parser = run_id_parser())]
        run: FlowRunId,
    },
    /// Forget a finished run and its log. Example: `lattice flow run release RUN`.
    Release {
        /// The run id.
        #[arg(value_parser = run_id_parser())]
        run: FlowRunId,
    },
    /// Change a run's label, tags or roles. Example: `lattice flow run update RUN --label nightly --tag prod`.
    Update {
        /// The run id.
        #[arg(value_parser = run_id_parser())]
        run: FlowRunId,
        /// The new label.
        #[arg(long)]
        label: Option<String>,
        /// A tag; repeatable (replaces the run's tags).
        #[arg(long = "tag", value_name = "T")]
        tags: Vec<String>,
        /// May manage this run; repeatable (replaces the run's list).
        #[arg(long = "run-manager", value_name = "PRINCIPAL")]
        run_managers: Vec<String>,
        /// May see this run; repeatable (replaces the run's list).
        #[arg(long = "run-monitor", value_name = "PRINCIPAL")]
        run_monitors: Vec<String>,
    },
    /// Answer a run's waiting approval or input step. Example:
    /// `lattice flow run approve RUN --option yes`.
    Approve {
        /// The run id.
        #[arg(value_parser = run_id_parser())]
        run: FlowRunId,
        /// One of the options the step offers (default: its first).
        #[arg(long, value_name = "X")]
        option: Option<String>,
        /// Input for an input step: JSON, or @FILE (JSON or YAML).
        #[arg(long, value_name = "JSON|@FILE")]
        input: Option<String>,
        /// Which waiting step, when several wait at once (its request id).
        #[arg(long, value_name = "R")]
        request_id: Option<String>,
    },
}

pub(crate) async fn run(ctx: &Context, command: FlowCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        FlowCommand::Create { file, fields } => {
            let mut document = read_flow_file(&file)?;
            resolve_roles(&client, &mut document).await?;
            overlay(&mut document, fields.resolve(&client).await?);
            let Some(create) = to_create(document) else {
                return Err(UsageError(format!("{file}: no definition")).into());
            };
            let flow = match client.create_flow(&create).await {
                Ok(flow) => flow,
                Err(err) => return Err(explain_refusal(&client, &create, err).await),
            };
            print_warnings(&flow.warnings);
            ctx.output.emit(&flow, |f| f.id.to_string())
        }
        FlowCommand::Update { flow, file, fields } => {
            let id = flow_id(&client, &flow).await?;
            let mut update = match &file {
                Some(file) => read_flow_file(file)?,
                None => FlowUpdate::default(),
            };
            resolve_roles(&client, &mut update).await?;
            overlay(&mut update, fields.resolve(&client).await?);
            if is_empty(&update) {
                return Err(UsageError(
                    "nothing to change: give a FILE or an option (--title, --viewer, ...)".into(),
                )
                .into());
            }
            let flow = client.update_flow(id, &update).await?;
            print_warnings(&flow.warnings);
            ctx.output.emit(&flow, flow_text)
        }
        FlowCommand::Show { flow } => {
            let id = flow_id(&client, &flow).await?;
            let flow = client.flow(id).await?;
            ctx.output.emit(&flow, flow_text)
        }
        FlowCommand::List => {
            let flows = client.flows().await?;
            ctx.output.emit(&flows, flow_table)
        }
        FlowCommand::Delete { flow } => {
            let id = flow_id(&client, &flow).await?;
            client.delete_flow(id).await?;
            ctx.output.emit(&serde_json::json!({ "deleted": id }), |_| {
                format!("deleted flow {id}")
            })
        }
        FlowCommand::Validate { file } => {
            let document = read_flow_file(&file)?;
            let Some(create) = to_create(document) else {
                return Err(UsageError(format!("{file}: no definition")).into());
            };
            let report = client.validate_flow(&create).await?;
            ctx.output.emit(&report, report_text)?;
            if !report.valid {
                return Err(UsageError(format!(
                    "{file} is not a valid flow: {} error{}",
                    report.errors.len(),
                    if report.errors.len() == 1 { "" } else { "s" }
                ))
                .into());
            }
            Ok(())
        }
        FlowCommand::Start(args) => start(ctx, &client, args).await,
        FlowCommand::Run(command) => runs(ctx, &client, command).await,
    }
}

async fn start(ctx: &Context, client: &Client, args: StartArgs) -> anyhow::Result<()> {
    let id = flow_id(client, &args.flow).await?;
    let body = match &args.input {
        Some(input) => read_input(input)?,
        None => Value::Object(Map::new()),
    };
    let request = RunStart {
        body,
        request_id: args.request_id,
        label: args.label,
        tags: args.tags,
        run_monitors: principals(client, &args.run_monitors).await?,
        run_managers: principals(client, &args.run_managers).await?,
    };
    let run = client.start_flow(id, &request).await?;
    if !args.wait {
        return ctx.output.emit(&run, |r| r.run_id.to_string());
    }
    let run = wait_for(client, run, Duration::from_secs(args.timeout)).await?;
    finish(ctx, &run)
}

/// Polls a run until it is final (100 ms, doubling up to 2 s between
/// polls); says once on stderr what an INACTIVE run waits on.
async fn wait_for(client: &Client, mut run: RunInfo, timeout: Duration) -> anyhow::Result<RunInfo> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(100);
    let mut said: Option<String> = None;
    loop {
        if run.status.is_final() {
            return Ok(run);
        }
        if run.status == RunStatus::Inactive {
            let waiting = waiting_text(&run);
            if said.as_deref() != Some(waiting.as_str()) {
                eprintln!("{waiting}");
                said = Some(waiting);
            }
        }
        if Instant::now() >= deadline {
            return Err(ExitWith {
                code: EXIT_TIMEOUT,
                message: format!(
                    "run {} is still {} after {} s; it goes on (`lattice flow run show {}`)",
                    run.run_id,
                    run.display_status,
                    timeout.as_secs(),
                    run.run_id
                ),
            }
            .into());
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_secs(2));
        run = client.run(run.run_id).await?;
    }
}

/// Prints a final run; a FAILED one exits 6 with its Error and Cause on stderr.
fn finish(ctx: &Context, run: &RunInfo) -> anyhow::Result<()> {
    ctx.output.emit(run, run_text)?;
    if run.status == RunStatus::Failed {
        let (error, cause) = run_error(run);
        eprintln!("Error: {error}");
        eprintln!("Cause: {cause}");
        return Err(ExitWith {
            code: EXIT_TASK_FAILED,
            message: format!("run {} failed: {error}", run.run_id),
        }
        .into());
    }
    Ok(())
}

async fn runs(ctx: &Context, client: &Client, command: RunCommand) -> anyhow::Result<()> {
    match command {
        RunCommand::List {
            flow,
            status,
            label,
            limit,
            all,
        } => {
            let flow_id = match &flow {
                Some(flow) => Some(flow_id(client, flow).await?),
                None => None,
            };
            let mut filter = RunFilter {
                flow_id,
                statuses: status.into_iter().map(RunStatus::from).collect(),
                label,
                limit,
                marker: None,
            };
            let mut list = client.runs(&filter).await?;
            if all {
                while let Some(marker) = list.marker.take() {
                    filter.marker = Some(marker);
                    let page = client.runs(&filter).await?;
                    list.runs.extend(page.runs);
                    list.marker = page.marker;
                }
            }
            ctx.output.emit(&list, run_table)
        }
        RunCommand::Show { run } => {
            let run = client.run(run).await?;
            ctx.output.emit(&run, run_text)
        }
        RunCommand::Log { run, follow } => log(ctx, client, run, follow).await,
        RunCommand::Cancel { run } => {
            let run = client.cancel_run(run).await?;
            ctx.output.emit(&run, run_text)
        }
        RunCommand::Resume { run } => {
            let run = client.resume_run(run).await?;
            ctx.output.emit(&run, run_text)
        }
        RunCommand::Release { run } => {
            client.release_run(run).await?;
            ctx.output
                .emit(&serde_json::json!({ "released": run }), |_| {
                    format!("released run {run}")
                })
        }
        RunCommand::Update {
            run,
            label,
            tags,
            run_managers,
            run_monitors,
        } => {
            let update = RunUpdate {
                label,
                tags: (!tags.is_empty()).then_some(tags),
                run_managers: if run_managers.is_empty() {
                    None
                } else {
                    Some(principals(client, &run_managers).await?)
                },
                run_monitors: if run_monitors.is_empty() {
                    None
                } else {
                    Some(principals(client, &run_monitors).await?)
                },
            };
            if update.label.is_none()
                && update.tags.is_none()
                && update.run_managers.is_none()
                && update.run_monitors.is_none()
            {
                return Err(UsageError(
                    "nothing to change: give --label, --tag, --run-manager or --run-monitor".into(),
                )
                .into());
            }
            let run = client.update_run(run, &update).await?;
            ctx.output.emit(&run, run_text)
        }
        RunCommand::Approve {
            run,
            option,
            input,
            request_id,
        } => {
            let input = match &input {
                Some(input) => Some(read_input(input)?),
                None => None,
            };
            let run = client
                .approve_run(
                    run,
                    &RunApprove {
                        option,
                        input,
                        request_id,
                    },
                )
                .await?;
            ctx.output.emit(&run, run_text)
        }
    }
}

/// Prints a run's log: every page at once, or with `follow` each entry as
/// it comes until the run is final.
async fn log(ctx: &Context, client: &Client, run: FlowRunId, follow: bool) -> anyhow::Result<()> {
    if !follow {
        let mut all = RunLog {
            entries: Vec::new(),
            has_next_page: false,
        };
        let mut after = None;
        loop {
            let page = client.run_log(run, after, None).await?;
            after = page.entries.last().map(|e| e.seq).or(after);
            let more = page.has_next_page && !page.entries.is_empty();
            all.entries.extend(page.entries);
            if !more {
                break;
            }
        }
        return ctx.output.emit(&all, |log| {
            log.entries
                .iter()
                .map(log_line)
                .collect::<Vec<_>>()
                .join("\n")
        });
    }
    let mut after = None;
    let mut pause = Duration::from_millis(100);
    loop {
        // Whether the run was final before this read: then nothing follows it.
        let finished = client.run(run).await?.status.is_final();
        loop {
            let page = client.run_log(run, after, None).await?;
            for entry in &page.entries {
                ctx.output.emit(entry, log_line)?;
            }
            if let Some(last) = page.entries.last() {
                after = Some(last.seq);
                pause = Duration::from_millis(100);
            }
            if !page.has_next_page || page.entries.is_empty() {
                break;
            }
        }
        if finished {
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

// ---- naming --------------------------------------------------------------

/// A flow by id, or by title among the flows you can see.
pub(crate) async fn flow_id(client: &Client, given: &str) -> anyhow::Result<FlowId> {
    if let Ok(id) = given.parse::<FlowId>() {
        return Ok(id);
    }
    let FlowList { flows } = client.flows().await?;
    Ok(one_named(
        "flow",
        given,
        &flows,
        |f| f.title.as_str(),
        |f| f.id,
    )?)
}

/// Principals as written (names resolved) in the notation the API takes.
async fn principals(client: &Client, given: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(given.len());
    for p in given {
        out.push(principal(client, p).await?.to_string());
    }
    Ok(out)
}

async fn resolve_list(client: &Client, list: &mut Option<Vec<String>>) -> anyhow::Result<()> {
    if let Some(list) = list {
        *list = principals(client, list).await?;
    }
    Ok(())
}

/// Resolves the names in a flow file's role lists.
async fn resolve_roles(client: &Client, document: &mut FlowUpdate) -> anyhow::Result<()> {
    resolve_list(client, &mut document.flow_administrators).await?;
    resolve_list(client, &mut document.flow_starters).await?;
    resolve_list(client, &mut document.flow_viewers).await?;
    resolve_list(client, &mut document.run_managers).await?;
    resolve_list(client, &mut document.run_monitors).await
}

impl FlowFields {
    /// The options given, principals resolved, as an update.
    async fn resolve(self, client: &Client) -> anyhow::Result<FlowUpdate> {
        let roles = |list: Vec<String>| (!list.is_empty()).then_some(list);
        let mut update = FlowUpdate {
            definition: None,
            input_schema: match &self.input_schema {
                Some(file) => Some(read_document(file)?),
                None => None,
            },
            title: self.title,
            subtitle: self.subtitle,
            description: self.description,
            keywords: roles(self.keywords),
            flow_administrators: roles(self.administrators),
            flow_starters: roles(self.starters),
            flow_viewers: roles(self.viewers),
            run_managers: roles(self.run_managers),
            run_monitors: roles(self.run_monitors),
        };
        resolve_roles(client, &mut update).await?;
        Ok(update)
    }
}

// ---- flow files (pure) -----------------------------------------------------

/// The fields of a flow document; what a whole-document file may hold.
const DOCUMENT_FIELDS: &[&str] = &[
    "definition",
    "input_schema",
    "title",
    "subtitle",
    "description",
    "keywords",
    "flow_administrators",
    "flow_starters",
    "flow_viewers",
    "run_managers",
    "run_monitors",
];

/// What `lattice flow show --format json` prints besides the document:
/// ignored, so its output can be edited and given back.
const READ_ONLY_FIELDS: &[&str] = &[
    "id",
    "action_url",
    "owner",
    "user_roles",
    "created_at",
    "updated_at",
    "warnings",
];

/// Reads a flow file (`-`: standard input) as a flow document; a usage
/// error (exit 2) when it cannot be read or is neither shape.
fn read_flow_file(file: &str) -> anyhow::Result<FlowUpdate> {
    let value = read_document(file)?;
    parse_flow(value).map_err(|e| UsageError(format!("{file}: {e}")).into())
}

/// Reads a JSON or YAML file (`-`: standard input) into a JSON value.
fn read_document(file: &str) -> anyhow::Result<Value> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|e| UsageError(format!("cannot read {file}: {e}")))?;
    parse_text(&text, file).map_err(|e| UsageError(format!("{file}: {e}")).into())
}

/// JSON or YAML: by the name's extension (`.yaml`, `.yml`), else JSON
/// first and YAML when that fails.
fn parse_text(text: &str, name: &str) -> Result<Value, String> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        return serde_yaml_ng::from_str(text).map_err(|e| format!("not YAML: {e}"));
    }
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(json) => serde_yaml_ng::from_str::<Value>(text)
            .map_err(|yaml| format!("neither JSON ({json}) nor YAML ({yaml})")),
    }
}

/// A bare definition (`{StartAt, States}`) or a whole flow document (it
/// has a `definition` key), as the fields it sets.
fn parse_flow(value: Value) -> Result<FlowUpdate, String> {
    let Value::Object(mut map) = value else {
        return Err(
            "expected a mapping: a definition (StartAt, States) or a flow document (definition, title, ...)"
                .into(),
        );
    };
    if !map.contains_key("definition") {
        if !map.contains_key("StartAt") && !map.contains_key("States") {
            return Err(
                "neither a definition (StartAt, States) nor a flow document (definition, input_schema, title, ...)"
                    .into(),
            );
        }
        return Ok(FlowUpdate {
            definition: Some(Value::Object(map)),
            ..Default::default()
        });
    }
    map.retain(|key, _| !READ_ONLY_FIELDS.contains(&key.as_str()));
    let unknown: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !DOCUMENT_FIELDS.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "unknown field{} {} in the flow document (known: {})",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", "),
            DOCUMENT_FIELDS.join(", ")
        ));
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| format!("not a flow document: {e}"))
}

/// Sets every field `over` sets.
fn overlay(base: &mut FlowUpdate, over: FlowUpdate) {
    fn set<T>(base: &mut Option<T>, over: Option<T>) {
        if over.is_some() {
            *base = over;
        }
    }
    set(&mut base.definition, over.definition);
    set(&mut base.input_schema, over.input_schema);
    set(&mut base.title, over.title);
    set(&mut base.subtitle, over.subtitle);
    set(&mut base.description, over.description);
    set(&mut base.keywords, over.keywords);
    set(&mut base.flow_administrators, over.flow_administrators);
    set(&mut base.flow_starters, over.flow_starters);
    set(&mut base.flow_viewers, over.flow_viewers);
    set(&mut base.run_managers, over.run_managers);
    set(&mut base.run_monitors, over.run_monitors);
}

fn is_empty(update: &FlowUpdate) -> bool {
    serde_json::to_value(update).is_ok_and(|v| v.as_object().is_some_and(Map::is_empty))
}

/// The create request of a document; `None` without a definition.
fn to_create(document: FlowUpdate) -> Option<FlowCreate> {
    Some(FlowCreate {
        definition: document.definition?,
        input_schema: document
            .input_schema
            .unwrap_or_else(|| Value::Object(Map::new())),
        title: document.title.unwrap_or_default(),
        subtitle: document.subtitle.unwrap_or_default(),
        description: document.description.unwrap_or_default(),
        keywords: document.keywords.unwrap_or_default(),
        flow_administrators: document.flow_administrators.unwrap_or_default(),
        flow_starters: document.flow_starters.unwrap_or_default(),
        flow_viewers: document.flow_viewers.unwrap_or_default(),
        run_managers: document.run_managers.unwrap_or_default(),
        run_monitors: document.run_monitors.unwrap_or_default(),
    })
}

/// `--input`: JSON, or `@FILE` (JSON or YAML; `@-` standard input).
fn read_input(given: &str) -> anyhow::Result<Value> {
    match given.strip_prefix('@') {
        Some(file) => read_document(file),
        None => serde_json::from_str(given).map_err(|e| {
            UsageError(format!("--input is not JSON ({e}); use @FILE for a file")).into()
        }),
    }
}

/// When the service refused a definition, asks the validator for every
/// problem and prints them (the refusal names one), then returns `err`.
async fn explain_refusal(client: &Client, create: &FlowCreate, err: ClientError) -> anyhow::Error {
    if let ClientError::Api {
        status: 400 | 422, ..
    } = &err
    {
        if let Ok(report) = client.validate_flow(create).await {
            for problem in &report.errors {
                eprintln!("{}", problem_line("error", problem));
            }
        }
    }
    err.into()
}

fn print_warnings(warnings: &[DefinitionProblem]) {
    for warning in warnings {
        eprintln!("{}", problem_line("warning", warning));
    }
}

// ---- text output -----------------------------------------------------------

/// `error: state Transfer, field Next: ...`.
fn problem_line(kind: &str, p: &DefinitionProblem) -> String {
    let place = match (p.state.is_empty(), p.field.is_empty()) {
        (true, true) => "definition".to_owned(),
        (true, false) => format!("field {}", p.field),
        (false, true) => format!("state {}", p.state),
        (false, false) => format!("state {}, field {}", p.state, p.field),
    };
    format!("{kind}: {place}: {}", p.message)
}

fn report_text(r: &ValidationReport) -> String {
    let mut lines: Vec<String> = r
        .errors
        .iter()
        .map(|p| problem_line("error", p))
        .chain(r.warnings.iter().map(|p| problem_line("warning", p)))
        .collect();
    lines.push(if r.valid {
        format!(
            "valid{}",
            match r.warnings.len() {
                0 => String::new(),
                1 => " (1 warning)".into(),
                n => format!(" ({n} warnings)"),
            }
        )
    } else {
        format!(
            "invalid: {} errors, {} warnings",
            r.errors.len(),
            r.warnings.len()
        )
    });
    lines.join("\n")
}

fn list_or_dash(list: &[String]) -> String {
    if list.is_empty() {
        "-".into()
    } else {
        list.join(", ")
    }
}

fn flow_text(f: &FlowInfo) -> String {
    let mut out = format!("{}\n  title:          {}", f.id, f.title);
    if !f.subtitle.is_empty() {
        out.push_str(&format!("\n  subtitle:       {}", f.subtitle));
    }
    if !f.description.is_empty() {
        out.push_str(&format!("\n  description:    {}", f.description));
    }
    if !f.keywords.is_empty() {
        out.push_str(&format!("\n  keywords:       {}", f.keywords.join(", ")));
    }
    out.push_str(&format!(
        "\n  owner:          identity:{}\n  action url:     {}\n  you:            {}\n  administrators: {}\n  starters:       {}\n  viewers:        {}\n  run managers:   {}\n  run monitors:   {}\n  updated:        {}",
        f.owner,
        f.action_url,
        list_or_dash(&f.user_roles),
        list_or_dash(&f.flow_administrators),
        list_or_dash(&f.flow_starters),
        list_or_dash(&f.flow_viewers),
        list_or_dash(&f.run_managers),
        list_or_dash(&f.run_monitors),
        f.updated_at.format("%Y-%m-%d %H:%M:%S UTC"),
    ));
    let schema_is_open = f.input_schema.as_object().is_some_and(Map::is_empty);
    if !schema_is_open {
        out.push_str(&format!(
            "\n  input schema:\n{}",
            indent(&pretty(&f.input_schema), 4)
        ));
    }
    out.push_str("\n  states:");
    match serde_json::from_value::<FlowDefinition>(f.definition.clone()) {
        Ok(definition) => {
            for line in graph(&definition) {
                out.push_str(&format!("\n    {line}"));
            }
        }
        Err(e) => out.push_str(&format!(
            "\n    (cannot draw the definition: {e}; see --format json)"
        )),
    }
    for w in &f.warnings {
        out.push_str(&format!("\n  {}", problem_line("warning", w)));
    }
    out
}

fn flow_table(list: &FlowList) -> String {
    if list.flows.is_empty() {
        return "no flows (`lattice flow create FILE`)".into();
    }
    let rows: Vec<[String; 4]> = list
        .flows
        .iter()
        .map(|f| {
            [
                f.id.to_string(),
                f.title.clone(),
                f.user_roles.first().cloned().unwrap_or_default(),
                f.updated_at.format("%Y-%m-%d %H:%M").to_string(),
            ]
        })
        .collect();
    table(&["ID", "TITLE", "YOU", "UPDATED"], &rows)
}

/// Columns padded to their widest cell (the last one not padded).
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        text.trim_end().to_owned()
    };
    let mut out = vec![line(header.to_vec())];
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn run_table(list: &RunList) -> String {
    let rows: Vec<[String; 6]> = list
        .runs
        .iter()
        .map(|r| {
            [
                r.run_id.to_string(),
                r.display_status.clone(),
                r.label.clone().unwrap_or_else(|| "-".into()),
                r.flow_title.clone(),
                time(&r.start_time),
                r.completion_time
                    .as_ref()
                    .map(time)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut out = if rows.is_empty() {
        "no runs".to_owned()
    } else {
        table(
            &["ID", "STATUS", "LABEL", "FLOW", "STARTED", "COMPLETED"],
            &rows,
        )
    };
    if list.marker.is_some() {
        out.push_str("\n(more runs: --all)");
    }
    out
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A FAILED run's `Error` and `Cause`.
fn run_error(run: &RunInfo) -> (String, String) {
    let error = &run.details["error"];
    let field = |name: &str| match &error[name] {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    (field("Error"), field("Cause"))
}

/// What an INACTIVE run waits on, and how to move it on.
fn waiting_text(run: &RunInfo) -> String {
    let waiting_on = &run.details["waiting_on"];
    let said = waiting_on.to_string().to_lowercase();
    if run.display_status.to_lowercase().contains("approval") || said.contains("approval") {
        return format!(
            "waiting for approval: lattice flow run approve {}",
            run.run_id
        );
    }
    let what = if waiting_on.is_null() {
        run.display_status.clone()
    } else {
        short(waiting_on, 200)
    };
    format!(
        "run {} is waiting: {what} (`lattice flow run show {}`; `lattice flow run resume {}` once it may go on)",
        run.run_id, run.run_id, run.run_id
    )
}

fn short(value: &Value, max: usize) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > max {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    } else {
        text
    }
}

fn run_text(r: &RunInfo) -> String {
    let mut out = format!("run {}: {}", r.run_id, r.display_status);
    out.push_str(&format!(
        "\n  flow:        {} ({})",
        r.flow_title, r.flow_id
    ));
    if let Some(label) = &r.label {
        out.push_str(&format!("\n  label:       {label}"));
    }
    if !r.tags.is_empty() {
        out.push_str(&format!("\n  tags:        {}", r.tags.join(", ")));
    }
    out.push_str(&format!(
        "\n  status:      {}\n  started:     {}\n  completed:   {}\n  transitions: {}\n  started by:  identity:{}",
        lattice_client::flows::status_name(r.status),
        time(&r.start_time),
        r.completion_time.as_ref().map(time).unwrap_or_else(|| "-".into()),
        r.transitions,
        r.created_by,
    ));
    match r.status {
        RunStatus::Succeeded => {
            out.push_str(&format!(
                "\n  output:\n{}",
                indent(&pretty(&r.details["output"]), 4)
            ));
        }
        RunStatus::Failed => {
            let (error, cause) = run_error(r);
            out.push_str(&format!("\n  error:       {error}\n  cause:       {cause}"));
        }
        RunStatus::Inactive => {
            out.push_str(&format!("\n  {}", waiting_text(r)));
            if !r.details["waiting_on"].is_null() {
                out.push_str(&format!(
                    "\n  waiting on:\n{}",
                    indent(&pretty(&r.details["waiting_on"]), 4)
                ));
            }
        }
        RunStatus::Active => {}
    }
    out
}

fn log_line(e: &RunLogEntry) -> String {
    let details = if e.details.is_null() || e.details.as_object().is_some_and(Map::is_empty) {
        String::new()
    } else {
        format!("  {}", short(&e.details, 160))
    };
    format!(
        "{:>4}  {}  {:<16} {}{details}",
        e.seq,
        e.time.format("%H:%M:%S%.3f"),
        e.code,
        if e.state.is_empty() { "-" } else { &e.state },
    )
}

// ---- the definition as a graph (pure) --------------------------------------

/// One line per state, breadth-first from StartAt, each with its type and
/// where it goes; the inner machines of Map and Parallel indented under
/// their state; states nothing reaches listed last.
pub(crate) fn graph(definition: &FlowDefinition) -> Vec<String> {
    let mut lines = Vec::new();
    draw(definition, 0, &mut lines);
    lines
}

fn draw(definition: &FlowDefinition, depth: usize, lines: &mut Vec<String>) {
    let pad = "  ".repeat(depth);
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([definition.start_at.clone()]);
    seen.insert(definition.start_at.clone());
    while let Some(name) = queue.pop_front() {
        let Some(state) = definition.states.get(&name) else {
            lines.push(format!("{pad}{name} (missing)"));
            continue;
        };
        lines.push(format!("{pad}{}", state_line(&name, state)));
        match state {
            State::Parallel(p) => {
                for (i, branch) in p.branches.iter().enumerate() {
                    lines.push(format!("{pad}  branch {}:", i + 1));
                    draw(branch, depth + 2, lines);
                }
            }
            State::Map(m) => draw(&m.iterator, depth + 1, lines),
            _ => {}
        }
        for next in successors(state) {
            if seen.insert(next.clone()) {
                queue.push_back(next);
            }
        }
    }
    let unreachable: Vec<&String> = definition
        .states
        .keys()
        .filter(|name| !seen.contains(*name))
        .collect();
    if !unreachable.is_empty() {
        lines.push(format!(
            "{pad}(not reached from {}: {})",
            definition.start_at,
            unreachable
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}

/// Every state a state may go to, in the order drawn.
fn successors(state: &State) -> Vec<String> {
    let mut out = Vec::new();
    let (transition, catch) = match state {
        State::Action(s) => (Some(&s.transition), &s.catch[..]),
        State::Pass(s) => (Some(&s.transition), &[][..]),
        State::ExpressionEval(s) => (Some(&s.transition), &[][..]),
        State::Wait(s) => (Some(&s.transition), &[][..]),
        State::Parallel(s) => (Some(&s.transition), &s.catch[..]),
        State::Map(s) => (Some(&s.transition), &s.catch[..]),
        State::Choice(c) => {
            out.extend(c.choices.iter().filter_map(|r| r.next.clone()));
            out.extend(c.default.clone());
            (None, &[][..])
        }
        State::Fail(_) | State::Succeed(_) => (None, &[][..]),
    };
    if let Some(next) = transition.and_then(|t| t.next.clone()) {
        out.push(next);
    }
    out.extend(catch.iter().map(|c| c.next.clone()));
    out
}

fn goes(t: &Transition) -> String {
    match (&t.next, t.end) {
        (Some(next), _) => format!(" -> {next}"),
        (None, Some(true)) => " -> end".into(),
        _ => " -> ?".into(),
    }
}

fn catches(catch: &[lattice_flows::model::Catcher]) -> String {
    catch
        .iter()
        .map(|c| format!(", on {} -> {}", c.error_equals.join("|"), c.next))
        .collect()
}

fn retries(retry: &[lattice_flows::model::Retrier]) -> String {
    if retry.is_empty() {
        String::new()
    } else {
        let on: Vec<String> = retry.iter().map(|r| r.error_equals.join("|")).collect();
        format!(", retry on {}", on.join(", "))
    }
}

fn state_line(name: &str, state: &State) -> String {
    match state {
        State::Action(a) => format!(
            "{name} (Action {}{}){}{}",
            a.action_url,
            retries(&a.retry),
            goes(&a.transition),
            catches(&a.catch)
        ),
        State::Pass(p) => format!("{name} (Pass){}", goes(&p.transition)),
        State::ExpressionEval(e) => format!("{name} (ExpressionEval){}", goes(&e.transition)),
        State::Choice(c) => {
            let rules: Vec<String> = c
                .choices
                .iter()
                .map(|r| format!("{} if {}", r.next.as_deref().unwrap_or("?"), rule_text(r)))
                .collect();
            let default = match &c.default {
                Some(d) => format!(", else {d}"),
                None => ", else fail".into(),
            };
            format!("{name} (Choice) -> {}{default}", rules.join("; "))
        }
        State::Wait(w) => {
            let how = if let Some(s) = &w.seconds {
                format!("{} s", short(s, 40))
            } else if let Some(p) = &w.seconds_path {
                format!("{p} s")
            } else if let Some(t) = &w.timestamp {
                format!("until {t}")
            } else if let Some(p) = &w.timestamp_path {
                format!("until {p}")
            } else {
                "?".into()
            };
            format!("{name} (Wait {how}){}", goes(&w.transition))
        }
        State::Fail(f) => {
            let what = match (&f.error, &f.cause) {
                (Some(e), Some(c)) => format!(": {e}: {c}"),
                (Some(e), None) => format!(": {e}"),
                (None, Some(c)) => format!(": {c}"),
                (None, None) => String::new(),
            };
            format!("{name} (Fail{what})")
        }
        State::Succeed(_) => format!("{name} (Succeed)"),
        State::Parallel(p) => format!(
            "{name} (Parallel, {} branch{}{}){}{}",
            p.branches.len(),
            if p.branches.len() == 1 { "" } else { "es" },
            retries(&p.retry),
            goes(&p.transition),
            catches(&p.catch)
        ),
        State::Map(m) => {
            let over = m.items_path.as_deref().unwrap_or("$");
            let limit = match m.max_concurrency {
                Some(n) if n > 0 => format!(", max {n} at once"),
                _ => String::new(),
            };
            format!(
                "{name} (Map over {over}{limit}{}){}{}:",
                retries(&m.retry),
                goes(&m.transition),
                catches(&m.catch)
            )
        }
    }
}

/// A Choice rule as a condition: `$.ok == true`, `($.a > 1 and not ($.b is present))`.
fn rule_text(rule: &ChoiceRule) -> String {
    if let Some(all) = &rule.and {
        return format!(
            "({})",
            all.iter().map(rule_text).collect::<Vec<_>>().join(" and ")
        );
    }
    if let Some(any) = &rule.or {
        return format!(
            "({})",
            any.iter().map(rule_text).collect::<Vec<_>>().join(" or ")
        );
    }
    if let Some(not) = &rule.not {
        return format!("not {}", rule_text(not));
    }
    let variable = rule.variable.as_deref().unwrap_or("?");
    let Some((comparator, value)) = rule.comparison.iter().next() else {
        return format!("{variable} ?");
    };
    let is_path = comparator.ends_with("Path");
    let base = comparator.strip_suffix("Path").unwrap_or(comparator);
    let operand = if is_path {
        short(value, 60)
    } else {
        value.to_string()
    };
    let test = |what: &str| match value {
        Value::Bool(false) => format!("{variable} is not {what}"),
        _ => format!("{variable} is {what}"),
    };
    let op = if base.ends_with("GreaterThanEquals") {
        ">="
    } else if base.ends_with("LessThanEquals") {
        "<="
    } else if base.ends_with("GreaterThan") {
        ">"
    } else if base.ends_with("LessThan") {
        "<"
    } else if base.ends_with("Equals") {
        "=="
    } else {
        return match base {
            "StringMatches" => format!("{variable} matches {operand}"),
            "IsPresent" => test("present"),
            "IsNull" => test("null"),
            "IsString" => test("a string"),
            "IsNumeric" => test("a number"),
            "IsBoolean" => test("a boolean"),
            "IsTimestamp" => test("a timestamp"),
            other => format!("{variable} {other} {operand}"),
        };
    };
    format!("{variable} {op} {operand}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flow_files_are_json_or_yaml_definitions_or_documents() {
        let yaml = "StartAt: A\nStates:\n  A:\n    Type: Pass\n    End: true\n";
        // By extension, and YAML after JSON failed without one.
        for name in ["flow.yaml", "flow.YML", "flow.txt", "-"] {
            let doc = parse_flow(parse_text(yaml, name).unwrap()).unwrap();
            assert_eq!(doc.definition.unwrap()["StartAt"], json!("A"), "{name}");
            assert!(doc.title.is_none());
        }
        // JSON whole document: its fields kept, read-only fields of `show`'s output ignored.
        let text = r#"{"definition": {"StartAt": "A", "States": {"A": {"Type": "Succeed"}}},
            "title": "Hello", "keywords": ["k"], "flow_viewers": ["public"],
            "input_schema": {"type": "object"}, "id": "x", "user_roles": ["owner"]}"#;
        let doc = parse_flow(parse_text(text, "flow.json").unwrap()).unwrap();
        assert_eq!(doc.title.as_deref(), Some("Hello"));
        assert_eq!(doc.keywords, Some(vec!["k".to_owned()]));
        assert_eq!(doc.flow_viewers, Some(vec!["public".to_owned()]));
        assert_eq!(doc.input_schema, Some(json!({"type": "object"})));
        assert!(doc.subtitle.is_none(), "unset fields stay unset for update");
        // YAML whole document.
        let doc = parse_flow(
            parse_text(
                "title: Y\ndefinition:\n  StartAt: A\n  States: {A: {Type: Succeed}}\n",
                "f.yml",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(doc.title.as_deref(), Some("Y"));
        assert_eq!(
            doc.definition.unwrap()["States"]["A"]["Type"],
            json!("Succeed")
        );
        // Neither shape, typos, and text that is neither language.
        assert!(parse_flow(json!({"title": "x"}))
            .unwrap_err()
            .contains("neither"));
        assert!(parse_flow(json!([1])).unwrap_err().contains("mapping"));
        let typo = parse_flow(json!({"definition": {}, "titel": "x"})).unwrap_err();
        assert!(typo.contains("titel"), "{typo}");
        assert!(parse_text("{\"a\": [", "f.json").is_err());
        assert!(parse_text("a: [", "f.yaml").unwrap_err().contains("YAML"));
    }

    #[test]
    fn options_override_the_file_and_create_fills_defaults() {
        let mut doc = parse_flow(json!({
            "definition": {"StartAt": "A", "States": {}},
            "title": "From file", "description": "kept", "flow_starters": ["group:1"]
        }))
        .unwrap();
        overlay(
            &mut doc,
            FlowUpdate {
                title: Some("From flag".into()),
                flow_starters: Some(vec!["all_authenticated_users".into()]),
                ..Default::default()
            },
        );
        assert!(!is_empty(&doc));
        assert!(is_empty(&FlowUpdate::default()));
        let create = to_create(doc).unwrap();
        assert_eq!(create.title, "From flag");
        assert_eq!(create.description, "kept");
        assert_eq!(create.flow_starters, vec!["all_authenticated_users"]);
        assert_eq!(create.input_schema, json!({}));
        assert!(create.flow_viewers.is_empty());
        assert!(to_create(FlowUpdate::default()).is_none());
    }

    #[test]
    fn inputs_are_json_or_a_file() {
        assert_eq!(read_input(r#"{"n": 1}"#).unwrap(), json!({"n": 1}));
        assert!(read_input("{oops").is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.yaml");
        std::fs::write(&file, "n: 2\n").unwrap();
        assert_eq!(
            read_input(&format!("@{}", file.display())).unwrap(),
            json!({"n": 2})
        );
    }

    #[test]
    fn definitions_are_drawn_breadth_first_with_inner_machines_indented() {
        let definition: FlowDefinition = serde_json::from_value(json!({
            "StartAt": "Transfer",
            "States": {
                "Transfer": {"Type": "Action", "ActionUrl": "/v1/actions/transfer",
                    "Next": "Check",
                    "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Reject"}]},
                "Check": {"Type": "Choice", "Choices": [
                    {"Variable": "$.ok", "BooleanEquals": true, "Next": "Fanout"},
                    {"And": [
                        {"Variable": "$.n", "NumericGreaterThanEqualsPath": "$.min"},
                        {"Not": {"Variable": "$.skip", "IsPresent": true}}
                    ], "Next": "Both"}
                ], "Default": "Reject"},
                "Fanout": {"Type": "Map", "ItemsPath": "$.files", "MaxConcurrency": 4,
                    "Iterator": {"StartAt": "Analyse", "States": {
                        "Analyse": {"Type": "Action", "ActionUrl": "/v1/actions/compute", "End": true}
                    }},
                    "ResultPath": "$.analysed", "Next": "Pause"},
                "Both": {"Type": "Parallel", "Branches": [
                    {"StartAt": "Left", "States": {"Left": {"Type": "Pass", "End": true}}},
                    {"StartAt": "Right", "States": {"Right": {"Type": "Succeed"}}}
                ], "End": true},
                "Pause": {"Type": "Wait", "Seconds": 10, "Next": "Done"},
                "Reject": {"Type": "Fail", "Error": "Rejected", "Cause": "not ok"},
                "Done": {"Type": "Succeed"},
                "Orphan": {"Type": "Pass", "End": true}
            }
        }))
        .unwrap();
        let lines = graph(&definition);
        assert_eq!(
            lines,
            [
                "Transfer (Action /v1/actions/transfer) -> Check, on States.ALL -> Reject",
                "Check (Choice) -> Fanout if $.ok == true; Both if ($.n >= $.min and not $.skip is present), else Reject",
                "Reject (Fail: Rejected: not ok)",
                "Fanout (Map over $.files, max 4 at once) -> Pause:",
                "  Analyse (Action /v1/actions/compute) -> end",
                "Both (Parallel, 2 branches) -> end",
                "  branch 1:",
                "    Left (Pass) -> end",
                "  branch 2:",
                "    Right (Succeed)",
                "Pause (Wait 10 s) -> Done",
                "Done (Succeed)",
                "(not reached from Transfer: Orphan)",
            ],
            "{}",
            lines.join("\n")
        );
    }

    #[test]
    fn problems_name_their_state_and_field() {
        let p = |state: &str, field: &str| DefinitionProblem {
            state: state.into(),
            field: field.into(),
            message: "m".into(),
        };
        assert_eq!(
            problem_line("error", &p("A", "Next")),
            "error: state A, field Next: m"
        );
        assert_eq!(problem_line("error", &p("A", "")), "error: state A: m");
        assert_eq!(
            problem_line("warning", &p("", "StartAt")),
            "warning: field StartAt: m"
        );
        assert_eq!(problem_line("error", &p("", "")), "error: definition: m");
    }

    #[test]
    fn tables_align_their_columns() {
        let rows = [
            ["a".to_owned(), "long value".to_owned()],
            ["bbb".to_owned(), "x".to_owned()],
        ];
        assert_eq!(
            table(&["ID", "V"], &rows),
            "ID   V\na    long value\nbbb  x"
        );
    }
}
