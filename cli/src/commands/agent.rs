//! `lattice agent` and `lattice endpoint configure|start`: run an endpoint
//! agent on this machine. The agent itself lives in `lattice-endpoint-agent`;
//! this module only turns flags and files into its `AgentConfig`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use lattice_client::Profile;
use lattice_endpoint_agent::{
    endpoint_dir, run_agent, AgentConfig, Credentials, EndpointCredential, EndpointFileConfig,
    MultiUserMode, WorkerLaunch, CONFIG_FILE,
};
use serde::Serialize;

use crate::commands::service::shutdown_signal;
use crate::context::Context;

#[derive(Args, Debug)]
pub(crate) struct AgentArgs {
    /// Endpoint name; the endpoint is registered under it on first start
    /// (that needs a login), later starts reuse the saved credential.
    #[arg(long, value_name = "NAME")]
    name: String,

    /// Worker processes to start on this machine (0: only workers that
    /// connect with `lattice worker --dispatcher ADDR`).
    #[arg(long, default_value_t = 2)]
    workers: u32,

    /// Tasks each worker runs at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    worker_capacity: u32,

    /// Where the endpoint's credential and scratch dirs live
    /// [default: CONFIG_DIR/endpoints/NAME].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Address the dispatcher listens on for workers (port 0: a free port).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    dispatcher_listen: SocketAddr,

    /// Walltime in seconds for tasks submitted without one [default: none].
    #[arg(long, value_name = "SECS")]
    default_walltime: Option<u32>,

    /// The `lattice` binary that runs workers [default: this one].
    #[arg(long, env = "LATTICE_WORKER_COMMAND", value_name = "PATH")]
    worker_command: Option<PathBuf>,

    /// Multi-user mode, for a whole facility (root only): each submitting
    /// identity is mapped to a local account and its tasks run as that
    /// account. Settings: the `[multi_user]` table of the endpoint's
    /// config.toml (see docs/multi-user.md).
    #[arg(long)]
    multi_user: bool,

    /// Host a collection: NAME=DIR (repeatable). Every path in it is
    /// resolved beneath DIR. Same as `[[collections]]` in config.toml.
    #[arg(long = "collection", value_name = "NAME=DIR", value_parser = lattice_endpoint_agent::CollectionConfig::parse)]
    collections: Vec<lattice_endpoint_agent::CollectionConfig>,
}

/// Runs an agent until Ctrl-C / SIGTERM.
pub(crate) async fn run(ctx: &Context, args: AgentArgs) -> anyhow::Result<()> {
    if args.multi_user {
        return multi_user(ctx, args).await;
    }
    let state_dir = match args.state_dir {
        Some(dir) => dir,
        None => endpoint_dir(&Profile::config_dir()?, &args.name)?,
    };
    let credentials = credentials(ctx, &args.name, &state_dir, None).await?;
    let mut config = AgentConfig::new(credentials, state_dir);
    config.workers = args.workers;
    config.worker_capacity = args.worker_capacity;
    config.dispatcher_listen = args.dispatcher_listen;
    config.default_walltime_secs = args.default_walltime;
    config.launch = WorkerLaunch::Processes {
        command: args.worker_command,
    };
    config.data.collections = args.collections;
    run_agent(config, shutdown_signal())
        .await
        .with_context(|| format!("endpoint `{}`", args.name))
}

#[derive(Subcommand, Debug)]
pub(crate) enum EndpointCommand {
    /// Write (or update) the endpoint's annotated config file,
    /// CONFIG_DIR/endpoints/NAME/config.toml.
    Configure {
        /// Endpoint name (letters, digits, `-`, `_`, `.`).
        name: String,
        /// Worker processes to start on this machine.
        #[arg(long)]
        workers: Option<u32>,
        /// Tasks each worker runs at once.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        worker_capacity: Option<u32>,
        /// Walltime in seconds for tasks submitted without one.
        #[arg(long, value_name = "SECS")]
        default_walltime: Option<u32>,
        /// Address the dispatcher listens on for workers.
        #[arg(long, value_name = "ADDR")]
        dispatcher_listen: Option<SocketAddr>,
        /// Start worker blocks with this provider (local, slurm, pbs, lsf,
        /// kubernetes): writes its options, each explained, with defaults to
        /// edit, and a [strategy] table. Replaces an existing [provider];
        /// local workers drop to 0 unless --workers is given.
        #[arg(long, value_name = "KIND")]
        provider: Option<String>,
    },
    /// Run the endpoint's agent from its config file (registering the
    /// endpoint on first start) until Ctrl-C / SIGTERM.
    Start {
        /// Endpoint name, as given to `configure`.
        name: String,
    },
}

#[derive(Serialize)]
struct Configured {
    name: String,
    config_file: PathBuf,
    config: EndpointFileConfig,
}

pub(crate) async fn endpoint(ctx: &Context, command: EndpointCommand) -> anyhow::Result<()> {
    match command {
        EndpointCommand::Configure {
            name,
            workers,
            worker_capacity,
            default_walltime,
            dispatcher_listen,
            provider,
        } => {
            let dir = endpoint_dir(&Profile::config_dir()?, &name)?;
            let path = dir.join(CONFIG_FILE);
            let existing = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    path.exists()
                        .then(|| EndpointFileConfig::load(&path))
                        .transpose()
                })
                .await?
                // A config file the user wrote is checked here, client-side.
                .map_err(|e| crate::output::UsageError(e.to_string()))?
            };
            let mut config = match existing {
                Some(config) => config,
                None => EndpointFileConfig::new(ctx.service_url()?),
            };
            if workers.is_some() {
                config.workers = workers;
            }
            if let Some(kind) = provider {
                // Blocks do the work: no local workers unless asked for.
                if workers.is_none() {
                    config.workers = None;
                }
                let template = lattice_endpoint_agent::scheduler::ProviderConfig::template(&kind)
                    .map_err(crate::output::UsageError)?;
                config.provider = Some(template);
                config.strategy.get_or_insert_with(Default::default);
            }
            if let Some(capacity) = worker_capacity {
                config.worker_capacity = capacity;
            }
            if default_walltime.is_some() {
                config.default_walltime_secs = default_walltime;
            }
            if dispatcher_listen.is_some() {
                config.dispatcher_listen = dispatcher_listen;
            }
            {
                let (config, path, name) = (config.clone(), path.clone(), name.clone());
                tokio::task::spawn_blocking(move || config.save(&path, &name)).await??;
            }
            let configured = Configured {
                name,
                config_file: path,
                config,
            };
            ctx.output.emit(&configured, |c| {
                format!(
                    "Wrote {}\nStart the endpoint with: lattice endpoint start {}",
                    c.config_file.display(),
                    c.name
                )
            })
        }
        EndpointCommand::Start { name } => {
            let dir = endpoint_dir(&Profile::config_dir()?, &name)?;
            let path = dir.join(CONFIG_FILE);
            let file = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    path.exists()
                        .then(|| EndpointFileConfig::load(&path))
                        .transpose()
                })
                .await?
                // A config file the user wrote is checked here, client-side.
                .map_err(|e| crate::output::UsageError(e.to_string()))?
            };
            let Some(file) = file else {
                anyhow::bail!(
                    "endpoint `{name}` is not configured ({} does not exist): run `lattice endpoint configure {name}` first",
                    path.display()
                );
            };
            ctx.apply_file_ca(file.ca_file.as_deref())?;
            let credentials = credentials(ctx, &name, &dir, Some(&file.service_url)).await?;
            let mut config = AgentConfig::new(credentials, dir);
            config.apply_file(&file);
            run_agent(config, shutdown_signal())
                .await
                .with_context(|| format!("endpoint `{name}`"))
        }
    }
}

/// `lattice agent --multi-user`: refuses unless root, loads and checks the
/// `[multi_user]` settings (mapping rules, template, schema, policy), then
/// runs the agent with every task routed to its submitter's child agent.
async fn multi_user(ctx: &Context, args: AgentArgs) -> anyhow::Result<()> {
    use lattice_endpoint_agent::multi_user::{
        privdrop, AuditLog, MultiUser, MultiUserRunner, PoolSettings, UserPool,
    };
    if !privdrop::is_root() {
        anyhow::bail!(
            "--multi-user must run as root (it starts each user's agent under that user's account); refusing to start"
        );
    }
    let dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => endpoint_dir(&Profile::config_dir()?, &args.name)?,
    };
    let path = dir.join(CONFIG_FILE);
    let (file, settings, router) = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let file = EndpointFileConfig::load(&path)
                .map_err(|e| crate::output::UsageError(e.to_string()))?;
            let settings = file.multi_user.clone().with_context(|| {
                format!(
                    "--multi-user needs a [multi_user] table in {}",
                    path.display()
                )
            })?;
            let router = MultiUser::load(&settings)
                .map_err(|e| anyhow::anyhow!("{}: [multi_user]: {e}", path.display()))?;
            Ok((file, settings, router))
        })
        .await??
    };
    let worker_command = match args.worker_command.clone().or(file.worker_command.clone()) {
        Some(command) => command,
        None => std::env::current_exe()
            .context("cannot find the lattice binary for the users' agents")?,
    };
    let audit_path = settings
        .audit_log
        .clone()
        .unwrap_or_else(|| dir.join("audit.log"));
    let pool = UserPool::new(PoolSettings {
        worker_command,
        workers: file.workers.unwrap_or(1),
        capacity: file.worker_capacity,
        state_dir: dir.clone(),
        idle_timeout: settings.idle_timeout(),
        environment: settings
            .user_environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    });
    let runner = MultiUserRunner::new(
        router,
        pool,
        AuditLog::new(&audit_path, settings.audit_max_bytes, settings.audit_keep),
    );
    tracing::info!(
        rules = settings.rules.len(),
        audit_log = %audit_path.display(),
        "multi-user mode: tasks run as their submitters' local accounts"
    );
    ctx.apply_file_ca(file.ca_file.as_deref())?;
    let credentials = credentials(ctx, &args.name, &dir, Some(&file.service_url)).await?;
    let mut config = AgentConfig::new(credentials, dir);
    config.apply_file(&file);
    config.dispatcher_listen = args.dispatcher_listen;
    config.multi_user = Some(MultiUserMode {
        runner,
        max_tasks: settings.max_tasks,
    });
    run_agent(config, shutdown_signal())
        .await
        .with_context(|| format!("endpoint `{}`", args.name))
}

/// `lattice user-agent`: a multi-user agent's child, running as the mapped
/// account with the rendered per-user config.
#[derive(Args, Debug)]
pub(crate) struct UserAgentArgs {
    /// The root agent's dispatcher for this user.
    #[arg(long, value_name = "ADDR")]
    root: SocketAddr,
    /// The per-user config rendered from the admin's template.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Block scripts and logs.
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,
    /// Parent of the per-task scratch dirs.
    #[arg(long, value_name = "DIR")]
    scratch_dir: PathBuf,
    /// Local workers when the config does not say (and has no provider).
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Tasks per worker when the config does not say.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    worker_capacity: u32,
    /// The `lattice` binary its workers run.
    #[arg(long, value_name = "PATH")]
    worker_command: Option<PathBuf>,
}

pub(crate) async fn user_agent(args: UserAgentArgs) -> anyhow::Result<()> {
    use lattice_endpoint_agent::multi_user::UserAgentConfig;
    let path = args.config.clone();
    let user_config = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        UserAgentConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    })
    .await??;
    let mut file = EndpointFileConfig::new("");
    file.workers = user_config.workers.or(if user_config.provider.is_some() {
        None
    } else {
        Some(args.workers)
    });
    file.worker_capacity = user_config.worker_capacity.unwrap_or(args.worker_capacity);
    file.default_walltime_secs = user_config.default_walltime_secs;
    file.dispatcher_listen = user_config.dispatcher_listen;
    file.dispatcher_address = user_config.dispatcher_address;
    file.provider = user_config.provider;
    file.strategy = user_config.strategy;
    file.scratch_dir = Some(args.scratch_dir);
    file.worker_command = args.worker_command;
    let mut config = AgentConfig::new(Credentials::Upstream { root: args.root }, args.state_dir);
    config.apply_file(&file);
    run_agent(config, shutdown_signal())
        .await
        .context("user agent")
}

/// The saved credential if there is one; else what registering needs (the
/// user's token, for `service_url` when given).
async fn credentials(
    ctx: &Context,
    name: &str,
    state_dir: &Path,
    service_url: Option<&str>,
) -> anyhow::Result<Credentials> {
    let dir = state_dir.to_owned();
    if let Some(saved) =
        tokio::task::spawn_blocking(move || EndpointCredential::load(&dir)).await??
    {
        return Ok(Credentials::Preset(saved));
    }
    let client = ctx.client().await.with_context(|| {
        format!("endpoint `{name}` is not registered yet, and registering it needs a login")
    })?;
    let client = match service_url {
        Some(url) => lattice_client::Client::new(url, client.bearer().map(str::to_owned))?,
        None => client,
    };
    Ok(Credentials::Register {
        name: name.to_owned(),
        client,
    })
}
