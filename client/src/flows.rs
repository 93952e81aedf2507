//! Flows: stored definitions, their runs and run logs, and the service's
//! built-in action providers (`/v1/actions/<name>`).

use lattice_protocol::flows::{
    ActionProviderInfo, ActionRequest, ActionStatus, FlowCreate, FlowInfo, FlowList, FlowUpdate,
    RunApprove, RunInfo, RunList, RunLog, RunStart, RunStatus, RunUpdate, ValidationReport,
};
use lattice_protocol::{FlowId, FlowRunId};
use reqwest::Method;

use crate::{segment, Client, ClientResult};

/// Which runs `GET /v1/runs` returns; every field left out matches all.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub flow_id: Option<FlowId>,
    /// Any of these statuses (empty: every status).
    pub statuses: Vec<RunStatus>,
    pub label: Option<String>,
    pub limit: Option<u32>,
    /// The `marker` of the previous page.
    pub marker: Option<String>,
}

impl RunFilter {
    /// The query string, `?` included (empty when there is nothing to ask).
    fn query(&self) -> String {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        if let Some(flow_id) = self.flow_id {
            pairs.append_pair("flow_id", &flow_id.to_string());
        }
        for status in &self.statuses {
            pairs.append_pair("status", status_name(*status));
        }
        if let Some(label) = &self.label {
            pairs.append_pair("label", label);
        }
        if let Some(limit) = self.limit {
            pairs.append_pair("limit", &limit.to_string());
        }
        if let Some(marker) = &self.marker {
            pairs.append_pair("marker", marker);
        }
        let query = pairs.finish();
        if query.is_empty() {
            query
        } else {
            format!("?{query}")
        }
    }
}

/// A run status as the API spells it (`ACTIVE`, `INACTIVE`, ...).
pub fn status_name(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Active => "ACTIVE",
        RunStatus::Inactive => "INACTIVE",
        RunStatus::Succeeded => "SUCCEEDED",
        RunStatus::Failed => "FAILED",
    }
}

impl Client {
    // ---- flows -----------------------------------------------------------

    pub async fn create_flow(&self, request: &FlowCreate) -> ClientResult<FlowInfo> {
        self.post("v1/flows", request).await
    }

    /// Flows the caller owns or holds a role on.
    pub async fn flows(&self) -> ClientResult<FlowList> {
        self.get("v1/flows").await
    }

    /// Checks a flow document without creating anything: every error and
    /// warning, each located by state and field.
    pub async fn validate_flow(&self, request: &FlowCreate) -> ClientResult<ValidationReport> {
        self.post("v1/flows/validate", request).await
    }

    pub async fn flow(&self, id: FlowId) -> ClientResult<FlowInfo> {
        self.get(&format!("v1/flows/{id}")).await
    }

    pub async fn update_flow(&self, id: FlowId, update: &FlowUpdate) -> ClientResult<FlowInfo> {
        self.request(Method::PUT, &format!("v1/flows/{id}"), Some(update))
            .await
    }

    pub async fn delete_flow(&self, id: FlowId) -> ClientResult<()> {
        self.request::<(), _>(Method::DELETE, &format!("v1/flows/{id}"), None)
            .await
    }

    /// Starts a run (the same `request_id` twice starts one run and
    /// answers the existing one).
    pub async fn start_flow(&self, id: FlowId, request: &RunStart) -> ClientResult<RunInfo> {
        self.post(&format!("v1/flows/{id}/run"), request).await
    }

    // ---- runs ------------------------------------------------------------

    /// One page of the runs the caller may see.
    pub async fn runs(&self, filter: &RunFilter) -> ClientResult<RunList> {
        self.get(&format!("v1/runs{}", filter.query())).await
    }

    pub async fn run(&self, id: FlowRunId) -> ClientResult<RunInfo> {
        self.get(&format!("v1/runs/{id}")).await
    }

    pub async fn update_run(&self, id: FlowRunId, update: &RunUpdate) -> ClientResult<RunInfo> {
        self.request(Method::PUT, &format!("v1/runs/{id}"), Some(update))
            .await
    }

    /// Log entries after `after` (a `seq`; `None`: from the start).
    pub async fn run_log(
        &self,
        id: FlowRunId,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> ClientResult<RunLog> {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        if let Some(after) = after {
            pairs.append_pair("after", &after.to_string());
        }
        if let Some(limit) = limit {
            pairs.append_pair("limit", &limit.to_string());
        }
        let query = pairs.finish();
        let path = if query.is_empty() {
            format!("v1/runs/{id}/log")
        } else {
            format!("v1/runs/{id}/log?{query}")
        };
        self.get(&path).await
    }

    pub async fn cancel_run(&self, id: FlowRunId) -> ClientResult<RunInfo> {
        self.post(&format!("v1/runs/{id}/cancel"), &()).await
    }

    pub async fn resume_run(&self, id: FlowRunId) -> ClientResult<RunInfo> {
        self.post(&format!("v1/runs/{id}/resume"), &()).await
    }

    /// Forgets a finished run (409 while it is not final).
    pub async fn release_run(&self, id: FlowRunId) -> ClientResult<()> {
        self.post(&format!("v1/runs/{id}/release"), &()).await
    }

    /// Answers the run's waiting approval or input step.
    pub async fn approve_run(&self, id: FlowRunId, request: &RunApprove) -> ClientResult<RunInfo> {
        self.post(&format!("v1/runs/{id}/approve"), request).await
    }

    // ---- built-in action providers ----------------------------------------

    pub async fn action_provider(&self, name: &str) -> ClientResult<ActionProviderInfo> {
        self.get(&format!("v1/actions/{}", segment(name))).await
    }

    pub async fn run_action(
        &self,
        name: &str,
        request: &ActionRequest,
    ) -> ClientResult<ActionStatus> {
        self.post(&format!("v1/actions/{}/run", segment(name)), request)
            .await
    }

    pub async fn action_status(&self, name: &str, action_id: &str) -> ClientResult<ActionStatus> {
        self.get(&format!(
            "v1/actions/{}/{}/status",
            segment(name),
            segment(action_id)
        ))
        .await
    }

    pub async fn cancel_action(&self, name: &str, action_id: &str) -> ClientResult<ActionStatus> {
        self.action_post(name, action_id, "cancel").await
    }

    pub async fn release_action(&self, name: &str, action_id: &str) -> ClientResult<ActionStatus> {
        self.action_post(name, action_id, "release").await
    }

    pub async fn resume_action(&self, name: &str, action_id: &str) -> ClientResult<ActionStatus> {
        self.action_post(name, action_id, "resume").await
    }

    async fn action_post(
        &self,
        name: &str,
        action_id: &str,
        verb: &str,
    ) -> ClientResult<ActionStatus> {
        self.post(
            &format!("v1/actions/{}/{}/{verb}", segment(name), segment(action_id)),
            &(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_filters_become_repeated_query_parameters() {
        assert_eq!(RunFilter::default().query(), "");
        let id = FlowId::new();
        let filter = RunFilter {
            flow_id: Some(id),
            statuses: vec![RunStatus::Active, RunStatus::Failed],
            label: Some("nightly run".into()),
            limit: Some(5),
            marker: Some("m&1".into()),
        };
        assert_eq!(
            filter.query(),
            format!(
                "?flow_id={id}&status=ACTIVE&status=FAILED&label=nightly+run&limit=5&marker=m%261"
            )
        );
    }
}
