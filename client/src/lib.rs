//! Typed Rust client of the Lattice REST API, and the saved login profile the
//! CLI and SDK share.
//!
//! It owns: turning API calls into HTTP requests and JSON bodies into
//! `protocol` types, mapping error bodies to [`ClientError`], and reading and
//! writing the profile file (mode 0600). It must not print, prompt or decide
//! exit codes; that is the CLI's job.

pub mod flows;
pub mod notify;
pub mod profile;
pub mod stream;
pub mod timers;
pub mod websocket;

use lattice_protocol::api::{
    ClientCreateRequest, ClientCreated, ClientInfo, Health, Identity, LoginStartRequest,
    LoginStartResponse, RevokeRequest, TokenRequest, TokenResponse, WhoAmI,
};
use lattice_protocol::compute::{
    BatchStatus, BatchSubmit, BatchSubmitted, EndpointInfo, EndpointRegister, EndpointRegistered,
    FunctionInfo, FunctionRegister, TaskInfo, TaskStatusRequest, TaskSubmit,
};
use lattice_protocol::transfer::{
    CollectionInfo, DeleteRequest, DeleteSubmit, DeleteSummary, FileEntry, ListRequest,
    ListResponse, MkdirRequest, RenameRequest, StatRequest, TransferEventInfo, TransferInfo,
    TransferSubmit,
};
use lattice_protocol::{
    AclRuleId, BatchId, ClientId, EndpointId, ErrorBody, ErrorCode, FunctionId, GroupId, RoleId,
    TaskId, TransferId,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use lattice_protocol::sharing::{
    AclRuleCreate, AclRuleInfo, AclRuleUpdate, AuditEntry, GroupCreate, GroupInfo, GroupUpdate,
    GuestCollectionCreate, MembershipAction, MembershipBatch, MembershipBatchResult, RoleCreate,
    RoleInfo, SharingPolicy,
};

use lattice_protocol::search::{
    IndexCreate, IndexInfo, IndexRole, IndexRoleCreate, IndexUpdate, IngestDocument, ScrollRequest,
    ScrollResult, SearchQuery, SearchRequest, SearchResult, SearchTaskInfo, SubjectResult,
    TaskSubmitted,
};
use lattice_protocol::{SearchIndexId, SearchTaskId};

pub use flows::RunFilter;
pub use profile::Profile;
pub use stream::BatchStream;

/// What went wrong talking to the service.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with an error body.
    #[error("{} ({status}): {}", body.code.as_str(), body.message)]
    Api { status: u16, body: ErrorBody },
    /// The service could not be reached or answered something that is not the API.
    #[error("cannot reach the Lattice service at {url}: {detail}")]
    Transport { url: String, detail: String },
    /// No URL or token configured.
    #[error("{0}")]
    NotConfigured(String),
    #[error("profile {path}: {detail}")]
    Profile { path: String, detail: String },
}

impl ClientError {
    /// The API error code, if the service answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { body, .. } => Some(body.code),
            _ => None,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// A connection to one service, optionally with a bearer token.
#[derive(Clone, Debug)]
pub struct Client {
    base: url::Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// `base` is the service URL, e.g. `http://127.0.0.1:8470`.
    pub fn new(base: &str, token: Option<String>) -> ClientResult<Self> {
        let mut base = url::Url::parse(base).map_err(|e| {
            ClientError::NotConfigured(format!("invalid service URL `{base}`: {e}"))
        })?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let trust =
            lattice_tls::process_trust().map_err(|e| ClientError::NotConfigured(e.to_string()))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .use_preconfigured_tls((*trust.client_config()).clone())
            .build()
            .map_err(|e| ClientError::Transport {
                url: base.to_string(),
                detail: e.to_string(),
            })?;
        Ok(Self { base, token, http })
    }

    pub fn base_url(&self) -> &url::Url {
        &self.base
    }

    pub fn bearer(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn with_token(&self, token: Option<String>) -> Self {
        Self {
            token,
            ..self.clone()
        }
    }

    fn url(&self, path: &str) -> url::Url {
        self.base
            .join(path.trim_start_matches('/'))
            .expect("API paths are valid relative URLs")
    }

    /// Sends a request and decodes a JSON answer (or `()` for 204).
    pub async fn request<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> ClientResult<T> {
        let url = self.url(path);
        let mut request = self.http.request(method, url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Transport {
            url: self.base.to_string(),
            detail: lattice_tls::explain(&e, &authority(&self.base))
                .unwrap_or_else(|| error_chain(&e)),
        })?;
        decode(response, &self.base).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> ClientResult<T> {
        self.request::<(), T>(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> ClientResult<T> {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn health(&self) -> ClientResult<Health> {
        self.get("v1/health").await
    }

    pub async fn whoami(&self) -> ClientResult<WhoAmI> {
        self.get("v1/auth/whoami").await
    }

    pub async fn login_start(
        &self,
        redirect_uri: Option<String>,
    ) -> ClientResult<LoginStartResponse> {
        self.post("v1/auth/login", &LoginStartRequest { redirect_uri })
            .await
    }

    pub async fn token(&self, request: &TokenRequest) -> ClientResult<TokenResponse> {
        self.post("v1/auth/token", request).await
    }

    pub async fn revoke(&self, token: &str) -> ClientResult<()> {
        self.post(
            "v1/auth/revoke",
            &RevokeRequest {
                token: token.to_owned(),
            },
        )
        .await
    }

    pub async fn create_client(
        &self,
        request: &ClientCreateRequest,
    ) -> ClientResult<ClientCreated> {
        self.post("v1/clients", request).await
    }

    pub async fn list_clients(&self) -> ClientResult<Vec<ClientInfo>> {
        self.get("v1/clients").await
    }

    /// Deletes a client: its secret stops working, its tokens are revoked.
    pub async fn delete_client(&self, id: ClientId) -> ClientResult<()> {
        self.request::<(), ()>(Method::DELETE, &format!("v1/clients/{id}"), None)
            .await
    }

    /// A new secret for a client (shown once); the old one and every token
    /// issued to the client stop working.
    pub async fn rotate_client_secret(&self, id: ClientId) -> ClientResult<ClientCreated> {
        self.post(&format!("v1/clients/{id}/secret"), &serde_json::json!({}))
            .await
    }

    /// Registers an endpoint; the answer carries the agent's secret (once).
    pub async fn register_endpoint(&self, name: &str) -> ClientResult<EndpointRegistered> {
        self.post(
            "v1/endpoints",
            &EndpointRegister {
                name: name.to_owned(),
            },
        )
        .await
    }

    pub async fn endpoint(&self, id: EndpointId) -> ClientResult<EndpointInfo> {
        self.get(&format!("v1/endpoints/{id}")).await
    }

    pub async fn endpoints(&self) -> ClientResult<Vec<EndpointInfo>> {
        self.get("v1/endpoints").await
    }

    pub async fn register_function(
        &self,
        request: &FunctionRegister,
    ) -> ClientResult<FunctionInfo> {
        self.post("v1/functions", request).await
    }

    pub async fn function(&self, id: FunctionId) -> ClientResult<FunctionInfo> {
        self.get(&format!("v1/functions/{id}")).await
    }

    pub async fn delete_function(&self, id: FunctionId) -> ClientResult<()> {
        self.request::<(), ()>(Method::DELETE, &format!("v1/functions/{id}"), None)
            .await
    }

    pub async fn functions(&self) -> ClientResult<Vec<FunctionInfo>> {
        self.get("v1/functions").await
    }

    pub async fn submit_task(&self, request: &TaskSubmit) -> ClientResult<BatchSubmitted> {
        self.post("v1/tasks", request).await
    }

    pub async fn submit_batch(&self, request: &BatchSubmit) -> ClientResult<BatchSubmitted> {
        self.post("v1/batches", request).await
    }

    pub async fn task(&self, id: TaskId) -> ClientResult<TaskInfo> {
        self.get(&format!("v1/tasks/{id}")).await
    }

    pub async fn tasks_status(&self, ids: &[TaskId]) -> ClientResult<Vec<TaskInfo>> {
        self.post(
            "v1/tasks/status",
            &TaskStatusRequest {
                task_ids: ids.to_vec(),
            },
        )
        .await
    }

    pub async fn batch_status(&self, id: BatchId) -> ClientResult<BatchStatus> {
        self.get(&format!("v1/batches/{id}")).await
    }

    /// The WebSocket URL of a batch's result stream.
    pub fn batch_stream_url(&self, id: BatchId) -> url::Url {
        let mut url = self.url(&format!("v1/batches/{id}/stream"));
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        let _ = url.set_scheme(scheme);
        url
    }

    /// Opens the result stream of a batch.
    pub async fn stream_batch(&self, id: BatchId) -> ClientResult<BatchStream> {
        BatchStream::open(self, id).await
    }

    pub async fn cancel_task(&self, id: TaskId) -> ClientResult<TaskInfo> {
        self.post(&format!("v1/tasks/{id}/cancel"), &serde_json::json!({}))
            .await
    }

    pub async fn list_tasks(
        &self,
        state: Option<&str>,
        batch: Option<BatchId>,
        limit: Option<u32>,
    ) -> ClientResult<Vec<TaskInfo>> {
        let mut url = self.url("v1/tasks");
        {
            let mut query = url.query_pairs_mut();
            if let Some(state) = state {
                query.append_pair("state", state);
            }
            if let Some(batch) = batch {
                query.append_pair("batch_id", &batch.to_string());
            }
            if let Some(limit) = limit {
                query.append_pair("limit", &limit.to_string());
            }
        }
        let path = format!("v1/tasks?{}", url.query().unwrap_or(""));
        self.get(&path).await
    }

    pub async fn collections(&self) -> ClientResult<Vec<CollectionInfo>> {
        self.get("v1/collections").await
    }

    /// A collection by id or name.
    pub async fn collection(&self, collection: &str) -> ClientResult<CollectionInfo> {
        self.get(&format!("v1/collections/{}", segment(collection)))
            .await
    }

    pub async fn list_files(
        &self,
        collection: &str,
        request: &ListRequest,
    ) -> ClientResult<ListResponse> {
        self.post(
            &format!("v1/collections/{}/ls", segment(collection)),
            request,
        )
        .await
    }

    pub async fn stat(&self, collection: &str, path: &str) -> ClientResult<FileEntry> {
        self.post(
            &format!("v1/collections/{}/stat", segment(collection)),
            &StatRequest {
                path: path.to_owned(),
            },
        )
        .await
    }

    pub async fn mkdir(&self, collection: &str, request: &MkdirRequest) -> ClientResult<FileEntry> {
        self.post(
            &format!("v1/collections/{}/mkdir", segment(collection)),
            request,
        )
        .await
    }

    pub async fn rename(
        &self,
        collection: &str,
        request: &RenameRequest,
    ) -> ClientResult<FileEntry> {
        self.post(
            &format!("v1/collections/{}/rename", segment(collection)),
            request,
        )
        .await
    }

    pub async fn delete_path(
        &self,
        collection: &str,
        request: &DeleteRequest,
    ) -> ClientResult<DeleteSummary> {
        self.post(
            &format!("v1/collections/{}/delete", segment(collection)),
            request,
        )
        .await
    }

    /// Submits a delete task; follow it with [`Client::transfer`].
    pub async fn submit_delete(&self, request: &DeleteSubmit) -> ClientResult<TransferInfo> {
        self.post("v1/deletes", request).await
    }

    pub async fn submit_transfer(&self, request: &TransferSubmit) -> ClientResult<TransferInfo> {
        self.post("v1/transfers", request).await
    }

    pub async fn transfer(&self, id: TransferId) -> ClientResult<TransferInfo> {
        self.get(&format!("v1/transfers/{id}")).await
    }

    pub async fn transfers(&self, limit: Option<u32>) -> ClientResult<Vec<TransferInfo>> {
        match limit {
            Some(limit) => self.get(&format!("v1/transfers?limit={limit}")).await,
            None => self.get("v1/transfers").await,
        }
    }

    pub async fn cancel_transfer(&self, id: TransferId) -> ClientResult<TransferInfo> {
        self.post(&format!("v1/transfers/{id}/cancel"), &serde_json::json!({}))
            .await
    }

    /// Events after sequence number `after` (0: from the start).
    pub async fn transfer_events(
        &self,
        id: TransferId,
        after: i64,
    ) -> ClientResult<Vec<TransferEventInfo>> {
        self.get(&format!("v1/transfers/{id}/events?after={after}"))
            .await
    }

    // ------------------------------------------------------------- sharing

    /// Identities whose username or email is `name`.
    pub async fn identities_named(&self, name: &str) -> ClientResult<Vec<Identity>> {
        let mut url = url::Url::parse("http://x/v1/identities").expect("static URL");
        url.query_pairs_mut().append_pair("name", name);
        let query = url.query().unwrap_or_default().to_owned();
        self.get(&format!("v1/identities?{query}")).await
    }

    pub async fn create_group(&self, request: &GroupCreate) -> ClientResult<GroupInfo> {
        self.post("v1/groups", request).await
    }

    pub async fn groups(&self, all: bool) -> ClientResult<Vec<GroupInfo>> {
        self.get(&format!("v1/groups?all={all}")).await
    }

    pub async fn group(&self, id: GroupId) -> ClientResult<GroupInfo> {
        self.get(&format!("v1/groups/{id}")).await
    }

    pub async fn update_group(&self, id: GroupId, update: &GroupUpdate) -> ClientResult<GroupInfo> {
        self.request(Method::PATCH, &format!("v1/groups/{id}"), Some(update))
            .await
    }

    pub async fn delete_group(&self, id: GroupId) -> ClientResult<()> {
        self.request::<(), ()>(Method::DELETE, &format!("v1/groups/{id}"), None)
            .await
    }

    /// Applies membership actions; each succeeds or fails on its own.
    pub async fn group_members(
        &self,
        id: GroupId,
        actions: Vec<MembershipAction>,
    ) -> ClientResult<MembershipBatchResult> {
        self.post(
            &format!("v1/groups/{id}/members"),
            &MembershipBatch { actions },
        )
        .await
    }

    pub async fn acl_rules(&self, collection: &str) -> ClientResult<Vec<AclRuleInfo>> {
        self.get(&format!("v1/collections/{}/acl", segment(collection)))
            .await
    }

    pub async fn create_acl_rule(
        &self,
        collection: &str,
        request: &AclRuleCreate,
    ) -> ClientResult<AclRuleInfo> {
        self.post(
            &format!("v1/collections/{}/acl", segment(collection)),
            request,
        )
        .await
    }

    pub async fn acl_rule(&self, collection: &str, id: AclRuleId) -> ClientResult<AclRuleInfo> {
        self.get(&format!("v1/collections/{}/acl/{id}", segment(collection)))
            .await
    }

    pub async fn update_acl_rule(
        &self,
        collection: &str,
        id: AclRuleId,
        update: &AclRuleUpdate,
    ) -> ClientResult<AclRuleInfo> {
        self.request(
            Method::PATCH,
            &format!("v1/collections/{}/acl/{id}", segment(collection)),
            Some(update),
        )
        .await
    }

    pub async fn delete_acl_rule(&self, collection: &str, id: AclRuleId) -> ClientResult<()> {
        self.request::<(), ()>(
            Method::DELETE,
            &format!("v1/collections/{}/acl/{id}", segment(collection)),
            None,
        )
        .await
    }

    pub async fn roles(&self, collection: &str) -> ClientResult<Vec<RoleInfo>> {
        self.get(&format!("v1/collections/{}/roles", segment(collection)))
            .await
    }

    pub async fn create_role(
        &self,
        collection: &str,
        request: &RoleCreate,
    ) -> ClientResult<RoleInfo> {
        self.post(
            &format!("v1/collections/{}/roles", segment(collection)),
            request,
        )
        .await
    }

    pub async fn delete_role(&self, collection: &str, id: RoleId) -> ClientResult<()> {
        self.request::<(), ()>(
            Method::DELETE,
            &format!("v1/collections/{}/roles/{id}", segment(collection)),
            None,
        )
        .await
    }

    /// Creates a guest collection rooted at `request.path` of `host`.
    pub async fn create_guest_collection(
        &self,
        host: &str,
        request: &GuestCollectionCreate,
    ) -> ClientResult<CollectionInfo> {
        self.post(&format!("v1/collections/{}/guests", segment(host)), request)
            .await
    }

    /// Deletes a guest collection.
    pub async fn delete_collection(&self, collection: &str) -> ClientResult<()> {
        self.request::<(), ()>(
            Method::DELETE,
            &format!("v1/collections/{}", segment(collection)),
            None,
        )
        .await
    }

    pub async fn sharing_policy(&self, collection: &str) -> ClientResult<SharingPolicy> {
        self.get(&format!("v1/collections/{}/sharing", segment(collection)))
            .await
    }

    pub async fn set_sharing_policy(
        &self,
        collection: &str,
        policy: &SharingPolicy,
    ) -> ClientResult<SharingPolicy> {
        self.request(
            Method::PUT,
            &format!("v1/collections/{}/sharing", segment(collection)),
            Some(policy),
        )
        .await
    }

    /// Revokes the grant at `path` (`v1/functions/{id}/grants/{principal}`).
    pub async fn revoke_grant(&self, path: &str) -> ClientResult<()> {
        self.request::<(), ()>(Method::DELETE, path, None).await
    }

    pub async fn collection_audit(&self, collection: &str) -> ClientResult<Vec<AuditEntry>> {
        self.get(&format!("v1/collections/{}/audit", segment(collection)))
            .await
    }

    pub async fn group_audit(&self, id: GroupId) -> ClientResult<Vec<AuditEntry>> {
        self.get(&format!("v1/groups/{id}/audit")).await
    }

    // ---- search ----------------------------------------------------------

    pub async fn create_search_index(&self, request: &IndexCreate) -> ClientResult<IndexInfo> {
        self.post("v1/search/indexes", request).await
    }

    /// Indexes on which the caller has a role.
    pub async fn search_indexes(&self) -> ClientResult<Vec<IndexInfo>> {
        self.get("v1/search/indexes").await
    }

    pub async fn search_index(&self, id: SearchIndexId) -> ClientResult<IndexInfo> {
        self.get(&format!("v1/search/indexes/{id}")).await
    }

    pub async fn update_search_index(
        &self,
        id: SearchIndexId,
        update: &IndexUpdate,
    ) -> ClientResult<IndexInfo> {
        self.request(
            Method::PATCH,
            &format!("v1/search/indexes/{id}"),
            Some(update),
        )
        .await
    }

    pub async fn delete_search_index(&self, id: SearchIndexId) -> ClientResult<IndexInfo> {
        self.request::<(), _>(Method::DELETE, &format!("v1/search/indexes/{id}"), None)
            .await
    }

    pub async fn restore_search_index(&self, id: SearchIndexId) -> ClientResult<IndexInfo> {
        self.post(&format!("v1/search/indexes/{id}/restore"), &())
            .await
    }

    pub async fn search_index_roles(&self, id: SearchIndexId) -> ClientResult<Vec<IndexRole>> {
        self.get(&format!("v1/search/indexes/{id}/roles")).await
    }

    pub async fn add_search_index_role(
        &self,
        id: SearchIndexId,
        request: &IndexRoleCreate,
    ) -> ClientResult<IndexRole> {
        self.post(&format!("v1/search/indexes/{id}/roles"), request)
            .await
    }

    pub async fn delete_search_index_role(
        &self,
        id: SearchIndexId,
        role: uuid::Uuid,
    ) -> ClientResult<()> {
        self.request::<(), _>(
            Method::DELETE,
            &format!("v1/search/indexes/{id}/roles/{role}"),
            None,
        )
        .await
    }

    /// Queues an ingest; the task says later what was applied.
    pub async fn search_ingest(
        &self,
        id: SearchIndexId,
        document: &IngestDocument,
    ) -> ClientResult<TaskSubmitted> {
        self.post(&format!("v1/search/indexes/{id}/ingest"), document)
            .await
    }

    /// Queues the deletion of every entry of these subjects.
    pub async fn search_delete_subjects(
        &self,
        id: SearchIndexId,
        subjects: &[String],
    ) -> ClientResult<TaskSubmitted> {
        self.post(
            &format!("v1/search/indexes/{id}/subjects/delete"),
            &serde_json::json!({ "subjects": subjects }),
        )
        .await
    }

    pub async fn search_delete_by_query(
        &self,
        id: SearchIndexId,
        query: &SearchQuery,
    ) -> ClientResult<TaskSubmitted> {
        self.post(&format!("v1/search/indexes/{id}/delete_by_query"), query)
            .await
    }

    /// Every entry of `subject` the caller may see.
    pub async fn search_subject(
        &self,
        id: SearchIndexId,
        subject: &str,
        bypass_visibility: bool,
    ) -> ClientResult<SubjectResult> {
        self.get(&format!(
            "v1/search/indexes/{id}/subject?subject={}&bypass_visibility={bypass_visibility}",
            segment(subject)
        ))
        .await
    }

    pub async fn search_query(
        &self,
        id: SearchIndexId,
        request: &SearchRequest,
    ) -> ClientResult<SearchResult> {
        self.post(&format!("v1/search/indexes/{id}/query"), request)
            .await
    }

    pub async fn search_scroll(
        &self,
        id: SearchIndexId,
        request: &ScrollRequest,
    ) -> ClientResult<ScrollResult> {
        self.post(&format!("v1/search/indexes/{id}/scroll"), request)
            .await
    }

    pub async fn search_task(&self, id: SearchTaskId) -> ClientResult<SearchTaskInfo> {
        self.get(&format!("v1/search/tasks/{id}")).await
    }

    /// The newest tasks of an index.
    pub async fn search_tasks(
        &self,
        id: SearchIndexId,
        limit: Option<u32>,
    ) -> ClientResult<Vec<SearchTaskInfo>> {
        let path = match limit {
            Some(limit) => format!("v1/search/indexes/{id}/tasks?limit={limit}"),
            None => format!("v1/search/indexes/{id}/tasks"),
        };
        self.get(&path).await
    }

    /// The WebSocket URL agents connect to.
    pub fn agent_channel_url(&self) -> url::Url {
        let mut url = self.url("v1/agent/connect");
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        let _ = url.set_scheme(scheme);
        url
    }
}

async fn decode<T: DeserializeOwned>(
    response: reqwest::Response,
    base: &url::Url,
) -> ClientResult<T> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| ClientError::Transport {
        url: base.to_string(),
        detail: error_chain(&e),
    })?;
    if status.is_success() {
        let body: &[u8] = if status == StatusCode::NO_CONTENT || bytes.is_empty() {
            b"null"
        } else {
            &bytes
        };
        return serde_json::from_slice(body).map_err(|e| ClientError::Transport {
            url: base.to_string(),
            detail: format!("unexpected response body: {e}"),
        });
    }
    if lattice_tls::is_plain_http_refusal(status.as_u16(), &bytes) {
        return Err(ClientError::Transport {
            url: base.to_string(),
            detail: plain_http_hint(base),
        });
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => Err(ClientError::Api {
            status: status.as_u16(),
            body,
        }),
        Err(_) => Err(ClientError::Transport {
            url: base.to_string(),
            detail: format!(
                "HTTP {status} without a Lattice error body (is this a Lattice service?): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ),
        }),
    }
}

/// `host:port` of a URL, as certificate messages name it.
pub(crate) fn authority(url: &url::Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => url.to_string(),
    }
}

/// What to say when a plain-HTTP request reached a TLS port.
pub(crate) fn plain_http_hint(url: &url::Url) -> String {
    let mut https = url.clone();
    let scheme = if url.scheme() == "ws" { "wss" } else { "https" };
    let _ = https.set_scheme(scheme);
    format!(
        "{} serves TLS on this port, but the URL says {}://: use {https}",
        authority(url),
        url.scheme()
    )
}

/// A collection id or name as one URL path segment.
fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}
