//! `/v1/flows` and `/v1/runs`: flows, their runs and run logs, and a flow
//! used as an action (`POST /v1/flows/{id}/run`, `GET
//! /v1/flows/{id}/{run_id}/status`). Handlers extract, call
//! `crate::flows`, and map its error.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use lattice_protocol::flows::{
    ActionStatus, FlowCreate, FlowInfo, FlowList, FlowUpdate, RunApprove, RunInfo, RunList, RunLog,
    RunStart, RunStatus, RunUpdate, ValidationReport,
};
use lattice_protocol::{ErrorBody, FlowId, FlowRunId};
use serde::Deserialize;

use crate::auth::{AnyScope, Authorized, MaybeAuthorized};
use crate::error::{ApiError, Json, Path, Query};
use crate::flows::{definitions, runs};
use crate::sharing::Viewer;
use crate::state::AppState;

async fn viewer(state: &AppState, auth: &Authorized<AnyScope>) -> Result<Viewer, ApiError> {
    Ok(Viewer::of(&state.store, auth.identity_id).await?)
}

async fn maybe_viewer(
    state: &AppState,
    auth: &MaybeAuthorized<AnyScope>,
) -> Result<Viewer, ApiError> {
    match &auth.0 {
        Some(caller) => Ok(Viewer::of(&state.store, caller.identity_id).await?),
        None => Ok(Viewer::anonymous()),
    }
}

/// Create a flow from a definition (`{StartAt, States}`), an input schema,
/// metadata and roles. Every problem of the definition is reported at
/// once (400); warnings come back in `warnings`.
#[utoipa::path(post, path = "/v1/flows", tag = "flows", security(("bearer" = [])),
    request_body = FlowCreate,
    responses((status = 201, body = FlowInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Json(request): Json<FlowCreate>,
) -> Result<(StatusCode, Json<FlowInfo>), ApiError> {
    let viewer = viewer(&state, &auth).await?;
    let flow = definitions::create(&state.store, &viewer, request).await?;
    Ok((StatusCode::CREATED, Json(flow)))
}

/// Flows the caller owns or holds a role on.
#[utoipa::path(get, path = "/v1/flows", tag = "flows", security(("bearer" = [])),
    responses((status = 200, body = FlowList)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
) -> Result<Json<FlowList>, ApiError> {
    let viewer = viewer(&state, &auth).await?;
    Ok(Json(definitions::list(&state.store, &viewer).await?))
}

/// Check a flow document without storing it: every error and warning,
/// each with its state and field.
#[utoipa::path(post, path = "/v1/flows/validate", tag = "flows", security(("bearer" = [])),
    request_body = FlowCreate,
    responses((status = 200, body = ValidationReport)))]
pub(crate) async fn validate(
    _auth: Authorized<AnyScope>,
    Json(request): Json<FlowCreate>,
) -> Result<Json<ValidationReport>, ApiError> {
    let (_, report) = definitions::check(&request.definition, &request.input_schema);
    Ok(Json(report))
}

/// A flow (to anyone holding a role on it, `public` viewers included).
#[utoipa::path(get, path = "/v1/flows/{id}", tag = "flows", security((), ("bearer" = [])),
    params(("id" = FlowId, Path)),
    responses((status = 200, body = FlowInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    auth: MaybeAuthorized<AnyScope>,
    Path(id): Path<FlowId>,
) -> Result<Json<FlowInfo>, ApiError> {
    let viewer = maybe_viewer(&state, &auth).await?;
    Ok(Json(definitions::show(&state.store, &viewer, id).await?))
}

/// Change a flow (owner and administrators); role lists given replace.
#[utoipa::path(put, path = "/v1/flows/{id}", tag = "flows", security(("bearer" = [])),
    params(("id" = FlowId, Path)), request_body = FlowUpdate,
    responses((status = 200, body = FlowInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<FlowId>,
    Json(request): Json<FlowUpdate>,
) -> Result<Json<FlowInfo>, ApiError> {
    let viewer = viewer(&state, &auth).await?;
    Ok(Json(
        definitions::update(&state.store, &viewer, id, request).await?,
    ))
}

/// Delete a flow (owner and administrators); its runs go on.
#[utoipa::path(delete, path = "/v1/flows/{id}", tag = "flows", security(("bearer" = [])),
    params(("id" = FlowId, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<FlowId>,
) -> Result<StatusCode, ApiError> {
    let viewer = viewer(&state, &auth).await?;
    definitions::delete(&state.store, &viewer, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start a run (flow starters). `body` is the input, checked against the
/// flow's input schema (400 naming the field). A `request_id` used before
/// returns the first run (200).
#[utoipa::path(post, path = "/v1/flows/{id}/run", tag = "flows", security(("bearer" = [])),
    params(("id" = FlowId, Path)), request_body = RunStart,
    responses((status = 201, body = RunInfo), (status = 200, body = RunInfo, description = "a known request id"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn start(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<FlowId>,
    Json(request): Json<RunStart>,
) -> Result<(StatusCode, Json<RunInfo>), ApiError> {
    let (created, run) = runs::start(&state, &auth, id, request).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(run)))
}

/// A run of this flow as an action status (the action-provider contract,
/// so other engines can drive Lattice flows).
#[utoipa::path(get, path = "/v1/flows/{id}/{run_id}/status", tag = "flows", security(("bearer" = [])),
    params(("id" = FlowId, Path), ("run_id" = FlowRunId, Path)),
    responses((status = 200, body = ActionStatus), (status = 404, body = ErrorBody)))]
pub(crate) async fn run_status(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path((id, run_id)): Path<(FlowId, FlowRunId)>,
) -> Result<Json<ActionStatus>, ApiError> {
    let viewer = viewer(&state, &auth).await?;
    let run = runs::show(&state, &viewer, run_id).await?;
    if run.flow_id != id {
        return Err(ApiError::not_found(format!(
            "flow {id} has no run {run_id}"
        )));
    }
    Ok(Json(runs::as_action_status(&run)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct RunListParams {
    /// Only runs of this flow.
    #[allow(dead_code)]
    flow_id: Option<FlowId>,
    /// Only runs with these statuses (repeat, or separate with commas).
    #[allow(dead_code)]
    status: Option<String>,
    /// Only runs with this label.
    #[allow(dead_code)]
    label: Option<String>,
    /// At most this many [default: 50, max 1000].
    #[allow(dead_code)]
    limit: Option<u32>,
    /// The `marker` of the previous page.
    #[allow(dead_code)]
    marker: Option<String>,
}

fn list_query(raw: Option<String>) -> Result<runs::ListQuery, ApiError> {
    let mut query = runs::ListQuery::default();
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let bad = |what: &str| ApiError::bad_request(format!("{key}: {what}"));
        match key.as_ref() {
            "flow_id" => query.flow_id = Some(value.parse().map_err(|_| bad("not a flow id"))?),
            "status" => {
                for s in value.split(',').filter(|s| !s.is_empty()) {
                    let status: RunStatus =
                        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase()))
                            .map_err(|_| bad("use ACTIVE, INACTIVE, SUCCEEDED or FAILED"))?;
                    query.statuses.push(status);
                }
            }
            "label" => query.label = Some(value.into_owned()),
            "limit" => query.limit = Some(value.parse().map_err(|_| bad("not a number"))?),
            "marker" => query.marker = Some(value.into_owned()),
            _ => return Err(bad("unknown parameter")),
        }
    }
    Ok(query)
}

/// Runs the caller may see (started, managed or monitored), newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "flows", security(("bearer" = [])), params(RunListParams),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_runs(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    RawQuery(raw): RawQuery,
) -> Result<Json<RunList>, ApiError> {
    let query = list_query(raw)?;
    let viewer = viewer(&state, &auth).await?;
    Ok(Json(runs::list(&state, &viewer, query).await?))
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "flows", security(("bearer" = [])),
    params(("id" = FlowRunId, Path)),
    responses((status = 200, body = RunInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn show_run(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<FlowRunId>,
) -> Result<Json<RunInfo>, ApiError> {
    let viewer = viewer(&state, &auth).await?;
    Ok(Json(runs::show(&state, &viewer, id).await?))
}

/// Relabel, retag, or change who manages or monitors a run.
#[utoipa::path(put, path = "/v1/runs/{id}", tag = "flows", security(("bearer" = [])),
    params(("id" = FlowRunId, Path)), request_body = RunUpdate,
    responses((status = 200, body = RunInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn update_run(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<FlowRunId>,
    Json(request): Json<RunUpdate>,
) -> Result<Json<RunInfo>, ApiError> {
    let viewer = viewer(&state, &auth).await?;
    Ok(Json(runs::update(&state, &viewer, id, request).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct LogParams {
    /// Only entries after this `seq`.
    after: Option<u64>,
    /// At most this many [default: 100, max 1000].
    limit: Option<u32>,
}

/// A run's log: flow and state starts and ends, actions, retries, catches.
#[utoipa::path(get, path = "/v1/runs/{id}/log", tag = "flows", security(("bearer" = [])),
    params(("id" = FlowRunId, Path), LogParams),
    responses((status = 200, body = RunLog), (status = 404, body = ErrorBody)))]
pub(crate) async fn run_log(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<FlowRunId>,
    Query(params): Query<LogParams>,
) -> Result<Json<RunLog>, ApiError> {
    let viewer = viewer(&state, &auth).await?;
    Ok(Json(
        runs::log(&state, &viewer, id, params.after, params.limit).await?,
    ))
}

/// Cancel a run that has not ended (409 if it has).
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "flows", security(("bearer" = [])),
    params(("id" = FlowRunId, Path)),
    responses((status = 200, body = RunInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cancel_run(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<FlowRunId>,
) -> Result<Json<RunInfo>, ApiError> {
    let viewer = viewer(&state, &auth).await?;
    Ok(Json(runs::cancel(&state, &viewer, id).await?))
}

/// Look again now at what an INACTIVE run waits on.
#[utoipa::path(post, path = "/v1/runs/{id}/resume", tag = "flows", security(("bearer" = [])),
    params(("id" = FlowRunId, Path)),
    responses((status = 200, body = RunInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn resume_run(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<FlowRunId>,
) -> Result<Json<RunInfo>, ApiError> {
    let viewer = viewer(&state, &auth).await?;
    Ok(Json(runs::resume(&state, &viewer, id).await?))
}

/// Forget an ended run and its log.
#[utoipa::path(post, path = "/v1/runs/{id}/release", tag = "flows", security(("bearer" = [])),
    params(("id" = FlowRunId, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn release_run(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<FlowRunId>,
) -> Result<StatusCode, ApiError> {
    let viewer = viewer(&state, &auth).await?;
    runs::release(&state, &viewer, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Answer the run's waiting approval step (its approvers only).
#[utoipa::path(post, path = "/v1/runs/{id}/approve", tag = "flows", security(("bearer" = [])),
    params(("id" = FlowRunId, Path)), request_body = RunApprove,
    responses((status = 200, body = RunInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn approve_run(
    State(state): State<AppState>,
    auth: Authorized<AnyScope>,
    Path(id): Path<FlowRunId>,
    Json(request): Json<RunApprove>,
) -> Result<Json<RunInfo>, ApiError> {
    let viewer = viewer(&state, &auth).await?;
    Ok(Json(runs::approve(&state, &viewer, id, request).await?))
}
