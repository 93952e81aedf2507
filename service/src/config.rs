//! Service configuration: command-line flags, then `LATTICE_*` environment
//! variables, then a TOML file, then defaults, in that precedence. Flags and
//! env are parsed by clap ([`ServiceArgs`]); [`ServiceConfig::from_layers`]
//! merges them with the file and validates the result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Deserialize;

/// Default listen address of the service.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";
/// Default largest accepted request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Default lifetime of access tokens from interactive logins and client credentials.
pub const DEFAULT_ACCESS_TOKEN_TTL_SECS: i64 = 3600;
/// Default lifetime of refresh tokens.
pub const DEFAULT_REFRESH_TOKEN_TTL_SECS: i64 = 30 * 24 * 3600;

/// Default walltime of a task.
pub const DEFAULT_WALLTIME_SECS: u32 = 600;
/// Default largest batch.
pub const DEFAULT_MAX_BATCH_TASKS: usize = 10_000;
/// Default largest inline result.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 10_000_000;

/// How logs are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Flags of `lattice service` (each also read from its `LATTICE_*` variable).
#[derive(Args, Clone, Debug, Default)]
pub struct ServiceArgs {
    /// TOML file with any of the keys below (snake_case, e.g. `database_url`;
    /// OpenID Connect keys under `[oidc]`). Flags and LATTICE_* variables override it.
    #[arg(long, env = "LATTICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8470].
    #[arg(long, env = "LATTICE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// URL clients and the identity provider use to reach this service
    /// [default: http://LISTEN]. Needed behind a proxy or load balancer.
    #[arg(long, env = "LATTICE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<url::Url>,

    /// Directory for the SQLite store and other state [default: the user's
    /// data dir, e.g. ~/.local/share/lattice].
    #[arg(long, env = "LATTICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Store location: `sqlite://PATH` or `postgres://USER@HOST/DB`
    /// [default: sqlite://DATA_DIR/lattice.db].
    #[arg(long, env = "LATTICE_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// Log format on stderr [default: text].
    #[arg(long, env = "LATTICE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Largest accepted request body in bytes; larger ones get 413 [default: 16 MiB].
    #[arg(long, env = "LATTICE_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Lifetime of access tokens in seconds [default: 3600].
    #[arg(long, env = "LATTICE_ACCESS_TOKEN_TTL", value_name = "SECS")]
    pub access_token_ttl: Option<i64>,

    /// Lifetime of refresh tokens in seconds [default: 2592000 (30 days)].
    #[arg(long, env = "LATTICE_REFRESH_TOKEN_TTL", value_name = "SECS")]
    pub refresh_token_ttl: Option<i64>,

    /// RabbitMQ for the task queues, e.g. `amqp://user:pass@host:5672/%2f`
    /// [default: the embedded queue, persisted in the store; one service process only].
    #[arg(
        long,
        env = "LATTICE_AMQP_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub amqp_url: Option<String>,

    /// Walltime of a task that names none, in seconds [default: 600].
    #[arg(long, env = "LATTICE_DEFAULT_WALLTIME", value_name = "SECS")]
    pub default_walltime: Option<u32>,

    /// Most tasks accepted in one batch; larger batches get 413 [default: 10000].
    #[arg(long, env = "LATTICE_MAX_BATCH_TASKS", value_name = "N")]
    pub max_batch_tasks: Option<usize>,

    /// Largest result stored inline (stdout + stderr + value); larger results
    /// fail the task with a clear error [default: 10000000].
    #[arg(long, env = "LATTICE_MAX_RESULT_BYTES", value_name = "BYTES")]
    pub max_result_bytes: Option<usize>,

    /// Serve HTTPS with this certificate chain (PEM; the leaf first). Read
    /// again on SIGHUP and whenever the file changes, so a renewal needs no
    /// restart. Needs --tls-key. Without it the service speaks plain HTTP
    /// (behind a TLS-terminating proxy, or on loopback).
    #[arg(
        long,
        env = "LATTICE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "LATTICE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Issuer URL of the OpenID Connect provider for `lattice login`
    /// (discovery at ISSUER/.well-known/openid-configuration).
    #[arg(long, env = "LATTICE_OIDC_ISSUER", value_name = "URL")]
    pub oidc_issuer: Option<String>,

    /// Client id registered for this service at the OpenID Connect provider.
    #[arg(long, env = "LATTICE_OIDC_CLIENT_ID", value_name = "ID")]
    pub oidc_client_id: Option<String>,

    /// Client secret at the OpenID Connect provider (prefer the env variable
    /// or the file over the flag, which other users can see in `ps`).
    #[arg(
        long,
        env = "LATTICE_OIDC_CLIENT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub oidc_client_secret: Option<String>,

    /// SMTP server for notification email: `smtp://HOST:PORT` (plain),
    /// `smtp://HOST:587?tls=required` (STARTTLS) or `smtps://HOST:465`,
    /// with optional `USER:PASSWORD@` [default: no email].
    #[arg(
        long,
        env = "LATTICE_SMTP_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub smtp_url: Option<String>,

    /// Sender of notification email, e.g. `Lattice <lattice@example.org>`.
    #[arg(long, env = "LATTICE_MAIL_FROM", value_name = "ADDRESS")]
    pub mail_from: Option<String>,

    /// Let webhooks target loopback and private addresses (for trying
    /// things on one machine; `lattice dev` allows them).
    #[arg(long, env = "LATTICE_ALLOW_PRIVATE_WEBHOOKS", value_name = "BOOL")]
    pub allow_private_webhooks: Option<bool>,
}

/// The certificate and key the service serves HTTPS with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The TOML file's shape; unknown keys are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub public_url: Option<url::Url>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub log_format: Option<LogFormat>,
    pub max_body_bytes: Option<usize>,
    pub access_token_ttl: Option<i64>,
    pub refresh_token_ttl: Option<i64>,
    pub amqp_url: Option<String>,
    pub default_walltime: Option<u32>,
    pub max_batch_tasks: Option<usize>,
    pub max_result_bytes: Option<usize>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Extra CA certificates (PEM) for outbound TLS (OpenID Connect,
    /// RabbitMQ); `--ca-file` and `LATTICE_CA_FILE` win over it.
    pub ca_file: Option<PathBuf>,
    pub oidc: Option<OidcFileConfig>,
    pub search: Option<SearchFileConfig>,
    pub flows: Option<FlowsFileConfig>,
    pub timers: Option<TimersFileConfig>,
    pub notify: Option<NotifyFileConfig>,
}

/// The `[timers]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimersFileConfig {
    /// Shortest interval of a recurring timer, in seconds (default 60;
    /// `lattice dev` allows 1).
    pub min_interval_secs: Option<u64>,
}

/// The resolved `[timers]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimersConfig {
    pub min_interval_secs: u64,
}

/// Default shortest interval of a recurring timer, in seconds.
pub const DEFAULT_MIN_TIMER_INTERVAL_SECS: u64 = 60;

impl TimersConfig {
    fn resolve(file: Option<TimersFileConfig>) -> Result<Self, ConfigError> {
        let file = file.unwrap_or_default();
        match file.min_interval_secs {
            Some(0) => Err(ConfigError::Invalid {
                key: "timers.min_interval_secs",
                message: "must be at least 1".into(),
            }),
            other => Ok(Self {
                min_interval_secs: other.unwrap_or(DEFAULT_MIN_TIMER_INTERVAL_SECS),
            }),
        }
    }
}

/// The `[notify]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFileConfig {
    /// `smtp://`, `smtp://...?tls=required` or `smtps://`, with optional
    /// credentials; absent: no email.
    pub smtp_url: Option<String>,
    /// The sender of notification email.
    pub mail_from: Option<String>,
    /// Let webhooks target loopback and private addresses.
    pub allow_private_webhooks: Option<bool>,
    /// Seconds a webhook receiver has to answer one attempt.
    pub webhook_timeout_secs: Option<u64>,
    /// Attempts per delivery before it is given up.
    pub webhook_max_attempts: Option<u32>,
    /// Milliseconds before the first retry; each next retry waits four
    /// times longer (capped at an hour).
    pub webhook_retry_base_ms: Option<u64>,
}

/// The resolved `[notify]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyConfig {
    /// `None`: email is off.
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub allow_private_webhooks: bool,
    pub webhook_timeout_secs: u64,
    pub webhook_max_attempts: u32,
    pub webhook_retry_base_ms: u64,
}

/// Default sender of notification email.
pub const DEFAULT_MAIL_FROM: &str = "Lattice <lattice@localhost>";
/// Default seconds a webhook receiver has to answer.
pub const DEFAULT_WEBHOOK_TIMEOUT_SECS: u64 = 10;
/// Default attempts per webhook delivery.
pub const DEFAULT_WEBHOOK_MAX_ATTEMPTS: u32 = 8;
/// Default wait before a webhook's first retry (5 s; then 20 s, 80 s, ...).
pub const DEFAULT_WEBHOOK_RETRY_BASE_MS: u64 = 5_000;

impl NotifyConfig {
    fn resolve(args: &ServiceArgs, file: Option<NotifyFileConfig>) -> Result<Self, ConfigError> {
        let file = file.unwrap_or_default();
        let smtp_url = args.smtp_url.clone().or(file.smtp_url);
        if let Some(text) = &smtp_url {
            let url = url::Url::parse(text).map_err(|e| ConfigError::Invalid {
                key: "notify.smtp_url",
                message: e.to_string(),
            })?;
            if !matches!(url.scheme(), "smtp" | "smtps") || url.host_str().is_none() {
                return Err(ConfigError::Invalid {
                    key: "notify.smtp_url",
                    message: "expected smtp://HOST:PORT, smtp://HOST:PORT?tls=required or smtps://HOST:PORT".into(),
                });
            }
        }
        let mail_from = args
            .mail_from
            .clone()
            .or(file.mail_from)
            .unwrap_or_else(|| DEFAULT_MAIL_FROM.to_owned());
        if mail_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::Invalid {
                key: "notify.mail_from",
                message: format!(
                    "`{mail_from}` is not an address like `Lattice <lattice@example.org>`"
                ),
            });
        }
        let webhook_max_attempts = file
            .webhook_max_attempts
            .unwrap_or(DEFAULT_WEBHOOK_MAX_ATTEMPTS);
        if !(1..=20).contains(&webhook_max_attempts) {
            return Err(ConfigError::Invalid {
                key: "notify.webhook_max_attempts",
                message: "must be 1 to 20".into(),
            });
        }
        let webhook_timeout_secs = file
            .webhook_timeout_secs
            .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT_SECS);
        if webhook_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "notify.webhook_timeout_secs",
                message: "must be at least 1".into(),
            });
        }
        Ok(Self {
            smtp_url,
            mail_from,
            allow_private_webhooks: args
                .allow_private_webhooks
                .or(file.allow_private_webhooks)
                .unwrap_or(false),
            webhook_timeout_secs,
            webhook_max_attempts,
            webhook_retry_base_ms: file
                .webhook_retry_base_ms
                .unwrap_or(DEFAULT_WEBHOOK_RETRY_BASE_MS)
                .max(1),
        })
    }
}

/// The `[flows]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowsFileConfig {
    /// Seconds a replica holds a run without renewing; another replica
    /// takes over a dead one's runs after this.
    pub lease_secs: Option<u64>,
    /// Hosts external action providers may be on (`*.example.org` for a
    /// domain); empty or absent: any host.
    pub action_hosts: Option<Vec<String>>,
    /// State entries per run.
    pub max_transitions: Option<u64>,
    /// Largest state data, in bytes.
    pub max_state_bytes: Option<usize>,
    /// Most items one `Map` state may fan out to.
    pub max_map_items: Option<usize>,
    /// Seconds a run may live.
    pub max_run_seconds: Option<u64>,
}

/// The resolved `[flows]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowsConfig {
    pub lease_secs: u64,
    pub action_hosts: Vec<String>,
    pub max_transitions: u64,
    pub max_state_bytes: usize,
    pub max_map_items: usize,
    pub max_run_seconds: u64,
}

/// Default lease of a run, in seconds.
pub const DEFAULT_RUN_LEASE_SECS: u64 = 10;

impl FlowsConfig {
    fn resolve(file: Option<FlowsFileConfig>) -> Result<Self, ConfigError> {
        let file = file.unwrap_or_default();
        let defaults = lattice_flows::Limits::default();
        let at_least_one = |key, v: Option<u64>, default: u64| match v {
            Some(0) => Err(ConfigError::Invalid {
                key,
                message: "must be at least 1".into(),
            }),
            other => Ok(other.unwrap_or(default)),
        };
        Ok(Self {
            lease_secs: at_least_one("flows.lease_secs", file.lease_secs, DEFAULT_RUN_LEASE_SECS)?,
            action_hosts: file.action_hosts.unwrap_or_default(),
            max_transitions: at_least_one(
                "flows.max_transitions",
                file.max_transitions,
                defaults.max_transitions,
            )?,
            max_state_bytes: at_least_one(
                "flows.max_state_bytes",
                file.max_state_bytes.map(|v| v as u64),
                defaults.max_state_bytes as u64,
            )? as usize,
            max_map_items: at_least_one(
                "flows.max_map_items",
                file.max_map_items.map(|v| v as u64),
                defaults.max_map_items as u64,
            )? as usize,
            max_run_seconds: at_least_one(
                "flows.max_run_seconds",
                file.max_run_seconds,
                defaults.max_lifetime_seconds,
            )?,
        })
    }

    /// The run limits these settings give.
    pub fn limits(&self) -> lattice_flows::Limits {
        lattice_flows::Limits {
            max_transitions: self.max_transitions,
            max_state_bytes: self.max_state_bytes,
            max_map_items: self.max_map_items,
            max_lifetime_seconds: self.max_run_seconds,
            ..lattice_flows::Limits::default()
        }
    }
}

/// The `[search]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchFileConfig {
    /// `tantivy` or `postgres`.
    pub engine: Option<SearchEngineKind>,
    /// Directory of the tantivy engine's indexes.
    pub dir: Option<PathBuf>,
    /// Seconds a deleted index stays restorable.
    pub deleted_index_grace_secs: Option<u64>,
    /// Queries (and scrolls, subject lookups) per minute per identity.
    pub queries_per_minute: Option<u32>,
    /// Ingest and delete requests per minute per identity.
    pub writes_per_minute: Option<u32>,
}

/// Which search engine holds the entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchEngineKind {
    /// Embedded, in files under the data directory: one service replica.
    Tantivy,
    /// Tables in the store's PostgreSQL database: any number of replicas.
    Postgres,
}

/// Default grace period of a deleted search index (7 days).
pub const DEFAULT_DELETED_INDEX_GRACE_SECS: u64 = 7 * 24 * 3600;
/// Default queries per minute per identity.
pub const DEFAULT_SEARCH_QUERIES_PER_MINUTE: u32 = 3_000;
/// Default ingest and delete requests per minute per identity.
pub const DEFAULT_SEARCH_WRITES_PER_MINUTE: u32 = 600;

/// The resolved `[search]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchConfig {
    /// `None`: PostgreSQL when the store is PostgreSQL, else tantivy
    /// (decided when the service opens, so a changed `database_url` counts).
    pub engine: Option<SearchEngineKind>,
    /// Where the tantivy engine keeps its files.
    pub dir: PathBuf,
    pub deleted_index_grace_secs: u64,
    pub queries_per_minute: u32,
    pub writes_per_minute: u32,
}

impl SearchConfig {
    /// The settings of `file` over the defaults (tantivy's files in
    /// `DATA_DIR/search`).
    fn resolve(
        file: Option<SearchFileConfig>,
        database_url: &str,
        data_dir: &Path,
    ) -> Result<Self, ConfigError> {
        let file = file.unwrap_or_default();
        let store_is_postgres = !database_url.starts_with("sqlite:");
        let engine = file.engine;
        if engine == Some(SearchEngineKind::Postgres) && !store_is_postgres {
            return Err(ConfigError::Invalid {
                key: "search.engine",
                message: "the postgres engine keeps its tables in the store's database; it needs database_url = postgres://...".into(),
            });
        }
        let per_minute = |key, value: Option<u32>, default| match value {
            Some(0) => Err(ConfigError::Invalid {
                key,
                message: "must be at least 1".into(),
            }),
            other => Ok(other.unwrap_or(default)),
        };
        Ok(Self {
            engine,
            dir: file.dir.unwrap_or_else(|| data_dir.join("search")),
            deleted_index_grace_secs: file
                .deleted_index_grace_secs
                .unwrap_or(DEFAULT_DELETED_INDEX_GRACE_SECS),
            queries_per_minute: per_minute(
                "search.queries_per_minute",
                file.queries_per_minute,
                DEFAULT_SEARCH_QUERIES_PER_MINUTE,
            )?,
            writes_per_minute: per_minute(
                "search.writes_per_minute",
                file.writes_per_minute,
                DEFAULT_SEARCH_WRITES_PER_MINUTE,
            )?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcFileConfig {
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

/// A configured OpenID Connect provider.
#[derive(Clone, Debug)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
}

/// The resolved configuration the service runs with.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub listen: SocketAddr,
    pub public_url: url::Url,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub log_format: LogFormat,
    pub max_body_bytes: usize,
    pub access_token_ttl: i64,
    pub refresh_token_ttl: i64,
    pub amqp_url: Option<String>,
    pub default_walltime: u32,
    pub max_batch_tasks: usize,
    pub max_result_bytes: usize,
    pub oidc: Option<OidcConfig>,
    /// Serve HTTPS with these files (`None`: plain HTTP).
    pub tls: Option<TlsFiles>,
    /// The config file's `ca_file` (the binary installs the process's trust
    /// from it when no flag or variable named one).
    pub ca_file: Option<PathBuf>,
    pub search: SearchConfig,
    pub flows: FlowsConfig,
    pub timers: TimersConfig,
    pub notify: NotifyConfig,
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl ServiceConfig {
    /// Reads the file named by `--config` (if any) and merges.
    pub fn load(args: ServiceArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                parse_file(path, &text)?
            }
            None => FileConfig::default(),
        };
        Self::from_layers(args, file, default_data_dir())
    }

    /// Merges flags/env over the file over defaults. Pure, for tests.
    pub fn from_layers(
        args: ServiceArgs,
        file: FileConfig,
        default_data_dir: PathBuf,
    ) -> Result<Self, ConfigError> {
        let notify = NotifyConfig::resolve(&args, file.notify)?;
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => {
                return Err(ConfigError::Invalid {
                    key: "tls_cert",
                    message: "set both tls_cert and tls_key, or neither".into(),
                })
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = match args.public_url.or(file.public_url) {
            Some(url) => url,
            None => url::Url::parse(&format!("{scheme}://{listen}")).map_err(|e| {
                ConfigError::Invalid {
                    key: "public_url",
                    message: e.to_string(),
                }
            })?,
        };
        let data_dir = args.data_dir.or(file.data_dir).unwrap_or(default_data_dir);
        let database_url = args
            .database_url
            .or(file.database_url)
            .unwrap_or_else(|| crate::store::sqlite_url_in(&data_dir));
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                key: "database_url",
                message: "expected sqlite://PATH or postgres://...".into(),
            });
        }
        let max_body_bytes = args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "max_body_bytes",
                message: format!("{max_body_bytes} is too small; use at least 1024"),
            });
        }
        let access_token_ttl = positive(
            "access_token_ttl",
            args.access_token_ttl.or(file.access_token_ttl),
            DEFAULT_ACCESS_TOKEN_TTL_SECS,
        )?;
        let refresh_token_ttl = positive(
            "refresh_token_ttl",
            args.refresh_token_ttl.or(file.refresh_token_ttl),
            DEFAULT_REFRESH_TOKEN_TTL_SECS,
        )?;
        let amqp_url = args.amqp_url.or(file.amqp_url);
        if let Some(url) = &amqp_url {
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                return Err(ConfigError::Invalid {
                    key: "amqp_url",
                    message: "expected amqp://USER:PASS@HOST:PORT/VHOST".into(),
                });
            }
        }
        let default_walltime = args
            .default_walltime
            .or(file.default_walltime)
            .unwrap_or(DEFAULT_WALLTIME_SECS);
        if default_walltime == 0 {
            return Err(ConfigError::Invalid {
                key: "default_walltime",
                message: "must be at least 1 second".into(),
            });
        }
        let max_batch_tasks = args
            .max_batch_tasks
            .or(file.max_batch_tasks)
            .unwrap_or(DEFAULT_MAX_BATCH_TASKS)
            .max(1);
        let max_result_bytes = args
            .max_result_bytes
            .or(file.max_result_bytes)
            .unwrap_or(DEFAULT_MAX_RESULT_BYTES);
        let file_oidc = file.oidc.unwrap_or_default();
        let issuer = args.oidc_issuer.or(file_oidc.issuer);
        let client_id = args.oidc_client_id.or(file_oidc.client_id);
        let client_secret = args.oidc_client_secret.or(file_oidc.client_secret);
        let oidc = match (issuer, client_id, client_secret) {
            (None, None, None) => None,
            (Some(issuer), Some(client_id), Some(client_secret)) => {
                url::Url::parse(&issuer).map_err(|e| ConfigError::Invalid {
                    key: "oidc.issuer",
                    message: e.to_string(),
                })?;
                Some(OidcConfig {
                    issuer,
                    client_id,
                    client_secret,
                })
            }
            _ => {
                return Err(ConfigError::Invalid {
                    key: "oidc",
                    message: "set all of issuer, client_id and client_secret, or none".into(),
                })
            }
        };
        let search = SearchConfig::resolve(file.search, &database_url, &data_dir)?;
        let flows = FlowsConfig::resolve(file.flows)?;
        let timers = TimersConfig::resolve(file.timers)?;
        Ok(Self {
            listen,
            public_url,
            data_dir,
            database_url,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            max_body_bytes,
            access_token_ttl,
            refresh_token_ttl,
            amqp_url,
            default_walltime,
            max_batch_tasks,
            max_result_bytes,
            oidc,
            tls,
            ca_file: file.ca_file,
            search,
            flows,
            timers,
            notify,
        })
    }

    /// A configuration for tests and `lattice dev`: SQLite in `data_dir`.
    pub fn for_data_dir(data_dir: &Path) -> Self {
        Self::from_layers(
            ServiceArgs {
                data_dir: Some(data_dir.to_owned()),
                ..Default::default()
            },
            FileConfig::default(),
            data_dir.to_owned(),
        )
        .expect("defaults are valid")
    }
}

fn positive(key: &'static str, value: Option<i64>, default: i64) -> Result<i64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v > 0 => Ok(v),
        Some(v) => Err(ConfigError::Invalid {
            key,
            message: format!("{v} must be a positive number of seconds"),
        }),
    }
}

/// Parses the TOML file (pure, for tests).
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// `~/.local/share/lattice` (or the platform's equivalent).
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("lattice")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileConfig {
        parse_file(Path::new("lattice.toml"), text).unwrap()
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let args = ServiceArgs {
            listen: Some("127.0.0.1:9000".parse().unwrap()),
            ..Default::default()
        };
        let config = ServiceConfig::from_layers(
            args,
            file("listen = \"127.0.0.1:8000\"\nmax_body_bytes = 2048\n"),
            PathBuf::from("/data"),
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.max_body_bytes, 2048);
        assert_eq!(config.database_url, "sqlite:///data/lattice.db");
        assert_eq!(config.public_url.as_str(), "http://127.0.0.1:9000/");
        assert_eq!(config.access_token_ttl, DEFAULT_ACCESS_TOKEN_TTL_SECS);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = parse_file(Path::new("x.toml"), "lisen = \"1\"").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = ServiceConfig::from_layers(
            ServiceArgs::default(),
            file("database_url = \"mysql://x\""),
            PathBuf::from("/d"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("database_url"), "{err}");
        let err = ServiceConfig::from_layers(
            ServiceArgs::default(),
            file("[oidc]\nissuer = \"http://idp\"\n"),
            PathBuf::from("/d"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("oidc"), "{err}");
        let err = ServiceConfig::from_layers(
            ServiceArgs {
                access_token_ttl: Some(0),
                ..Default::default()
            },
            FileConfig::default(),
            PathBuf::from("/d"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("access_token_ttl"), "{err}");
    }

    #[test]
    fn search_settings_default_and_name_their_keys() {
        let sqlite = ServiceConfig::from_layers(
            ServiceArgs::default(),
            FileConfig::default(),
            PathBuf::from("/d"),
        )
        .unwrap();
        assert_eq!(sqlite.search.engine, None, "follows the store");
        assert_eq!(sqlite.search.dir, PathBuf::from("/d/search"));
        assert_eq!(
            sqlite.search.deleted_index_grace_secs,
            DEFAULT_DELETED_INDEX_GRACE_SECS
        );
        let named = ServiceConfig::from_layers(
            ServiceArgs::default(),
            file("database_url = \"postgres://db/x\"\n[search]\nengine = \"tantivy\"\ndeleted_index_grace_secs = 60\n"),
            PathBuf::from("/d"),
        )
        .unwrap();
        assert_eq!(named.search.engine, Some(SearchEngineKind::Tantivy));
        assert_eq!(named.search.deleted_index_grace_secs, 60);
        let err = ServiceConfig::from_layers(
            ServiceArgs::default(),
            file("[search]\nengine = \"postgres\"\n"),
            PathBuf::from("/d"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("search.engine"), "{err}");
    }

    #[test]
    fn oidc_section_is_complete_or_absent() {
        let config = ServiceConfig::from_layers(
            ServiceArgs {
                oidc_client_secret: Some("from-env".into()),
                ..Default::default()
            },
            file("[oidc]\nissuer = \"http://127.0.0.1:3000\"\nclient_id = \"lattice\"\nclient_secret = \"file\"\n"),
            PathBuf::from("/d"),
        )
        .unwrap();
        let oidc = config.oidc.unwrap();
        assert_eq!(oidc.client_secret, "from-env");
        assert_eq!(oidc.client_id, "lattice");
    }

    #[test]
    fn notify_settings_default_to_no_email_and_name_their_keys() {
        let config = ServiceConfig::from_layers(
            ServiceArgs::default(),
            FileConfig::default(),
            PathBuf::from("/d"),
        )
        .unwrap();
        assert_eq!(config.notify.smtp_url, None);
        assert!(!config.notify.allow_private_webhooks);
        let config = ServiceConfig::from_layers(
            ServiceArgs {
                smtp_url: Some("smtps://u:p@mail.example.org".into()),
                ..Default::default()
            },
            file("[notify]\nsmtp_url = \"smtp://127.0.0.1:2525\"\nmail_from = \"Lab <lab@example.org>\"\nallow_private_webhooks = true\n"),
            PathBuf::from("/d"),
        )
        .unwrap();
        assert_eq!(
            config.notify.smtp_url.as_deref(),
            Some("smtps://u:p@mail.example.org")
        );
        assert_eq!(config.notify.mail_from, "Lab <lab@example.org>");
        assert!(config.notify.allow_private_webhooks);
        for (text, key) in [
            ("[notify]\nsmtp_url = \"http://mail\"\n", "notify.smtp_url"),
            ("[notify]\nmail_from = \"nobody\"\n", "notify.mail_from"),
            (
                "[notify]\nwebhook_max_attempts = 0\n",
                "notify.webhook_max_attempts",
            ),
        ] {
            let err =
                ServiceConfig::from_layers(ServiceArgs::default(), file(text), PathBuf::from("/d"))
                    .unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }
}
