//! The one `lattice` binary: the platform's processes (`dev`, `service`,
//! later `agent` and `worker`) and every user command.
//!
//! It owns argument parsing, output formatting (`--format`, `--jmespath`),
//! exit codes and log setup. It must not hold domain logic: commands call the
//! client, service or agent crates and render what they return.

mod commands;
mod context;
mod logging;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lattice_client::ClientError;

use crate::context::Context;
use crate::output::{Format, Output, UsageError};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  other failure
  2  usage error (bad arguments or options)
  3  authentication or permission error (not logged in, expired or revoked token, missing scope)
  4  the request was refused (not found, invalid, conflict, too large)
  5  the service is unreachable or failed
  6  a waited-for task or transfer failed or was cancelled (`lattice run`: the task's own exit code when it has one)
  7  waiting timed out (the tasks or transfers keep running)

Environment:
  LATTICE_URL    service URL (overrides the saved profile)
  LATTICE_TOKEN  access token (overrides the saved profile)
  LATTICE_CA_FILE  extra CA certificates (PEM) to trust, as --ca-file
  SSL_CERT_FILE, SSL_CERT_DIR  replace the system's CA store, as for OpenSSL and curl
  LATTICE_LOG    log filter, e.g. `debug` or `lattice_service=debug`";

/// Lattice: federated research computing. Run functions and move data on
/// laptops, lab servers and supercomputers.
#[derive(Parser, Debug)]
#[command(name = "lattice", version, after_help = EXIT_CODES, propagate_version = true)]
struct Cli {
    /// Output format; JSON is stable for scripts.
    #[arg(long, global = true, value_enum, default_value = "text")]
    format: Format,

    /// Filter JSON output with a JMESPath expression (implies JSON).
    #[arg(long, global = true, value_name = "EXPR")]
    jmespath: Option<String>,

    /// Service URL [default: the saved profile's, else http://127.0.0.1:8470].
    #[arg(long, global = true, env = "LATTICE_URL", value_name = "URL")]
    url: Option<String>,

    /// Also trust the certificate authorities in this PEM file (a site's
    /// private CA) for every TLS connection: the service, OpenID Connect,
    /// RabbitMQ. Added to the system's store and the bundled public roots.
    #[arg(long, global = true, env = "LATTICE_CA_FILE", value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

// Parsed once at startup; the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole platform on this machine: service on SQLite, a local
    /// identity and token, written to your profile.
    Dev(commands::dev::DevArgs),
    /// Run the service (REST API, auth, store) for production.
    Service(lattice_service::ServiceArgs),
    /// Log in through the service's identity provider and save the tokens.
    Login(commands::auth::LoginArgs),
    /// Revoke the saved tokens and delete the profile.
    Logout,
    /// Show who the current token belongs to.
    Whoami,
    /// Manage client applications (client-credentials login for automation).
    #[command(subcommand)]
    Client(commands::clients::ClientCommand),
    /// Register and inspect functions.
    #[command(subcommand)]
    Function(commands::functions::FunctionCommand),
    /// List and inspect endpoints; configure and start an endpoint's agent
    /// from a config file (`lattice endpoint configure NAME`, `start NAME`).
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Submit, inspect, cancel and wait for tasks.
    #[command(subcommand)]
    Task(commands::tasks::TaskCommand),
    /// Run an endpoint agent: registers the endpoint on first start, then
    /// pulls tasks from the service and runs them on local workers.
    Agent(commands::agent::AgentArgs),
    /// Run a worker that connects to an agent's dispatcher (started by the
    /// agent's providers; rarely run by hand).
    Worker(commands::worker::WorkerArgs),
    /// A multi-user agent's per-user child (started by `lattice agent
    /// --multi-user` as the mapped account; not run by hand).
    #[command(hide = true)]
    UserAgent(commands::agent::UserAgentArgs),
    /// Run a command on an endpoint and wait: prints its stdout and stderr and
    /// exits with its return code. Example: `lattice run --endpoint local -- hostname`
    Run(commands::tasks::RunArgs),
    /// List and inspect collections (directories hosted by endpoint agents).
    #[command(subcommand)]
    Collection(commands::files::CollectionCommand),
    /// List a directory in a collection: `lattice ls local:/data --long`.
    Ls(commands::files::LsArgs),
    /// Show one file or directory: `lattice stat local:/data/run1.h5`.
    Stat(commands::files::StatArgs),
    /// Create a directory: `lattice mkdir local:/data/new --parents`.
    Mkdir(commands::files::MkdirArgs),
    /// Rename within a collection: `lattice rename local:/a local:/b`.
    Rename(commands::files::RenameArgs),
    /// Delete files or directories as a background delete task (waits for it
    /// unless --no-wait): `lattice rm -r local:/old`.
    Rm(commands::files::RmArgs),
    /// Copy files or trees between collections, agent to agent, verified and
    /// resumable: `lattice transfer SRC_COLL:PATH DST_COLL:PATH --recursive`
    /// prints a transfer id; `lattice transfer show|list|cancel|wait|events`.
    Transfer(commands::transfers::TransferArgs),
    /// Groups of identities to share with: create, invite, join, leave,
    /// manage members and policies (`lattice group create NAME`).
    #[command(subcommand)]
    Group(commands::sharing::GroupCommand),
    /// Access rules of a collection: who may read or write under which
    /// path (`lattice acl add COLL:/path/ PRINCIPAL --permissions r`).
    #[command(subcommand)]
    Acl(commands::sharing::AclCommand),
    /// Search indexes of metadata with per-entry visibility: create an
    /// index, ingest entries, query with filters and facets
    /// (`lattice search query INDEX "silicon" --facet instrument`).
    #[command(subcommand)]
    Search(commands::search::SearchCommand),
    /// Flows: durable multi-step automation (transfers, compute, search,
    /// approvals) defined in the Globus Flows language. Create a flow from
    /// a JSON or YAML file, start runs and follow them
    /// (`lattice flow start NAME --input '{"n": 1}' --wait`).
    #[command(subcommand)]
    Flow(commands::flows::FlowCommand),
    /// Timers: start a transfer, a task or a flow run once or every
    /// interval, as you (`lattice timer create transfer SRC:/d/ DST:/d/ -r --interval 1d`).
    #[command(subcommand)]
    Timer(commands::timers::TimerCommand),
    /// Notifications: which events reach you by email
    /// (`lattice notify prefs --add-email flow_run.failed`).
    #[command(subcommand)]
    Notify(commands::notify::NotifyCommand),
    /// Webhooks: signed JSON events POSTed to your URL
    /// (`lattice webhook create https://example.org/hook --events transfer.failed`).
    #[command(subcommand)]
    Webhook(commands::notify::WebhookCommand),
}

#[derive(Subcommand, Debug)]
enum EndpointCommand {
    /// List your endpoints with status, workers and waiting tasks.
    List,
    /// Show one endpoint (id or name).
    Show {
        /// Endpoint id or name.
        endpoint: String,
    },
    #[command(flatten)]
    Agent(commands::agent::EndpointCommand),
    #[command(flatten)]
    Grants(commands::sharing::GrantCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let token_from_env = std::env::var("LATTICE_TOKEN").is_ok_and(|t| !t.is_empty());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Dev(_)) {
        // `lattice dev` is the service, its queue and an agent in one
        // process: a task crosses several of its tasks, and with two worker
        // threads each crossing could be a wake-up of the other thread.
        // One worker measured 0.6-0.8 ms faster per single call (p50 3.7-4.4
        // against 4.4-5.2 ms, docs/python.md) at the same throughput; file
        // hashing and other blocking work still run on the blocking pool.
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // `lattice task list | head -2`: the reader has all it wanted.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if token_from_env && is_unauthorized(&err) {
                eprintln!(
                    "hint: the token came from LATTICE_TOKEN, which overrides the saved profile: \
                     set a valid token there, or unset LATTICE_TOKEN to use the profile \
                     (`lattice login`, or the one `lattice dev` writes)"
                );
            }
            ExitCode::from(exit_code(&err))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(ca_file) = &cli.ca_file {
        // Before any connection: every client of this process uses it.
        lattice_tls::install_process_trust(Some(ca_file))
            .map_err(|e| UsageError(format!("--ca-file / LATTICE_CA_FILE: {e}")))?;
    }
    let ctx = Context {
        output: Output {
            format: cli.format,
            jmespath: cli.jmespath,
        },
        url: cli.url,
        ca_file: cli.ca_file,
        token: std::env::var("LATTICE_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    match cli.command {
        Command::Dev(args) => commands::dev::run(args).await,
        Command::Service(args) => commands::service::run(&ctx, args).await,
        Command::Login(args) => {
            logging::init(Default::default(), "warn");
            commands::auth::login(&ctx, args).await
        }
        Command::Logout => {
            logging::init(Default::default(), "warn");
            commands::auth::logout(&ctx).await
        }
        Command::Whoami => {
            logging::init(Default::default(), "warn");
            commands::auth::whoami(&ctx).await
        }
        Command::Client(command) => {
            logging::init(Default::default(), "warn");
            commands::clients::run(&ctx, command).await
        }
        Command::Function(command) => {
            logging::init(Default::default(), "warn");
            commands::functions::run(&ctx, command).await
        }
        Command::Endpoint(command) => {
            let starts_agent = matches!(
                command,
                EndpointCommand::Agent(commands::agent::EndpointCommand::Start { .. })
            );
            logging::init(
                Default::default(),
                if starts_agent { "info" } else { "warn" },
            );
            endpoint(&ctx, command).await
        }
        Command::Task(command) => {
            logging::init(Default::default(), "warn");
            commands::tasks::run(&ctx, command).await
        }
        Command::Agent(args) => {
            logging::init(Default::default(), "info");
            commands::agent::run(&ctx, args).await
        }
        Command::Worker(args) => {
            logging::init(Default::default(), "warn");
            commands::worker::run(args).await
        }
        Command::UserAgent(args) => {
            logging::init(Default::default(), "info");
            commands::agent::user_agent(args).await
        }
        Command::Run(args) => {
            logging::init(Default::default(), "warn");
            commands::tasks::run_command(&ctx, args).await
        }
        Command::Collection(command) => {
            logging::init(Default::default(), "warn");
            commands::files::collection(&ctx, command).await
        }
        Command::Ls(args) => {
            logging::init(Default::default(), "warn");
            commands::files::ls(&ctx, args).await
        }
        Command::Stat(args) => {
            logging::init(Default::default(), "warn");
            commands::files::stat(&ctx, args).await
        }
        Command::Mkdir(args) => {
            logging::init(Default::default(), "warn");
            commands::files::mkdir(&ctx, args).await
        }
        Command::Rename(args) => {
            logging::init(Default::default(), "warn");
            commands::files::rename(&ctx, args).await
        }
        Command::Rm(args) => {
            logging::init(Default::default(), "warn");
            commands::files::rm(&ctx, args).await
        }
        Command::Transfer(args) => {
            logging::init(Default::default(), "warn");
            commands::transfers::run(&ctx, args).await
        }
        Command::Group(command) => {
            logging::init(Default::default(), "warn");
            commands::sharing::group(&ctx, command).await
        }
        Command::Acl(command) => {
            logging::init(Default::default(), "warn");
            commands::sharing::acl(&ctx, command).await
        }
        Command::Search(command) => {
            logging::init(Default::default(), "warn");
            commands::search::run(&ctx, command).await
        }
        Command::Flow(command) => {
            logging::init(Default::default(), "warn");
            commands::flows::run(&ctx, command).await
        }
        Command::Notify(command) => {
            logging::init(Default::default(), "warn");
            commands::notify::notify(&ctx, command).await
        }
        Command::Webhook(command) => {
            logging::init(Default::default(), "warn");
            commands::notify::webhook(&ctx, command).await
        }
        Command::Timer(command) => {
            logging::init(Default::default(), "warn");
            commands::timers::run(&ctx, command).await
        }
    }
}

async fn endpoint(ctx: &Context, command: EndpointCommand) -> anyhow::Result<()> {
    if let EndpointCommand::Agent(command) = command {
        return commands::agent::endpoint(ctx, command).await;
    }
    let client = ctx.client().await?;
    match command {
        EndpointCommand::List => {
            let endpoints = client.endpoints().await?;
            ctx.output
                .emit(&endpoints, |list| commands::endpoints::table(list))
        }
        EndpointCommand::Show { endpoint } => {
            let id = commands::endpoints::resolve(&client, &endpoint).await?;
            let info = client.endpoint(id).await?;
            ctx.output.emit(&info, commands::endpoints::describe)
        }
        EndpointCommand::Grants(command) => {
            commands::sharing::grants(ctx, commands::sharing::GrantTarget::Endpoint, command).await
        }
        EndpointCommand::Agent(_) => unreachable!("handled above"),
    }
}

/// Whether the service refused the token (401).
fn is_unauthorized(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ClientError>(),
            Some(ClientError::Api { status: 401, .. })
        )
    })
}

/// Whether the error is stdout's reader having gone away (EPIPE).
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Maps an error to the documented exit codes.
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(exit) = cause.downcast_ref::<commands::tasks::ExitWith>() {
            return exit.code;
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return 2;
        }
        if cause.downcast_ref::<output::Refused>().is_some() {
            return 4;
        }
        if let Some(client_error) = cause.downcast_ref::<ClientError>() {
            return match client_error {
                ClientError::Api {
                    status: 401 | 403, ..
                } => 3,
                ClientError::Api { status, .. } if *status < 500 => 4,
                ClientError::Api { .. } | ClientError::Transport { .. } => 5,
                ClientError::NotConfigured(_) => 3,
                ClientError::Profile { .. } => 1,
            };
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument and option of every subcommand says what it is in
    /// `--help` (hidden ones and clap's own `--help`/`--version` aside).
    #[test]
    fn every_argument_has_a_description() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                let described = arg
                    .get_help()
                    .or(arg.get_long_help())
                    .is_some_and(|h| !h.to_string().trim().is_empty());
                if !described {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.is_hide_set() || sub.get_name() == "help" {
                    continue;
                }
                let about = sub.get_about().or(sub.get_long_about());
                if about.is_none_or(|a| a.to_string().trim().is_empty()) {
                    missing.push(format!("{path} {} (the subcommand)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "lattice", &mut missing);
        assert!(
            missing.is_empty(),
            "without a description:\n{}",
            missing.join("\n")
        );
    }
}
