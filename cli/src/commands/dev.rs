//! `lattice dev`: the whole platform on this machine with nothing to install.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use lattice_client::Profile;
use lattice_service::config::{default_data_dir, LogFormat};
use lattice_service::ServiceConfig;

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
}

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
    config.listen = address;
    config.public_url = url::Url::parse(&format!("http://{address}"))?;
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
    tracing::info!(
        url = %url,
        data_dir = %data_dir.display(),
        identity = %identity.username,
        identity_id = %identity.id,
        "lattice dev platform ready (Ctrl-C stops it)"
    );
    lattice_service::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("lattice dev stopped");
    Ok(())
}
