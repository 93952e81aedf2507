//! `lattice dev`: the whole platform on this machine with nothing to install.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use lattice_client::Profile;
use lattice_service::config::{default_data_dir, LogFormat};
use lattice_service::{compute, ServiceConfig};

use lattice_endpoint_agent::{run_agent, AgentConfig, Credentials, EndpointCredential};

use crate::commands::service::shutdown_signal;
use crate::logging;

/// Lifetime of the token `lattice dev` writes to the profile.
const DEV_TOKEN_DAYS: i64 = 30;

#[derive(Args, Debug)]
pub(crate) struct DevArgs {
    /// Directory for all state (SQLite store, endpoint and collection data);
    /// starting again with the same directory reuses it
    /// [default: the user's data dir + /lattice/dev].
    #[arg(long, env = "LATTICE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Address of the service; port 0 picks a free one.
    #[arg(long, env = "LATTICE_LISTEN", default_value = lattice_service::config::DEFAULT_LISTEN)]
    listen: SocketAddr,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,

    /// Do not write the client profile (then use LATTICE_URL and LATTICE_TOKEN).
    #[arg(long)]
    no_profile: bool,

    /// Local worker processes of the `local` endpoint.
    #[arg(long, default_value_t = 2, value_name = "N")]
    workers: u32,

    /// Do not start the `local` endpoint (run agents yourself with `lattice agent`).
    #[arg(long)]
    no_endpoint: bool,

    /// Use this store instead of SQLite in the data dir (e.g. postgres://...).
    #[arg(long, env = "LATTICE_DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,

    /// Use RabbitMQ instead of the embedded queue (amqp://...).
    #[arg(
        long,
        env = "LATTICE_AMQP_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    amqp_url: Option<String>,
}

/// Name of the endpoint `lattice dev` runs.
pub(crate) const LOCAL_ENDPOINT: &str = "local";
/// Name of the collection the `local` endpoint hosts (DATA_DIR/collections/local).
pub(crate) const LOCAL_COLLECTION: &str = "local";

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<()> {
    logging::init(args.log_format, "info,sqlx=warn");
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| default_data_dir().join("dev"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another `lattice dev` running? use --listen 127.0.0.1:0 for a free port)",
                args.listen
            )
        })?;
    let address = listener.local_addr()?;
    let mut config = ServiceConfig::for_data_dir(&data_dir);
    if let Some(url) = args.database_url {
        config.database_url = url;
    }
    config.amqp_url = args.amqp_url;
    config.listen = address;
    config.public_url = url::Url::parse(&format!("http://{address}"))?;
    // For trying timers out: a recurring timer may tick every second.
    config.timers.min_interval_secs = 1;
    // Trying webhooks on one machine means a receiver on loopback.
    config.notify.allow_private_webhooks = true;
    let state = lattice_service::open(config)
        .await
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;

    let username = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "dev".to_owned());
    let (identity, token) = lattice_service::auth::tokens::bootstrap_local_identity(
        &state.store,
        &username,
        chrono::Duration::days(DEV_TOKEN_DAYS),
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the local identity: {}", e.message))?;

    let url = format!("http://{address}");
    if !args.no_profile {
        let path = Profile::default_path()?;
        Profile {
            url: url.clone(),
            access_token: token.access_token.clone(),
            refresh_token: None,
            expires_at: Some(chrono::Utc::now() + chrono::Duration::seconds(token.expires_in)),
        }
        .save(&path)?;
        tracing::info!(profile = %path.display(), "client profile written; `lattice whoami` works in any shell of this user");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let service_stopped = {
        let mut stop = stop_rx.clone();
        let state = state.clone();
        tokio::spawn(async move {
            lattice_service::serve(listener, state, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        })
    };
    let agent = if args.no_endpoint {
        None
    } else {
        let credential = local_endpoint(&state, identity.id, &data_dir, &url).await?;
        let endpoint_id = credential.endpoint_id;
        let mut config = AgentConfig::new(
            Credentials::Preset(credential),
            data_dir.join("endpoints").join(LOCAL_ENDPOINT),
        );
        config.workers = args.workers;
        let collection_root = data_dir.join("collections").join(LOCAL_COLLECTION);
        std::fs::create_dir_all(&collection_root)
            .with_context(|| format!("creating {}", collection_root.display()))?;
        config.data.collections = vec![lattice_endpoint_agent::CollectionConfig {
            name: LOCAL_COLLECTION.to_owned(),
            root: collection_root,
        }];
        // Sources on this machine connect over loopback.
        config.data.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut stop = stop_rx.clone();
        tracing::info!(endpoint_id = %endpoint_id, workers = args.workers, "starting the `local` endpoint");
        Some(tokio::spawn(async move {
            run_agent(config, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        }))
    };
    tracing::info!(
        url = %url,
        data_dir = %data_dir.display(),
        identity = %identity.username,
        identity_id = %identity.id,
        "lattice dev platform ready (Ctrl-C stops it)"
    );
    shutdown_signal().await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    if let Some(agent) = agent {
        match agent.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "local endpoint failed"),
            Err(e) => tracing::error!(error = %e, "local endpoint panicked"),
        }
    }
    service_stopped.await??;
    tracing::info!("lattice dev stopped");
    Ok(())
}

/// The `local` endpoint's credential: reused from the data dir while the
/// store still knows it, else registered anew.
async fn local_endpoint(
    state: &lattice_service::AppState,
    owner: lattice_protocol::IdentityId,
    data_dir: &std::path::Path,
    url: &str,
) -> anyhow::Result<EndpointCredential> {
    let state_dir = data_dir.join("endpoints").join(LOCAL_ENDPOINT);
    if let Some(mut saved) = EndpointCredential::load(&state_dir)? {
        let known = compute::endpoint_by_agent_secret(state, &saved.agent_secret)
            .await?
            .is_some_and(|e| e.id == saved.endpoint_id && e.owner_id == owner);
        if known {
            saved.service_url = url.to_owned();
            return Ok(saved);
        }
    }
    let (record, agent_secret) = compute::create_endpoint(state, owner, LOCAL_ENDPOINT)
        .await
        .map_err(|e| anyhow::anyhow!("registering the local endpoint: {e}"))?;
    let credential = EndpointCredential {
        endpoint_id: record.id,
        agent_secret,
        service_url: url.to_owned(),
    };
    credential.save(&state_dir)?;
    Ok(credential)
}
