//! `lattice service`: run the service in production or staging.

use anyhow::Context as _;
use lattice_service::{ServiceArgs, ServiceConfig};

use crate::context::Context;
use crate::logging;

pub(crate) async fn run(ctx: &Context, args: ServiceArgs) -> anyhow::Result<()> {
    let config = ServiceConfig::load(args)?;
    logging::init(config.log_format, "info");
    ctx.apply_file_ca(config.ca_file.as_deref())?;
    if let Some(tls) = &config.tls {
        // Refuse unusable files before anything starts (serving loads them again).
        lattice_tls::ServerCert::load(&tls.cert, &tls.key)?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let state = lattice_service::open(config.clone())
        .await
        .context("opening the store")?;
    tracing::info!(
        listen = %listener.local_addr()?,
        public_url = %config.public_url,
        tls = config.tls.is_some(),
        store = state.store.kind(),
        oidc = state.oidc.is_configured(),
        "lattice service ready"
    );
    lattice_service::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("lattice service stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
