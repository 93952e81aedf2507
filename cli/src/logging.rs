//! Log setup at the binary edge: stderr, `RUST_LOG`-style filter from
//! `LATTICE_LOG` (default given per command), text or JSON lines.

use lattice_service::config::LogFormat;
use tracing_subscriber::EnvFilter;

pub(crate) fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_env("LATTICE_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, nested commands) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
