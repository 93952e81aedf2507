//! The shared harness of Lattice's end-to-end tests: free loopback ports, the
//! service started in-process on a real socket, a real OpenID Connect
//! provider (the npm package `oidc-provider`, run by node from `oidc/`), and
//! a scripted browser that logs in at that provider.
//!
//! A test that needs something the machine lacks (node, the provider's
//! `node_modules`) is skipped with the reason through
//! [`lattice_service::testing::require_service`], or fails when
//! `LATTICE_REQUIRE_SERVICES=1`. Everything started here stops when its
//! handle is dropped.

pub mod platform;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use lattice_protocol::api::{LoginStartResponse, TokenResponse};
use lattice_service::config::OidcConfig;
use lattice_service::{AppState, ServiceConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use url::Url;

pub use lattice_service::testing::require_service;

/// The grant type that redeems a federated login's device code.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How long started processes get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A loopback port that was free a moment ago (bind port 0 and release it).
/// Prefer binding port 0 yourself where the socket can be handed over.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
        .port()
}

// ---- the service ---------------------------------------------------------

/// A loopback socket reserved for a service, so its URL is known before the
/// service (or an identity provider that must know its callback) starts.
pub struct ServiceListener {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl ServiceListener {
    pub async fn bind() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the service");
        let addr = listener.local_addr().expect("bound address");
        Self { listener, addr }
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).expect("loopback URL")
    }

    /// Where an identity provider sends the browser back to this service.
    pub fn oidc_callback_url(&self) -> Url {
        self.url()
            .join("v1/auth/oidc/callback")
            .expect("callback URL")
    }

    /// Starts the service on this socket with SQLite in a temporary directory;
    /// `configure` may change the configuration (OIDC, limits) first.
    pub async fn start(self, configure: impl FnOnce(&mut ServiceConfig)) -> TestService {
        let dir = tempfile::tempdir().expect("temp dir for the service");
        let url = self.url();
        let mut config = ServiceConfig::for_data_dir(dir.path());
        config.listen = self.addr;
        config.public_url = url.clone();
        configure(&mut config);
        let state = lattice_service::open(config)
            .await
            .expect("open the service store");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(lattice_service::serve(
            self.listener,
            state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        TestService {
            url,
            state,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
            stop: Some(stop),
            task,
            _data_dir: dir,
        }
    }
}

/// The service running in-process on a loopback port; stops on drop.
pub struct TestService {
    /// Base URL, `http://127.0.0.1:PORT/`.
    pub url: Url,
    /// The running service's state (store, configuration), for setup shortcuts.
    pub state: AppState,
    /// Follows no redirects, so tests see them.
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _data_dir: tempfile::TempDir,
}

/// An HTTP answer: status and body (JSON, or the raw text as a JSON string).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    /// The `Location` header of a redirect.
    pub location: Option<String>,
}

impl Answer {
    async fn read(response: reqwest::Response) -> anyhow::Result<Self> {
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.context("reading a response body")?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Self {
            status,
            body,
            location,
        })
    }

    /// The body's string field `field`; panics naming the answer if absent.
    #[track_caller]
    pub fn str(&self, field: &str) -> &str {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string `{field}` in {self:?}"))
    }

    /// Asserts an error answer: `status` and a body that is exactly
    /// `{"code": code, "message": non-empty}`. Returns the message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        lattice_service::testing::assert_error_body(&self.body, code, self)
    }
}

impl TestService {
    /// The absolute URL of `path` (e.g. `/v1/health`).
    pub fn endpoint(&self, path: &str) -> Url {
        self.url
            .join(path.trim_start_matches('/'))
            .expect("API path")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.get_url(self.endpoint(path).as_str(), token).await
    }

    /// GET an absolute URL (e.g. a callback URL the provider produced).
    pub async fn get_url(&self, url: &str, token: Option<&str>) -> Answer {
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        Answer::read(response).await.expect("read answer")
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        let mut request = self.http.post(self.endpoint(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        Answer::read(response).await.expect("read answer")
    }

    /// Any method, with an optional JSON body (PATCH, DELETE...).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self.http.request(method.clone(), self.endpoint(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        Answer::read(response).await.expect("read answer")
    }

    pub async fn whoami(&self, token: &str) -> Answer {
        self.get("/v1/auth/whoami", Some(token)).await
    }

    /// `POST /v1/auth/login`; panics unless it succeeds.
    pub async fn start_login(&self, redirect_uri: Option<&str>) -> LoginStartResponse {
        let answer = self
            .post_json(
                "/v1/auth/login",
                None,
                &json!({ "redirect_uri": redirect_uri }),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "starting a login: {answer:?}"
        );
        serde_json::from_value(answer.body).expect("a login start response")
    }

    /// Redeems a login's device code at `POST /v1/auth/token`.
    pub async fn redeem(&self, device_code: &str) -> Answer {
        self.post_json(
            "/v1/auth/token",
            None,
            &json!({ "grant_type": DEVICE_CODE_GRANT, "device_code": device_code }),
        )
        .await
    }

    /// Exchanges a refresh token at `POST /v1/auth/token`.
    pub async fn refresh(&self, refresh_token: &str) -> Answer {
        self.post_json(
            "/v1/auth/token",
            None,
            &json!({ "grant_type": "refresh_token", "refresh_token": refresh_token }),
        )
        .await
    }

    /// A whole federated login as `username`: start, log in with the browser,
    /// redeem. Panics unless every step succeeds.
    pub async fn login_as(&self, username: &str) -> TokenResponse {
        let login = self.start_login(None).await;
        let browser = browser_login(&login.authorize_url, username)
            .await
            .unwrap_or_else(|e| panic!("browser login as {username}: {e:#}"));
        let callback = self.get_url(browser.callback_url.as_str(), None).await;
        assert_eq!(
            callback.status,
            StatusCode::OK,
            "login callback: {callback:?}"
        );
        let answer = self.redeem(&login.device_code).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "redeeming the login: {answer:?}"
        );
        serde_json::from_value(answer.body).expect("a token response")
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Graceful shutdown would wait for idle keep-alive connections.
        self.task.abort();
    }
}

// ---- the OpenID Connect provider -----------------------------------------

/// The folder with the provider script and its `package.json`.
pub fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// The node binary (`LATTICE_NODE` or `node` on PATH) if it runs and the
/// provider's packages are installed; otherwise why not.
pub fn oidc_provider_available() -> Result<PathBuf, String> {
    let node = std::env::var_os("LATTICE_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("node"));
    let version = Command::new(&node)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", node.display()))?;
    if !version.status.success() {
        return Err(format!("{} --version failed", node.display()));
    }
    let package = oidc_dir().join("node_modules/oidc-provider/package.json");
    if !package.is_file() {
        return Err(format!(
            "{} is missing: run `npm ci` in {}",
            package.display(),
            oidc_dir().display()
        ));
    }
    Ok(node)
}

/// A running `oidc-provider` with one confidential client; killed on drop.
pub struct OidcProvider {
    /// `http://127.0.0.1:PORT` (no trailing slash, as in its tokens).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    child: Child,
    _log_dir: tempfile::TempDir,
}

impl OidcProvider {
    /// Starts the provider for `test`, with a client whose only redirect URI
    /// is `redirect_uri`, and waits until its discovery document answers.
    /// `None` when the provider cannot run here (the test is then skipped).
    pub async fn start(test: &str, redirect_uri: &Url) -> Option<Self> {
        let node = match oidc_provider_available() {
            Ok(node) => node,
            Err(reason) => {
                require_service(test, Err(format!("OpenID Connect provider: {reason}")));
                return None;
            }
        };
        let provider = Self::spawn(&node, redirect_uri)
            .await
            .unwrap_or_else(|e| panic!("{test}: starting the OpenID Connect provider: {e:#}"));
        Some(provider)
    }

    /// Starts the provider on a free port; tries another port if the chosen
    /// one was taken in the meantime.
    async fn spawn(node: &Path, redirect_uri: &Url) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::spawn_on(node, redirect_uri, free_port()).await {
                Err(e) if attempt < 3 && format!("{e:#}").contains("EADDRINUSE") => attempt += 1,
                result => return result,
            }
        }
    }

    async fn spawn_on(node: &Path, redirect_uri: &Url, port: u16) -> anyhow::Result<Self> {
        let client_id = "lattice".to_owned();
        let client_secret = "lattice-test-secret".to_owned();
        let log_dir = tempfile::tempdir()?;
        let log_path = log_dir.path().join("provider.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(node)
            .current_dir(oidc_dir())
            .arg("provider.mjs")
            .arg(port.to_string())
            .arg(&client_id)
            .arg(&client_secret)
            .arg(redirect_uri.as_str())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("running {} provider.mjs", node.display()))?;
        let mut provider = Self {
            issuer: format!("http://127.0.0.1:{port}"),
            client_id,
            client_secret,
            child,
            _log_dir: log_dir,
        };
        if let Err(e) = provider.wait_ready(&log_path).await {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("{e:#}\nprovider output:\n{log}");
        }
        Ok(provider)
    }

    /// Waits until this process says it listens (so the port is ours, not a
    /// provider of a parallel test) and its discovery document answers.
    async fn wait_ready(&mut self, log_path: &Path) -> anyhow::Result<()> {
        let listening = format!("listening on {}", self.issuer);
        let discovery = format!("{}/.well-known/openid-configuration", self.issuer);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the provider exited with {status}");
            }
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            if log.contains(&listening) {
                match http.get(&discovery).send().await {
                    Ok(response) if response.status().is_success() => {
                        let document: Value = response.json().await?;
                        if document["issuer"] == json!(self.issuer) {
                            return Ok(());
                        }
                        bail!("unexpected discovery document at {discovery}: {document}");
                    }
                    Ok(response) if Instant::now() >= deadline => {
                        bail!("{discovery} answered {}", response.status())
                    }
                    Err(e) if Instant::now() >= deadline => {
                        bail!("{discovery} did not answer within {READY_TIMEOUT:?}: {e}")
                    }
                    _ => {}
                }
            } else if Instant::now() >= deadline {
                bail!("the provider did not start listening within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The service's configuration for this provider.
    pub fn service_config(&self) -> OidcConfig {
        OidcConfig {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The service and a provider that know each other.
pub struct LoginPlatform {
    pub service: TestService,
    pub provider: OidcProvider,
}

impl LoginPlatform {
    /// Starts both, or `None` when the provider cannot run here (skip).
    pub async fn start(test: &str) -> Option<Self> {
        Self::start_with(test, |_| {}).await
    }

    /// Like [`LoginPlatform::start`], but `configure` may alter the service's
    /// configuration (e.g. a client secret the provider will refuse).
    pub async fn start_with(
        test: &str,
        configure: impl FnOnce(&mut ServiceConfig),
    ) -> Option<Self> {
        let listener = ServiceListener::bind().await;
        let provider = OidcProvider::start(test, &listener.oidc_callback_url()).await?;
        let oidc = provider.service_config();
        let service = listener
            .start(|config| {
                config.oidc = Some(oidc);
                configure(config);
            })
            .await;
        Some(Self { service, provider })
    }
}

// ---- the browser ---------------------------------------------------------

/// Where a scripted browser login ended: the provider's redirect back to the
/// relying party, not yet visited.
#[derive(Debug, Clone)]
pub struct BrowserLogin {
    /// The relying party's callback URL with `code` and `state` (or `error`).
    pub callback_url: Url,
}

/// Acts as a browser (fresh cookie jar, redirects followed by hand) at the
/// provider's dev interactions: opens `authorize_url`, signs in as
/// `username` with any password, consents, and stops at the redirect that
/// leaves the provider. The caller visits [`BrowserLogin::callback_url`].
pub async fn browser_login(authorize_url: &str, username: &str) -> anyhow::Result<BrowserLogin> {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let start = Url::parse(authorize_url).context("authorize URL")?;
    let provider_origin = start.origin();
    let mut current = start.clone();
    let mut response = browser.get(start).send().await?;
    for _ in 0..20 {
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| anyhow!("redirect {status} from {current} without Location"))?;
            let next = current
                .join(location)
                .with_context(|| format!("bad Location {location} from {current}"))?;
            if next.origin() != provider_origin {
                return Ok(BrowserLogin { callback_url: next });
            }
            current = next;
            response = browser.get(current.clone()).send().await?;
            continue;
        }
        let page = response.text().await?;
        if !status.is_success() || !current.path().starts_with("/interaction/") {
            bail!("the provider answered {status} at {current}:\n{page}");
        }
        let form: Vec<(&str, &str)> = if page.contains("name=\"login\"") {
            vec![("prompt", "login"), ("login", username), ("password", "x")]
        } else if page.contains("value=\"consent\"") {
            vec![("prompt", "consent")]
        } else {
            bail!("unexpected interaction page at {current}:\n{page}");
        };
        let action = form_action(&page)
            .map(|a| current.join(&a))
            .transpose()?
            .unwrap_or_else(|| current.clone());
        response = browser.post(action.clone()).form(&form).send().await?;
        current = action;
    }
    bail!("the provider never redirected back (last at {current})")
}

/// The `action` of the first form on a page.
fn form_action(page: &str) -> Option<String> {
    let start = page.find("<form")?;
    let rest = &page[start..];
    let attr = rest.find("action=\"")? + "action=\"".len();
    let end = rest[attr..].find('"')?;
    Some(rest[attr..attr + end].replace("&amp;", "&"))
}

// ---- binaries and schedulers ---------------------------------------------

/// The `lattice` binary for worker processes: `LATTICE_BIN`, else `lattice`
/// in the target dir this test executable was built into (`cargo build -p
/// lattice-cli` puts it there); otherwise why not.
pub fn lattice_bin() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("LATTICE_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("LATTICE_BIN={} does not exist", bin.display()))
        };
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find this test executable: {e}"))?;
    // target/debug/deps/e2e-HASH -> target/debug/lattice
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("lattice"))
        .ok_or_else(|| format!("unexpected test executable path {}", exe.display()))?;
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(format!(
            "{} is missing: run `cargo build -p lattice-cli` first (or set LATTICE_BIN)",
            candidate.display()
        ))
    }
}

/// The repository's one-node Slurm cluster config (`.ci/slurm.sh` starts
/// the cluster): `SLURM_CONF` if set, else `.ci/slurm/slurm.conf`.
pub fn slurm_conf() -> PathBuf {
    std::env::var_os("SLURM_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/slurm/slurm.conf"))
}

/// Whether a Slurm cluster answers (`sinfo` through [`slurm_conf`]) with a
/// usable node; otherwise why not.
pub fn slurm_available() -> Result<(), String> {
    let conf = slurm_conf();
    if !conf.is_file() {
        return Err(format!("no Slurm config at {}", conf.display()));
    }
    let output = Command::new("sinfo")
        .args(["-h", "-o", "%t"])
        .env("SLURM_CONF", &conf)
        .output()
        .map_err(|e| {
            format!("cannot run sinfo ({e}): run .ci/slurm.sh to install and start Slurm")
        })?;
    let states = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "sinfo failed: {} (run .ci/slurm.sh)",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    if !states
        .lines()
        .any(|s| ["idle", "mix", "alloc", "comp"].contains(&s.trim()))
    {
        return Err(format!(
            "no usable Slurm node (sinfo says {:?}); run .ci/slurm.sh",
            states.trim()
        ));
    }
    Ok(())
}
