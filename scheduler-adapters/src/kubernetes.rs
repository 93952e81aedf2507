//! Kubernetes: a block is `nodes` worker pods (each running
//! `workers_per_node` workers) labelled `lattice.dev/block=ID`, created,
//! listed by label selector and deleted through the Kubernetes REST API.
//!
//! This talks to the API with `reqwest` and a few hand-written serde types
//! (only the Pod fields used) rather than `kube` + `k8s-openapi`: those
//! generate types for the whole API and take minutes to compile on a
//! two-core machine, for the three calls made here. Tests run against a fake
//! API server that serves the real JSON shapes of Pod, PodList and Status.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{default_command_timeout, quoted, Render};
use crate::{
    worker_init_script, BlockSpec, BlockState, InitReport, JobId, Provider, ProviderError,
};

/// The label that ties pods to their block.
pub const BLOCK_LABEL: &str = "lattice.dev/block";
const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const IN_CLUSTER_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// `[provider] type = "kubernetes"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Base URL of the API server.
    #[serde(default = "default_api_server")]
    pub api_server: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Worker image; it must contain the `lattice` binary.
    #[serde(default)]
    pub image: String,
    /// `lattice` inside the image.
    #[serde(default = "default_worker_program")]
    pub worker_program: String,
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    #[serde(default)]
    pub cpu_request: Option<String>,
    #[serde(default)]
    pub cpu_limit: Option<String>,
    #[serde(default)]
    pub memory_request: Option<String>,
    #[serde(default)]
    pub memory_limit: Option<String>,
    #[serde(default)]
    pub worker_init: Vec<String>,
    /// Bearer token file [default: the in-cluster service account token, if present].
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// CA certificate of the API server [default: the in-cluster CA, if present].
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_command_timeout")]
    pub command_timeout_secs: u64,
}

fn default_api_server() -> String {
    "https://kubernetes.default.svc".into()
}

fn default_namespace() -> String {
    "default".into()
}

fn default_worker_program() -> String {
    "lattice".into()
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            api_server: default_api_server(),
            namespace: default_namespace(),
            image: String::new(),
            worker_program: default_worker_program(),
            service_account: None,
            image_pull_policy: None,
            cpu_request: None,
            cpu_limit: None,
            memory_request: None,
            memory_limit: None,
            worker_init: Vec::new(),
            token_file: None,
            ca_file: None,
            command_timeout_secs: default_command_timeout(),
        }
    }
}

impl KubernetesConfig {
    pub(crate) fn render(&self, out: &mut Render) {
        out.comment(
            "Base URL of the Kubernetes API server (in a pod: the default).",
            "api_server",
            Some(quoted(&self.api_server)),
            "",
        );
        out.comment(
            "Namespace of the worker pods.",
            "namespace",
            Some(quoted(&self.namespace)),
            "",
        );
        out.comment(
            "Worker image (required); it must contain the `lattice` binary.",
            "image",
            (!self.image.is_empty()).then(|| quoted(&self.image)),
            "\"ghcr.io/example/lattice-worker:0.1\"",
        );
        out.comment(
            "The `lattice` binary inside the image.",
            "worker_program",
            Some(quoted(&self.worker_program)),
            "",
        );
        out.opt_string(
            "Service account of the worker pods.",
            "service_account",
            &self.service_account,
            "\"lattice-worker\"",
        );
        out.opt_string(
            "Image pull policy (Always, IfNotPresent, Never).",
            "image_pull_policy",
            &self.image_pull_policy,
            "\"IfNotPresent\"",
        );
        out.opt_string(
            "CPU request of each pod.",
            "cpu_request",
            &self.cpu_request,
            "\"1\"",
        );
        out.opt_string(
            "CPU limit of each pod.",
            "cpu_limit",
            &self.cpu_limit,
            "\"2\"",
        );
        out.opt_string(
            "Memory request of each pod.",
            "memory_request",
            &self.memory_request,
            "\"1Gi\"",
        );
        out.opt_string(
            "Memory limit of each pod.",
            "memory_limit",
            &self.memory_limit,
            "\"2Gi\"",
        );
        out.list(
            "Shell lines run by the image's /bin/sh in each pod before the workers start.\nThe first line that fails stops the pod; its stderr is in the pod's status.",
            "worker_init",
            &self.worker_init,
            "[\"export OMP_NUM_THREADS=1\"]",
        );
        out.opt_path(
            "Bearer token file (default: the in-cluster service account token).",
            "token_file",
            &self.token_file,
            "\"/home/me/.kube/lattice-token\"",
        );
        out.opt_path(
            "CA certificate of the API server (default: the in-cluster CA).",
            "ca_file",
            &self.ca_file,
            "\"/home/me/.kube/ca.crt\"",
        );
        out.comment(
            "Seconds an API call may take.",
            "command_timeout_secs",
            Some(self.command_timeout_secs.to_string()),
            "",
        );
    }
}

/// The Kubernetes provider.
pub struct KubernetesProvider {
    config: KubernetesConfig,
    http: reqwest::Client,
    token: Option<String>,
    /// Blocks this provider deleted (their pods vanish: that is a cancel).
    cancelled: Mutex<std::collections::HashSet<JobId>>,
}

impl std::fmt::Debug for KubernetesProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesProvider")
            .field("api_server", &self.config.api_server)
            .field("namespace", &self.config.namespace)
            .finish_non_exhaustive()
    }
}

impl KubernetesProvider {
    /// Reads the token and CA files. Blocking (small files, at startup).
    pub fn new(config: KubernetesConfig) -> Result<Self, ProviderError> {
        let existing = |given: &Option<PathBuf>, default: &str| {
            given
                .clone()
                .or_else(|| Some(PathBuf::from(default)).filter(|p| p.is_file()))
        };
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ProviderError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let token = existing(&config.token_file, IN_CLUSTER_TOKEN)
            .map(|p| read(&p).map(|b| String::from_utf8_lossy(&b).trim().to_owned()))
            .transpose()?;
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.command_timeout_secs.max(1)));
        if let Some(ca) = existing(&config.ca_file, IN_CLUSTER_CA) {
            let cert = reqwest::Certificate::from_pem(&read(&ca)?).map_err(|e| {
                ProviderError::Config(format!("provider.ca_file {}: {e}", ca.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| ProviderError::Config(format!("kubernetes client: {e}")))?;
        Ok(Self {
            config,
            http,
            token,
            cancelled: Mutex::new(Default::default()),
        })
    }

    fn pods_url(&self) -> String {
        format!(
            "{}/api/v1/namespaces/{}/pods",
            self.config.api_server.trim_end_matches('/'),
            self.config.namespace
        )
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request; a non-2xx answer becomes the API's own `Status.message`.
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, ProviderError> {
        let response = request
            .send()
            .await
            .map_err(|e| ProviderError::Api(e.to_string()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| ProviderError::Api(format!("{status}: unreadable answer: {e}")))?;
        if status.is_success() {
            return Ok(body);
        }
        let message = body["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        Err(ProviderError::Refused(format!(
            "kubernetes API {}: {message}",
            status.as_u16()
        )))
    }

    /// The Pod object of worker pod `index` of a block.
    pub fn pod(&self, spec: &BlockSpec, index: u32) -> Value {
        let c = &self.config;
        let mut worker = spec.worker.clone();
        worker.program = PathBuf::from(&c.worker_program);
        // A failing worker_init line ends the container before any worker
        // starts; its stderr and the failing line are the log's tail, which
        // `FallbackToLogsOnError` makes the termination message the pod's
        // state carries.
        let mut script = if spec.worker_init.is_empty() {
            String::new()
        } else {
            worker_init_script(&spec.worker_init, InitReport::Stderr)
        };
        script.push_str(&format!(
            "for i in $(seq 1 {}); do {} & done; wait",
            spec.workers_per_node,
            worker.shell_line(&spec.block_id)
        ));
        let quantities = |cpu: &Option<String>, memory: &Option<String>| {
            let mut map = serde_json::Map::new();
            if let Some(cpu) = cpu {
                map.insert("cpu".into(), json!(cpu));
            }
            if let Some(memory) = memory {
                map.insert("memory".into(), json!(memory));
            }
            Value::Object(map)
        };
        let mut container = json!({
            "name": "worker",
            "image": c.image,
            "command": ["/bin/sh", "-c", script],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "env": [{"name": "LATTICE_BLOCK_ID", "value": spec.block_id}],
            "resources": {
                "requests": quantities(&c.cpu_request, &c.memory_request),
                "limits": quantities(&c.cpu_limit, &c.memory_limit),
            },
        });
        if let Some(policy) = &c.image_pull_policy {
            container["imagePullPolicy"] = json!(policy);
        }
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": format!("lattice-{}-{index}", spec.block_id.to_ascii_lowercase()),
                "labels": {
                    "app.kubernetes.io/name": "lattice-worker",
                    BLOCK_LABEL: spec.block_id,
                },
            },
            "spec": {
                "restartPolicy": "Never",
                "activeDeadlineSeconds": spec.walltime.as_secs().max(1),
                "containers": [container],
            },
        });
        if let Some(account) = &c.service_account {
            pod["spec"]["serviceAccountName"] = json!(account);
        }
        pod
    }
}

#[async_trait]
impl Provider for KubernetesProvider {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn submit(&self, spec: &BlockSpec) -> Result<JobId, ProviderError> {
        for index in 0..spec.nodes {
            let pod = self.pod(spec, index);
            let created = self
                .call(
                    self.request(reqwest::Method::POST, &self.pods_url())
                        .json(&pod),
                )
                .await;
            if let Err(e) = created {
                if index > 0 {
                    // Do not leave half a block behind.
                    let _ = self.cancel(std::slice::from_ref(&spec.block_id)).await;
                }
                return Err(e);
            }
        }
        Ok(spec.block_id.clone())
    }

    async fn status(&self, jobs: &[JobId]) -> Result<HashMap<JobId, BlockState>, ProviderError> {
        if jobs.is_empty() {
            return Ok(HashMap::new());
        }
        let selector = format!("{BLOCK_LABEL} in ({})", jobs.join(","));
        let list = self
            .call(
                self.request(reqwest::Method::GET, &self.pods_url())
                    .query(&[("labelSelector", selector)]),
            )
            .await?;
        let list: PodList = serde_json::from_value(list)
            .map_err(|e| ProviderError::Api(format!("unreadable PodList: {e}")))?;
        let mut pods: HashMap<&str, Vec<&Pod>> = HashMap::new();
        for pod in &list.items {
            if let Some(block) = pod.metadata.labels.get(BLOCK_LABEL) {
                pods.entry(block.as_str()).or_default().push(pod);
            }
        }
        let cancelled = self.cancelled.lock().unwrap_or_else(|e| e.into_inner());
        let mut states = HashMap::new();
        for job in jobs {
            let state = if cancelled.contains(job) {
                BlockState::Cancelled
            } else {
                match pods.get(job.as_str()) {
                    None => BlockState::Completed,
                    Some(pods) => block_state(pods),
                }
            };
            states.insert(job.clone(), state);
        }
        Ok(states)
    }

    async fn cancel(&self, jobs: &[JobId]) -> Result<(), ProviderError> {
        for job in jobs {
            self.cancelled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(job.clone());
            self.call(
                self.request(reqwest::Method::DELETE, &self.pods_url())
                    .query(&[("labelSelector", format!("{BLOCK_LABEL}={job}"))]),
            )
            .await?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Deserialize)]
struct Pod {
    metadata: PodMeta,
    #[serde(default)]
    status: PodStatus,
}

#[derive(Deserialize)]
struct PodMeta {
    name: String,
    #[serde(default)]
    labels: HashMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodStatus {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    container_statuses: Vec<ContainerStatus>,
}

#[derive(Deserialize)]
struct ContainerStatus {
    #[serde(default)]
    state: ContainerState,
}

#[derive(Deserialize, Default)]
struct ContainerState {
    waiting: Option<Reasoned>,
    terminated: Option<Terminated>,
}

#[derive(Deserialize)]
struct Reasoned {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Terminated {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    exit_code: i32,
    #[serde(default)]
    message: Option<String>,
}

/// Container waiting reasons that do not fix themselves.
const STUCK: [&str; 7] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
];

fn pod_state(pod: &Pod) -> BlockState {
    let name = &pod.metadata.name;
    for container in &pod.status.container_statuses {
        if let Some(waiting) = &container.state.waiting {
            if STUCK.contains(&waiting.reason.as_str()) {
                let detail = waiting.message.as_deref().unwrap_or("");
                return BlockState::Failed {
                    message: format!("pod {name}: {}: {detail}", waiting.reason)
                        .trim_end_matches([' ', ':'])
                        .to_owned(),
                };
            }
        }
    }
    match pod.status.phase.as_deref().unwrap_or("Pending") {
        "Pending" => BlockState::Pending,
        "Running" => BlockState::Running,
        "Succeeded" => BlockState::Completed,
        "Failed" => {
            let terminated = pod
                .status
                .container_statuses
                .iter()
                .find_map(|c| c.state.terminated.as_ref());
            let mut message = format!("pod {name} failed");
            if let Some(reason) = &pod.status.reason {
                message.push_str(&format!(": {reason}"));
            }
            if let Some(text) = &pod.status.message {
                message.push_str(&format!(": {text}"));
            }
            if let Some(t) = terminated {
                message.push_str(&format!(
                    " (container {} with exit code {}{})",
                    t.reason.as_deref().unwrap_or("terminated"),
                    t.exit_code,
                    t.message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ));
            }
            BlockState::Failed { message }
        }
        other => BlockState::Unknown {
            message: format!("pod {name} is in phase `{other}`"),
        },
    }
}

fn block_state(pods: &[&Pod]) -> BlockState {
    let states: Vec<BlockState> = pods.iter().map(|p| pod_state(p)).collect();
    if let Some(failed) = states
        .iter()
        .find(|s| matches!(s, BlockState::Failed { .. }))
    {
        return failed.clone();
    }
    if let Some(unknown) = states
        .iter()
        .find(|s| matches!(s, BlockState::Unknown { .. }))
    {
        return unknown.clone();
    }
    if states.contains(&BlockState::Running) {
        BlockState::Running
    } else if states.contains(&BlockState::Pending) {
        BlockState::Pending
    } else {
        BlockState::Completed
    }
}

#[cfg(test)]
mod tests;
