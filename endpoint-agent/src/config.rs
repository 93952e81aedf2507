//! The agent's settings: [`AgentConfig`] (what `run_agent` needs), the saved
//! credential `endpoint.json` and the annotated `config.toml` written by
//! `lattice endpoint configure`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lattice_protocol::EndpointId;
use lattice_scheduler_adapters::{ProviderConfig, StrategyConfig};
use serde::{Deserialize, Serialize};

use crate::channel::BackoffPolicy;
use crate::provider::WorkerLaunch;
use crate::AgentError;

/// The credential file in an endpoint's state dir.
pub const CREDENTIAL_FILE: &str = "endpoint.json";
/// The config file in an endpoint's dir.
pub const CONFIG_FILE: &str = "config.toml";

/// What the agent authenticates with; saved as `endpoint.json` (mode 0600).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointCredential {
    pub endpoint_id: EndpointId,
    pub agent_secret: String,
    pub service_url: String,
}

impl std::fmt::Debug for EndpointCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointCredential")
            .field("endpoint_id", &self.endpoint_id)
            .field("agent_secret", &"<redacted>")
            .field("service_url", &self.service_url)
            .finish()
    }
}

impl EndpointCredential {
    /// Reads `STATE_DIR/endpoint.json`; `Ok(None)` if there is none.
    /// Blocking: call it from `spawn_blocking` in async code.
    pub fn load(state_dir: &Path) -> Result<Option<Self>, AgentError> {
        let path = state_dir.join(CREDENTIAL_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(file_error(&path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| file_error(&path, e))
    }

    /// Writes `STATE_DIR/endpoint.json`, readable by the owner only.
    /// Blocking: call it from `spawn_blocking` in async code.
    pub fn save(&self, state_dir: &Path) -> Result<(), AgentError> {
        let path = state_dir.join(CREDENTIAL_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| file_error(&path, e))?;
        write_private(&path, text.as_bytes())
    }
}

/// How the agent gets its credential.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// Already known (`lattice dev` registers through the store directly).
    Preset(EndpointCredential),
    /// Reuse `STATE_DIR/endpoint.json` if it exists; else register `name`
    /// with the client (a user's token) and save the answer there.
    Register {
        name: String,
        client: lattice_client::Client,
    },
    /// A multi-user root's per-user child (`lattice user-agent`): no
    /// credential; its tasks come from the root's dispatcher at `root`.
    Upstream { root: SocketAddr },
}

/// Multi-user mode: tasks are routed to per-user child agents.
#[derive(Debug)]
pub struct MultiUserMode {
    pub runner: crate::multi_user::MultiUserRunner,
    /// Tasks taken from the service at once, over all users.
    pub max_tasks: u32,
}

/// Everything `run_agent` needs.
#[derive(Debug)]
pub struct AgentConfig {
    pub credentials: Credentials,
    /// Holds `endpoint.json` and, by default, the scratch dir.
    pub state_dir: PathBuf,
    /// Local workers the agent starts (0: only workers that connect on their own).
    pub workers: u32,
    /// Tasks each local worker runs at once.
    pub worker_capacity: u32,
    pub launch: WorkerLaunch,
    /// Where the dispatcher listens for workers.
    pub dispatcher_listen: SocketAddr,
    /// Parent of per-task scratch dirs [default: STATE_DIR/scratch].
    pub scratch_dir: Option<PathBuf>,
    /// Walltime for tasks assigned with `walltime_secs == 0` [default: none].
    pub default_walltime_secs: Option<u32>,
    pub heartbeat_interval: Duration,
    /// On shutdown, how long running tasks may finish and results be
    /// acknowledged before workers are stopped.
    pub shutdown_grace: Duration,
    pub(crate) backoff: BackoffPolicy,
    /// Told once the agent listens for workers.
    pub ready: Option<tokio::sync::oneshot::Sender<crate::AgentReady>>,
    /// Worker blocks from a batch scheduler, Kubernetes or local processes,
    /// scaled by a strategy (in addition to the `workers` above).
    pub provider: Option<ProviderSettings>,
    /// Multi-user mode (root only): no workers of its own, every task goes
    /// to its submitter's child agent.
    pub multi_user: Option<MultiUserMode>,
    /// Collections this agent hosts and its transfer endpoint (none: no data plane).
    pub data: crate::data::DataSettings,
}

/// A provider of worker blocks and how to scale it.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    pub provider: ProviderConfig,
    pub strategy: StrategyConfig,
    /// `HOST:PORT` block workers dial [default: the dispatcher's address,
    /// a wildcard IP replaced by this host's name].
    pub dispatcher_address: Option<String>,
}

impl AgentConfig {
    /// Defaults: 2 local worker processes of capacity 1, dispatcher on
    /// 127.0.0.1:0, heartbeat every 5 s, 10 s shutdown grace.
    pub fn new(credentials: Credentials, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            credentials,
            state_dir: state_dir.into(),
            workers: 2,
            worker_capacity: 1,
            launch: WorkerLaunch::Processes { command: None },
            dispatcher_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            scratch_dir: None,
            default_walltime_secs: None,
            heartbeat_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            backoff: BackoffPolicy::default(),
            ready: None,
            provider: None,
            multi_user: None,
            data: crate::data::DataSettings::default(),
        }
    }

    /// Applies an endpoint's `config.toml` (the service URL is used by the
    /// caller to build the client for `Credentials::Register`).
    pub fn apply_file(&mut self, file: &EndpointFileConfig) {
        self.workers = file.local_workers();
        self.worker_capacity = file.worker_capacity;
        if let Some(listen) = file.dispatcher_listen {
            self.dispatcher_listen = listen;
        }
        if file.scratch_dir.is_some() {
            self.scratch_dir = file.scratch_dir.clone();
        }
        self.default_walltime_secs = file.default_walltime_secs;
        if let Some(command) = &file.worker_command {
            self.launch = WorkerLaunch::Processes {
                command: Some(command.clone()),
            };
        }
        self.data.collections = file.collections.clone();
        if let Some(listen) = file.data_listen {
            self.data.listen = listen;
        }
        if file.data_advertise.is_some() {
            self.data.advertise = file.data_advertise;
        }
        self.provider = file.provider.as_ref().map(|provider| ProviderSettings {
            provider: provider.clone(),
            strategy: file.strategy.clone().unwrap_or_default(),
            dispatcher_address: file.dispatcher_address.clone(),
        });
    }
}

/// `ENDPOINTS_DIR/NAME/config.toml`, as written by `lattice endpoint configure`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointFileConfig {
    pub service_url: String,
    /// Extra CA certificates (PEM) to trust for `service_url` (a site's
    /// private CA); `--ca-file` or `LATTICE_CA_FILE` win over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Local worker processes [default: 2, or 0 with a `[provider]`].
    #[serde(default)]
    pub workers: Option<u32>,
    #[serde(default = "default_capacity")]
    pub worker_capacity: u32,
    #[serde(default)]
    pub dispatcher_listen: Option<SocketAddr>,
    #[serde(default)]
    pub default_walltime_secs: Option<u32>,
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
    #[serde(default)]
    pub worker_command: Option<PathBuf>,
    /// `HOST:PORT` that block workers dial, when it differs from `dispatcher_listen`.
    #[serde(default)]
    pub dispatcher_address: Option<String>,
    #[serde(default)]
    pub provider: Option<ProviderConfig>,
    #[serde(default)]
    pub strategy: Option<StrategyConfig>,
    /// Multi-user mode (`lattice agent --multi-user`): identity mapping,
    /// per-user config template, policy, audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_user: Option<crate::multi_user::MultiUserConfig>,
    /// Collections this endpoint hosts (`[[collections]]` tables with
    /// `name` and `root`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<crate::data::CollectionConfig>,
    /// UDP address of the transfer endpoint [default: 0.0.0.0:0].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_listen: Option<SocketAddr>,
    /// IP that other agents connect to for transfers [default: the local
    /// IP of the route to the service].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_advertise: Option<std::net::IpAddr>,
}

/// Local workers when the file does not say and there is no provider.
const DEFAULT_LOCAL_WORKERS: u32 = 2;

fn default_capacity() -> u32 {
    1
}

impl EndpointFileConfig {
    pub fn new(service_url: impl Into<String>) -> Self {
        Self {
            service_url: service_url.into(),
            ca_file: None,
            workers: None,
            worker_capacity: default_capacity(),
            dispatcher_listen: None,
            default_walltime_secs: None,
            scratch_dir: None,
            worker_command: None,
            dispatcher_address: None,
            provider: None,
            strategy: None,
            multi_user: None,
            collections: Vec::new(),
            data_listen: None,
            data_advertise: None,
        }
    }

    /// Local worker processes: as set, else 2 without a provider and 0 with
    /// one (a login node should not run work).
    pub fn local_workers(&self) -> u32 {
        self.workers.unwrap_or(if self.provider.is_some() {
            0
        } else {
            DEFAULT_LOCAL_WORKERS
        })
    }

    /// Reads and checks a config file. Blocking.
    pub fn load(path: &Path) -> Result<Self, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        let config: Self = toml::from_str(&text).map_err(|e| file_error(path, e))?;
        config.check().map_err(|detail| AgentError::File {
            path: path.display().to_string(),
            detail,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        url::Url::parse(&self.service_url)
            .map_err(|e| format!("service_url `{}`: {e}", self.service_url))?;
        if self.worker_capacity == 0 {
            return Err("worker_capacity must be at least 1".to_owned());
        }
        if let Some(provider) = &self.provider {
            provider.check()?;
        }
        if let Some(strategy) = &self.strategy {
            if self.provider.is_none() {
                return Err("[strategy] needs a [provider] table to scale".to_owned());
            }
            strategy.check()?;
        }
        if let Some(multi_user) = &self.multi_user {
            multi_user.check()?;
            if !self.collections.is_empty() {
                return Err(crate::agent::MULTI_USER_COLLECTIONS.to_owned());
            }
        }
        for collection in &self.collections {
            collection.check()?;
        }
        Ok(())
    }

    /// The file's text, every setting explained (unset ones commented out).
    pub fn render(&self, name: &str) -> String {
        fn quoted(value: &str) -> String {
            toml::Value::String(value.to_owned()).to_string()
        }
        let mut out = String::new();
        out.push_str(&format!(
            "# Lattice endpoint `{name}`. Start it with `lattice endpoint start {name}`.\n\n"
        ));
        out.push_str("# The service this endpoint registers with and connects to.\n");
        out.push_str(&format!("service_url = {}\n\n", quoted(&self.service_url)));
        out.push_str("# CA certificates (PEM) to trust for an https:// service_url signed by a\n");
        out.push_str("# private CA, added to the system's store (--ca-file and LATTICE_CA_FILE\n");
        out.push_str("# win over this).\n");
        match &self.ca_file {
            Some(path) => out.push_str(&format!(
                "ca_file = {}\n\n",
                quoted(&path.display().to_string())
            )),
            None => out.push_str("# ca_file = \"/etc/pki/site-ca.pem\"\n\n"),
        }
        out.push_str("# Worker processes the agent starts on this machine (0: only workers\n");
        out.push_str("# started elsewhere with `lattice worker --dispatcher ADDR` or by the\n");
        out.push_str("# [provider] below). Default: 2, or 0 when a [provider] is set.\n");
        out.push_str(&format!("workers = {}\n\n", self.local_workers()));
        out.push_str("# Tasks each worker runs at once.\n");
        out.push_str(&format!("worker_capacity = {}\n\n", self.worker_capacity));
        out.push_str("# Address the dispatcher listens on for workers (port 0: any free port).\n");
        out.push_str(
            "# Workers on compute nodes must reach it: on a cluster listen on the login\n",
        );
        out.push_str("# node's internal interface (or 0.0.0.0) with a fixed port.\n");
        match self.dispatcher_listen {
            Some(listen) => out.push_str(&format!("dispatcher_listen = \"{listen}\"\n\n")),
            None => out.push_str("# dispatcher_listen = \"127.0.0.1:0\"\n\n"),
        }
        out.push_str("# Walltime in seconds for tasks submitted without one (unset: no limit).\n");
        match self.default_walltime_secs {
            Some(secs) => out.push_str(&format!("default_walltime_secs = {secs}\n\n")),
            None => out.push_str("# default_walltime_secs = 3600\n\n"),
        }
        out.push_str("# Parent of the per-task scratch directories (default: the endpoint dir + /scratch).\n");
        match &self.scratch_dir {
            Some(dir) => out.push_str(&format!(
                "scratch_dir = {}\n\n",
                quoted(&dir.display().to_string())
            )),
            None => out.push_str("# scratch_dir = \"/scratch/lattice\"\n\n"),
        }
        out.push_str(
            "# The `lattice` binary that runs workers (default: this agent's own binary).\n",
        );
        match &self.worker_command {
            Some(cmd) => out.push_str(&format!(
                "worker_command = {}\n",
                quoted(&cmd.display().to_string())
            )),
            None => out.push_str("# worker_command = \"/usr/local/bin/lattice\"\n"),
        }
        out.push_str(
            "\n# HOST:PORT that block workers dial, if not the listen address (default:\n",
        );
        out.push_str("# the listen address, with 0.0.0.0 replaced by this host's name).\n");
        match &self.dispatcher_address {
            Some(address) => out.push_str(&format!("dispatcher_address = {}\n", quoted(address))),
            None => out.push_str("# dispatcher_address = \"login1.cluster.example:9000\"\n"),
        }
        if let Some(listen) = self.data_listen {
            out.push_str(
                "\n# UDP address of the transfer endpoint (QUIC; port 0: any free port).\n",
            );
            out.push_str(&format!("data_listen = \"{listen}\"\n"));
        }
        if let Some(ip) = self.data_advertise {
            out.push_str("\n# IP other agents connect to for transfers (default: the local IP of the route to the service).\n");
            out.push_str(&format!("data_advertise = \"{ip}\"\n"));
        }
        if let Some(provider) = &self.provider {
            out.push('\n');
            out.push_str(&provider.render());
            out.push('\n');
            out.push_str(&self.strategy.clone().unwrap_or_default().render());
        }
        if let Some(multi_user) = &self.multi_user {
            out.push_str("\n# Multi-user mode (`lattice agent --multi-user`, as root); see docs/multi-user.md.\n");
            let mut table = toml::Table::new();
            if let Ok(value) = toml::Value::try_from(multi_user) {
                table.insert("multi_user".to_owned(), value);
            }
            out.push_str(&toml::to_string(&table).unwrap_or_default());
        }
        if !self.collections.is_empty() {
            out.push_str(
                "\n# Collections this endpoint hosts: every path is resolved beneath `root`.\n",
            );
            for collection in &self.collections {
                out.push_str(&format!(
                    "[[collections]]\nname = {}\nroot = {}\n",
                    quoted(&collection.name),
                    quoted(&collection.root.display().to_string())
                ));
            }
        }
        out
    }

    /// Writes the annotated file (creating its dir). Blocking.
    pub fn save(&self, path: &Path, name: &str) -> Result<(), AgentError> {
        write_private(path, self.render(name).as_bytes())
    }
}

/// `CONFIG_DIR/endpoints/NAME`.
pub fn endpoint_dir(config_dir: &Path, name: &str) -> Result<PathBuf, AgentError> {
    validate_endpoint_name(name)?;
    Ok(config_dir.join("endpoints").join(name))
}

/// Endpoint names become directory names: the one rule of
/// [`lattice_protocol::names::EndpointName`].
pub fn validate_endpoint_name(name: &str) -> Result<(), AgentError> {
    lattice_protocol::names::EndpointName::parse(name)
        .map(drop)
        .map_err(|e| AgentError::Config(e.to_string()))
}

fn file_error(path: &Path, error: impl std::fmt::Display) -> AgentError {
    AgentError::File {
        path: path.display().to_string(),
        detail: error.to_string(),
    }
}

/// Writes a file readable by its owner only, atomically (temp file + rename).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        file_error(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn credential_is_saved_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        assert!(EndpointCredential::load(dir.path()).unwrap().is_none());
        let credential = EndpointCredential {
            endpoint_id: EndpointId::new(),
            agent_secret: "lat_agent_secret".into(),
            service_url: "http://127.0.0.1:8470/".into(),
        };
        credential.save(&dir.path().join("nested")).unwrap();
        let path = dir.path().join("nested").join(CREDENTIAL_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            EndpointCredential::load(&dir.path().join("nested")).unwrap(),
            Some(credential.clone())
        );
        assert!(!format!("{credential:?}").contains("lat_agent_secret"));
    }

    #[test]
    fn rendered_config_round_trips_and_unknown_fields_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        let mut config = EndpointFileConfig::new("http://127.0.0.1:8470");
        config.save(&path, "laptop").unwrap();
        let mut reloaded = EndpointFileConfig::load(&path).unwrap();
        assert_eq!(
            reloaded.workers,
            Some(2),
            "the rendering writes the default"
        );
        reloaded.workers = None;
        assert_eq!(reloaded, config);
        config.workers = Some(4);
        config.default_walltime_secs = Some(60);
        config.dispatcher_listen = Some("0.0.0.0:9000".parse().unwrap());
        config.scratch_dir = Some("/tmp/x \"y\"".into());
        config.save(&path, "laptop").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# Tasks each worker runs at once."));
        assert_eq!(EndpointFileConfig::load(&path).unwrap(), config);

        std::fs::write(&path, "service_url = \"http://x\"\nworkerz = 3\n").unwrap();
        let err = EndpointFileConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("workerz"), "{err}");
        std::fs::write(&path, "service_url = \"http://x\"\nworker_capacity = 0\n").unwrap();
        assert!(EndpointFileConfig::load(&path).is_err());
    }

    /// Until mapped collections exist, a multi-user agent's collections
    /// would be served as root: refused with the reason.
    #[test]
    fn a_multi_user_agent_refuses_collections() {
        let mut config = EndpointFileConfig::new("http://127.0.0.1:8470");
        config.multi_user = Some(crate::multi_user::MultiUserConfig {
            rules: vec![crate::multi_user::RuleConfig {
                field: crate::multi_user::mapping::Field::Username,
                pattern: "([a-z]+)".into(),
                output: "{0}".into(),
            }],
            ..crate::multi_user::MultiUserConfig::default()
        });
        config.check().expect("multi-user alone is fine");
        config.collections = vec![crate::data::CollectionConfig {
            name: "scratch".into(),
            root: "/scratch".into(),
        }];
        let err = config.check().unwrap_err();
        assert!(err.contains("cannot host collections yet"), "{err}");
    }

    #[test]
    fn collections_and_the_data_endpoint_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        let mut config = EndpointFileConfig::new("http://127.0.0.1:8470");
        config.collections = vec![crate::data::CollectionConfig {
            name: "scratch".into(),
            root: "/scratch/a \"b\"".into(),
        }];
        config.data_listen = Some("0.0.0.0:47000".parse().unwrap());
        config.data_advertise = Some("10.1.2.3".parse().unwrap());
        config.workers = Some(2);
        config.save(&path, "hpc").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("[[collections]]"), "{text}");
        assert_eq!(EndpointFileConfig::load(&path).unwrap(), config);
        let mut agent = AgentConfig::new(
            Credentials::Preset(EndpointCredential {
                endpoint_id: EndpointId::new(),
                agent_secret: "s".into(),
                service_url: "http://127.0.0.1:8470".into(),
            }),
            dir.path(),
        );
        agent.apply_file(&config);
        assert_eq!(agent.data.collections, config.collections);
        assert_eq!(agent.data.listen, "0.0.0.0:47000".parse().unwrap());
        assert_eq!(agent.data.advertise, Some("10.1.2.3".parse().unwrap()));
        // Names that would break `COLLECTION:PATH` are refused at load.
        std::fs::write(
            &path,
            "service_url = \"http://x\"\n[[collections]]\nname = \"a:b\"\nroot = \"/x\"\n",
        )
        .unwrap();
        let err = EndpointFileConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("a:b"), "{err}");
    }

    /// What `lattice endpoint configure NAME --provider slurm` writes.
    #[test]
    fn slurm_template() {
        let mut config = EndpointFileConfig::new("https://lattice.example.org");
        config.provider = Some(ProviderConfig::template("slurm").unwrap());
        config.strategy = Some(StrategyConfig::default());
        let text = config.render("hpc");
        expect_test::expect![[r##"
            # Lattice endpoint `hpc`. Start it with `lattice endpoint start hpc`.

            # The service this endpoint registers with and connects to.
            service_url = "https://lattice.example.org"

            # CA certificates (PEM) to trust for an https:// service_url signed by a
            # private CA, added to the system's store (--ca-file and LATTICE_CA_FILE
            # win over this).
            # ca_file = "/etc/pki/site-ca.pem"

            # Worker processes the agent starts on this machine (0: only workers
            # started elsewhere with `lattice worker --dispatcher ADDR` or by the
            # [provider] below). Default: 2, or 0 when a [provider] is set.
            workers = 0

            # Tasks each worker runs at once.
            worker_capacity = 1

            # Address the dispatcher listens on for workers (port 0: any free port).
            # Workers on compute nodes must reach it: on a cluster listen on the login
            # node's internal interface (or 0.0.0.0) with a fixed port.
            # dispatcher_listen = "127.0.0.1:0"

            # Walltime in seconds for tasks submitted without one (unset: no limit).
            # default_walltime_secs = 3600

            # Parent of the per-task scratch directories (default: the endpoint dir + /scratch).
            # scratch_dir = "/scratch/lattice"

            # The `lattice` binary that runs workers (default: this agent's own binary).
            # worker_command = "/usr/local/bin/lattice"

            # HOST:PORT that block workers dial, if not the listen address (default:
            # the listen address, with 0.0.0.0 replaced by this host's name).
            # dispatcher_address = "login1.cluster.example:9000"

            # Where worker blocks run. Each block is one allocation (a batch job, a
            # set of pods, a group of local processes) whose nodes each start
            # `workers_per_node` `lattice worker` processes that connect back to
            # this agent's dispatcher; the [strategy] table decides how many.
            [provider]

            # One of: local, slurm, pbs, lsf, kubernetes.
            type = "slurm"

            # Partition (`#SBATCH --partition`); unset: the cluster's default.
            # partition = "compute"

            # Account charged for the nodes (`--account`); unset: your default account.
            # account = "project123"

            # Quality of service (`--qos`).
            # qos = "normal"

            # Node features the block needs (`--constraint`).
            # constraint = "haswell"

            # Ask for whole nodes (`--exclusive`).
            exclusive = false

            # Walltime of each block (`--time`), HH:MM:SS or D-HH:MM:SS. Workers are
            # killed when it ends; their running tasks are retried on another block.
            walltime = "01:00:00"

            # Extra lines for the batch script's header, verbatim.
            # scheduler_options = ["#SBATCH --gres=gpu:1", "#SBATCH --mail-type=FAIL"]

            # Shell lines the batch script runs on the first node before the workers start
            # (keep to POSIX sh: `. FILE`). The first line that fails stops the block; its
            # stderr is shown on the endpoint and on the tasks that wait for it.
            # worker_init = ["module load python", ". ~/venv/bin/activate"]

            # Where batch scripts and job output files go (default: the endpoint's dir + /blocks).
            # script_dir = "/home/me/lattice-blocks"

            # Seconds an sbatch/squeue/scancel call may take before it counts as failed.
            command_timeout_secs = 60

            # How many blocks run. Blocks are added while tasks wait and no worker
            # slot is free, and cancelled after `max_idletime_secs` without tasks.
            [strategy]

            # Blocks submitted when the agent starts.
            init_blocks = 0

            # Blocks kept even when idle (0: give every node back when there is no work).
            min_blocks = 0

            # Never more blocks than this, pending ones included.
            max_blocks = 1

            # Nodes in each block (`--nodes` of the batch job, pods of a Kubernetes block).
            nodes_per_block = 1

            # Worker processes started on each node; each runs `worker_capacity` tasks at once.
            workers_per_node = 1

            # Seconds a block may sit without tasks before it is cancelled.
            max_idletime_secs = 120

            # Seconds between asking the scheduler for block states (and deciding).
            poll_interval_secs = 5
        "##]]
        .assert_eq(&text);
        let parsed: EndpointFileConfig = toml::from_str(&text).unwrap();
        assert_eq!(parsed.local_workers(), 0, "no work on the login node");
        assert_eq!(parsed.provider, config.provider);
        assert_eq!(parsed.strategy, config.strategy);
    }

    /// Every commented example of every provider's template works as
    /// written: uncommented, the file loads as the agent loads it, and the
    /// worker_init examples run in the script each provider's blocks run,
    /// under that script's shell (`/bin/sh` for local and Kubernetes blocks,
    /// bash for the batch scripts), with a throwaway venv in `$HOME` and a
    /// stand-in for the cluster's `module` command. The example used to be
    /// `source ~/venv/bin/activate`, which `/bin/sh` does not know.
    #[test]
    fn every_template_example_works_uncommented() {
        use lattice_scheduler_adapters::{kubernetes, local, lsf, pbs, slurm};
        use lattice_scheduler_adapters::{BlockSpec, WorkerCommand};
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let venv = home.join("venv/bin");
        std::fs::create_dir_all(&venv).unwrap();
        std::fs::write(
            venv.join("activate"),
            "VIRTUAL_ENV=\"$HOME/venv\"\nexport VIRTUAL_ENV\nPATH=\"$VIRTUAL_ENV/bin:$PATH\"\nexport PATH\n",
        )
        .unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let tool = |name: &str, body: &str| {
            let path = bin.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        // The worker: says what worker_init left it.
        let worker = tool(
            "lattice",
            "echo \"worker $LATTICE_BLOCK_ID VIRTUAL_ENV=$VIRTUAL_ENV OMP_NUM_THREADS=$OMP_NUM_THREADS\"",
        );
        tool("module", "echo \"module $*\" >&2");
        // srun [--options] PROGRAM ARGS: runs the program once.
        tool(
            "srun",
            "while [ \"${1#--}\" != \"$1\" ]; do shift; done; exec \"$@\"",
        );
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let spec = BlockSpec {
            block_id: "b1".into(),
            nodes: 1,
            workers_per_node: 1,
            walltime: Duration::from_secs(600),
            worker: WorkerCommand {
                program: worker,
                dispatcher: "127.0.0.1:9".into(),
                capacity: 1,
                scratch_dir: None,
            },
            worker_init: Vec::new(),
        };
        let example = regex::Regex::new(r"^# ([a-z_]+ = .*)$").unwrap();

        for kind in lattice_scheduler_adapters::config::PROVIDER_KINDS {
            let mut config = EndpointFileConfig::new("https://lattice.example.org");
            config.provider = Some(ProviderConfig::template(kind).unwrap());
            config.strategy = Some(StrategyConfig::default());
            let mut uncommented = 0;
            let text: String = config
                .render("hpc")
                .lines()
                .map(|line| match example.captures(line) {
                    Some(c) => {
                        uncommented += 1;
                        format!("{}\n", &c[1])
                    }
                    None => format!("{line}\n"),
                })
                .collect();
            let file = dir.path().join(format!("{kind}.toml"));
            std::fs::write(&file, &text).unwrap();
            let loaded =
                EndpointFileConfig::load(&file).unwrap_or_else(|e| panic!("{kind}: {e}\n{text}"));
            let mut agent = AgentConfig::new(
                Credentials::Preset(EndpointCredential {
                    endpoint_id: EndpointId::new(),
                    agent_secret: "s".into(),
                    service_url: loaded.service_url.clone(),
                }),
                dir.path(),
            );
            agent.apply_file(&loaded);
            let mut provider = agent.provider.expect("a provider").provider;
            assert!(uncommented > 5, "{kind}: {uncommented} examples\n{text}");
            assert!(
                !provider.worker_init().is_empty(),
                "{kind}: the worker_init example was uncommented"
            );
            let mut spec = spec.clone();
            spec.worker_init = provider.worker_init().to_vec();

            // The script a block of this provider runs, and its shell.
            let blocks = dir.path().join(format!("{kind}-blocks"));
            std::fs::create_dir_all(&blocks).unwrap();
            let (shell, script) = match &mut provider {
                ProviderConfig::Local(c) => {
                    c.script_dir = Some(blocks.clone());
                    let p = local::LocalProvider::new(c.clone(), &blocks);
                    (local::SHELL, p.render_script(&spec, 0))
                }
                ProviderConfig::Slurm(c) => {
                    c.script_dir = Some(blocks.clone());
                    let p = slurm::SlurmProvider::new(c.clone(), &blocks);
                    ("bash", p.render_script(&spec))
                }
                ProviderConfig::Pbs(c) => {
                    c.script_dir = Some(blocks.clone());
                    let p = pbs::PbsProvider::new(c.clone(), &blocks);
                    ("bash", p.render_script(&spec).unwrap())
                }
                ProviderConfig::Lsf(c) => {
                    c.script_dir = Some(blocks.clone());
                    let p = lsf::LsfProvider::new(c.clone(), &blocks);
                    ("bash", p.render_script(&spec).unwrap())
                }
                ProviderConfig::Kubernetes(c) => {
                    // The examples name files that are not here.
                    c.token_file = None;
                    c.ca_file = None;
                    let p = kubernetes::KubernetesProvider::new(c.clone()).unwrap();
                    let pod = p.pod(&spec, 0);
                    let command = &pod["spec"]["containers"][0]["command"];
                    assert_eq!(command[0], "/bin/sh", "{pod}");
                    ("/bin/sh", command[2].as_str().unwrap().to_owned())
                }
            };
            let output = std::process::Command::new(shell)
                .arg("-c")
                .arg(&script)
                .env("HOME", &home)
                .env("PATH", &path)
                .env("LATTICE_BLOCK_ID", "b1")
                .env("SLURM_JOB_ID", "11")
                .env("PBS_JOBID", "12.pbs01")
                .env("LSB_JOBID", "13")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success(),
                "{kind}: {:?} {stdout}{stderr}\n{script}",
                output.status
            );
            assert!(
                stdout.starts_with("worker b1 "),
                "{kind}: the worker started: {stdout}{stderr}"
            );
            let venv = home.join("venv").display().to_string();
            match kind {
                "kubernetes" => assert!(stdout.contains("OMP_NUM_THREADS=1"), "{stdout}"),
                "pbs" | "lsf" => assert!(stderr.contains("module load python"), "{stderr}"),
                _ => assert!(
                    stdout.contains(&format!("VIRTUAL_ENV={venv} ")),
                    "{kind}: {stdout}{stderr}"
                ),
            }
            if kind == "slurm" {
                assert!(stderr.contains("module load python"), "{stderr}");
            }
            let left: Vec<_> = std::fs::read_dir(&blocks).unwrap().collect();
            assert!(
                left.is_empty(),
                "{kind}: no worker_init report left: {left:?}"
            );
        }
    }

    #[test]
    fn provider_settings_are_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        let base = "service_url = \"http://x\"\n";
        std::fs::write(
            &path,
            format!("{base}[provider]\ntype = \"slurm\"\nwalltime = \"1:99\"\n"),
        )
        .unwrap();
        let err = EndpointFileConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("provider.walltime"), "{err}");
        std::fs::write(
            &path,
            format!(
                "{base}[provider]\ntype = \"pbs\"\n[strategy]\nmin_blocks = 2\nmax_blocks = 1\n"
            ),
        )
        .unwrap();
        let err = EndpointFileConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("strategy.min_blocks"), "{err}");
        std::fs::write(&path, format!("{base}[strategy]\nmax_blocks = 1\n")).unwrap();
        let err = EndpointFileConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("[provider]"), "{err}");
        std::fs::write(
            &path,
            format!("{base}workers = 1\n[provider]\ntype = \"local\"\n"),
        )
        .unwrap();
        let loaded = EndpointFileConfig::load(&path).unwrap();
        let mut agent = AgentConfig::new(
            Credentials::Preset(EndpointCredential {
                endpoint_id: EndpointId::new(),
                agent_secret: "s".into(),
                service_url: "http://x".into(),
            }),
            dir.path(),
        );
        agent.apply_file(&loaded);
        assert_eq!(agent.workers, 1);
        let settings = agent.provider.unwrap();
        assert_eq!(settings.provider.kind(), "local");
        assert_eq!(settings.strategy, StrategyConfig::default());
    }

    #[test]
    fn endpoint_names_are_safe_directory_names() {
        assert!(validate_endpoint_name("laptop-1.lab_a").is_ok());
        for bad in ["", "..", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_endpoint_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            endpoint_dir(Path::new("/c"), "ep").unwrap(),
            PathBuf::from("/c/endpoints/ep")
        );
    }
}
