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
mod broker;
pub mod compute;
pub mod config;
mod error;
pub mod flows;
mod https;
pub mod notify;
mod openapi;
mod routes;
pub mod search;
pub mod sharing;
mod state;
pub mod store;
#[cfg(any(test, feature = "testsuite"))]
pub mod testing;
pub mod timers;
pub mod transfers;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use lattice_protocol::ErrorCode;
use routes::relay;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

pub use broker::BrokerError;
pub use config::{ServiceArgs, ServiceConfig};
pub use error::ApiError;
pub use state::AppState;

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let (api, doc) = documented_routes();
    // Serialized once: the document is the same for every request.
    let doc: Arc<str> = serde_json::to_string(&doc)
        .expect("the OpenAPI document serializes")
        .into();
    let openapi_json = move || {
        let doc = doc.clone();
        async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                doc.to_string(),
            )
        }
    };
    Router::new()
        .merge(api)
        .route("/v1/openapi.json", get(openapi_json))
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

/// Every route of the API from one list: each handler's `#[utoipa::path]`
/// gives its method and path both to the router and to
/// `/v1/openapi.json`, so no route is served undocumented or documented
/// but not served. Handlers of one path share a `routes!`.
fn documented_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use routes::{
        access, actions, auth, clients, collections, endpoints, flows, functions, grants, groups,
        health, identities, notify, search, session, tasks, timers, transfers,
    };
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(auth::login_start))
        .routes(routes!(auth::login_callback))
        .routes(routes!(auth::token))
        .routes(routes!(auth::revoke))
        .routes(routes!(auth::whoami))
        .routes(routes!(identities::link))
        .routes(routes!(identities::show))
        .routes(routes!(identities::lookup))
        .routes(routes!(clients::create, clients::list))
        .routes(routes!(clients::delete))
        .routes(routes!(clients::rotate_secret))
        .routes(routes!(functions::register, functions::list))
        .routes(routes!(functions::show, functions::delete))
        .routes(routes!(endpoints::register, endpoints::list))
        .routes(routes!(endpoints::show))
        .routes(routes!(tasks::submit_one, tasks::list))
        .routes(routes!(tasks::status))
        .routes(routes!(tasks::show))
        .routes(routes!(tasks::cancel))
        .routes(routes!(tasks::submit_batch))
        .routes(routes!(tasks::batch_status))
        .routes(routes!(tasks::stream))
        .routes(routes!(session::session))
        .routes(routes!(collections::list))
        .routes(routes!(collections::show, collections::delete_guest))
        .routes(routes!(collections::ls))
        .routes(routes!(collections::stat))
        .routes(routes!(collections::mkdir))
        .routes(routes!(collections::rename))
        .routes(routes!(collections::delete))
        .routes(routes!(transfers::submit, transfers::list))
        .routes(routes!(transfers::submit_delete))
        .routes(routes!(transfers::show))
        .routes(routes!(transfers::cancel))
        .routes(routes!(transfers::events))
        .routes(routes!(relay::connect))
        .routes(routes!(groups::create, groups::list))
        .routes(routes!(groups::show, groups::update, groups::delete))
        .routes(routes!(groups::members))
        .routes(routes!(groups::audit))
        .routes(routes!(access::list_rules, access::create_rule))
        .routes(routes!(
            access::show_rule,
            access::update_rule,
            access::delete_rule
        ))
        .routes(routes!(access::list_roles, access::create_role))
        .routes(routes!(access::delete_role))
        .routes(routes!(access::audit))
        .routes(routes!(access::create_guest))
        .routes(routes!(grants::function_grants, grants::share_function))
        .routes(routes!(grants::unshare_function))
        .routes(routes!(grants::endpoint_grants, grants::share_endpoint))
        .routes(routes!(grants::unshare_endpoint))
        .routes(routes!(access::sharing_policy, access::set_sharing_policy))
        .routes(routes!(search::create_index, search::list_indexes))
        .routes(routes!(
            search::show_index,
            search::update_index,
            search::delete_index
        ))
        .routes(routes!(search::restore_index))
        .routes(routes!(search::list_roles, search::add_role))
        .routes(routes!(search::delete_role))
        .routes(routes!(search::ingest))
        .routes(routes!(search::delete_by_query))
        .routes(routes!(search::delete_subjects))
        .routes(routes!(search::delete_entry))
        .routes(routes!(search::show_subject, search::delete_subject))
        .routes(routes!(search::query_get, search::query_post))
        .routes(routes!(search::scroll))
        .routes(routes!(search::list_tasks))
        .routes(routes!(search::show_task))
        .routes(routes!(flows::create, flows::list))
        .routes(routes!(flows::validate))
        .routes(routes!(flows::show, flows::update, flows::delete))
        .routes(routes!(flows::start))
        .routes(routes!(flows::run_status))
        .routes(routes!(flows::list_runs))
        .routes(routes!(flows::show_run, flows::update_run))
        .routes(routes!(flows::run_log))
        .routes(routes!(flows::cancel_run))
        .routes(routes!(flows::resume_run))
        .routes(routes!(flows::release_run))
        .routes(routes!(flows::approve_run))
        .routes(routes!(timers::create, timers::list))
        .routes(routes!(timers::show, timers::update, timers::delete))
        .routes(routes!(timers::pause))
        .routes(routes!(timers::resume))
        .routes(routes!(timers::runs))
        .routes(routes!(actions::introspect))
        .routes(routes!(actions::run))
        .routes(routes!(actions::status))
        .routes(routes!(actions::cancel))
        .routes(routes!(actions::release))
        .routes(routes!(actions::resume))
        .routes(routes!(
            notify::show_preferences,
            notify::update_preferences
        ))
        .routes(routes!(notify::create_webhook, notify::list_webhooks))
        .routes(routes!(notify::show_webhook, notify::delete_webhook))
        .routes(routes!(notify::webhook_deliveries))
        .routes(routes!(notify::test_webhook))
        .split_for_parts()
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
    let search = search::SearchHub::open(&config.search, &store).await;
    Ok(AppState::new(store, broker, config, search))
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
    let search_tasks = search::tasks::spawn_processor(state.store.clone(), state.search.clone());
    let (stop_flows, flows_stopped) = tokio::sync::oneshot::channel::<()>();
    let flow_driver = flows::driver::spawn(state.clone(), async move {
        let _ = flows_stopped.await;
    });
    let (stop_timers, timers_stopped) = tokio::sync::oneshot::channel::<()>();
    let timer_driver = timers::driver::spawn(state.clone(), async move {
        let _ = timers_stopped.await;
    });
    let deliveries = notify::spawn_worker(state.clone());
    let served = serve_http(listener, state, shutdown).await;
    deliveries.abort();
    search_tasks.abort();
    let _ = stop_flows.send(());
    let _ = stop_timers.send(());
    let _ = flow_driver.await;
    let _ = timer_driver.await;
    served
}

async fn serve_http(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
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
