//! The Lattice service: the REST API under `/v1`, authentication (federated
//! OpenID Connect login and Lattice's own opaque tokens), and the store.
//!
//! It owns all persistent state of the platform. It must not run user code,
//! touch an endpoint's files, or depend on `endpoint-agent`: agents and the
//! service meet only in `protocol`.
//!
//! Entry points: [`app`] builds the router (tests call it without a socket),
//! [`serve`] runs it on a listener until a shutdown signal.

pub mod auth;
pub mod broker;
pub mod config;
pub mod error;
mod https;
pub mod openapi;
pub mod relay;
pub mod routes;
pub mod state;
pub mod store;
#[cfg(any(test, feature = "testsuite"))]
pub mod testing;
pub mod transfers;

use std::future::Future;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use lattice_protocol::ErrorCode;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

pub use config::{ServiceArgs, ServiceConfig};
pub use error::ApiError;
pub use state::AppState;

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let v1 = Router::new()
        .route("/health", get(routes::health::health))
        .route("/openapi.json", get(openapi_json))
        .route("/auth/login", post(routes::auth::login_start))
        .route("/auth/oidc/callback", get(routes::auth::login_callback))
        .route("/auth/token", post(routes::auth::token))
        .route("/auth/revoke", post(routes::auth::revoke))
        .route("/auth/whoami", get(routes::auth::whoami))
        .route("/identities/link", post(routes::identities::link))
        .route("/identities/{id}", get(routes::identities::show))
        .route(
            "/clients",
            post(routes::clients::create).get(routes::clients::list),
        )
        .route("/clients/{id}", delete(routes::clients::delete))
        .route("/clients/{id}/secret", post(routes::clients::rotate_secret))
        .route(
            "/functions",
            post(routes::functions::register).get(routes::functions::list),
        )
        .route(
            "/functions/{id}",
            get(routes::functions::show).delete(routes::functions::delete),
        )
        .route(
            "/endpoints",
            post(routes::endpoints::register).get(routes::endpoints::list),
        )
        .route("/endpoints/{id}", get(routes::endpoints::show))
        .route(
            "/tasks",
            post(routes::tasks::submit_one).get(routes::tasks::list),
        )
        .route("/tasks/status", post(routes::tasks::status))
        .route("/tasks/{id}", get(routes::tasks::show))
        .route("/tasks/{id}/cancel", post(routes::tasks::cancel))
        .route("/batches", post(routes::tasks::submit_batch))
        .route("/batches/{id}", get(routes::tasks::batch_status))
        .route("/batches/{id}/stream", get(routes::tasks::stream))
        .route("/stream", get(routes::session::session))
        .route("/collections", get(routes::collections::list))
        .route("/collections/{collection}", get(routes::collections::show))
        .route(
            "/collections/{collection}/ls",
            post(routes::collections::ls),
        )
        .route(
            "/collections/{collection}/stat",
            post(routes::collections::stat),
        )
        .route(
            "/collections/{collection}/mkdir",
            post(routes::collections::mkdir),
        )
        .route(
            "/collections/{collection}/rename",
            post(routes::collections::rename),
        )
        .route(
            "/collections/{collection}/delete",
            post(routes::collections::delete),
        )
        .route(
            "/transfers",
            post(routes::transfers::submit).get(routes::transfers::list),
        )
        .route("/deletes", post(routes::transfers::submit_delete))
        .route("/transfers/{id}", get(routes::transfers::show))
        .route("/transfers/{id}/cancel", post(routes::transfers::cancel))
        .route("/transfers/{id}/events", get(routes::transfers::events))
        .route("/agent/connect", get(relay::connect));
    Router::new()
        .nest("/v1", v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(with_request_id))
        .layer(
            // Log method and path only: query strings may carry login codes.
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
            }),
        )
        .with_state(state)
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(openapi::ApiDoc::openapi())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; the API is described at /v1/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// Gives each request an id (the client's `x-request-id` if sane) that
/// internal-error responses and logs carry.
async fn with_request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut response = error::REQUEST_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(value) = id.parse() {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Opens the store named in `config` and returns the state to serve.
pub async fn open(config: ServiceConfig) -> Result<AppState, OpenError> {
    if config.database_url.starts_with("sqlite:") {
        if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
            tracing::warn!(data_dir = %config.data_dir.display(), error = %e, "cannot create data dir");
        }
    }
    let store = store::open(&config.database_url).await?;
    let broker: broker::SharedBroker = match &config.amqp_url {
        Some(url) => broker::rabbitmq::RabbitBroker::connect(url).await?,
        None => broker::embedded::EmbeddedBroker::open(store.clone()).await?,
    };
    Ok(AppState::new(store, broker, config))
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Err(e) = transfers::resume_all(&state).await {
        tracing::error!(error = %e, "cannot resume unfinished transfers");
    }
    let Some(files) = state.config.tls.clone() else {
        use axum::serve::ListenerExt;
        // Small frames (task assignments, results) must not wait for Nagle's
        // algorithm and delayed ACKs: that alone adds ~40 ms per round trip.
        // (The TLS listener sets it too.)
        let listener = listener.tap_io(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::trace!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        return axum::serve(listener, app(state))
            .with_graceful_shutdown(shutdown)
            .await;
    };
    let cert = lattice_tls::ServerCert::load(&files.cert, &files.key)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let config = cert
        .server_config()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let watcher = cert.spawn_watcher();
    let listener = https::TlsListener::new(listener, config)?;
    let served = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await;
    watcher.abort();
    served
}
