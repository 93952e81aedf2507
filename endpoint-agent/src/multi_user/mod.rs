//! Multi-user mode: one root agent for a whole facility. This module holds
//! the pieces that decide, for each task, whether and as whom it runs:
//! identity mapping ([`mapping`]), the per-user config template and its
//! variable schema ([`template`]), the endpoint policy ([`policy`]), the
//! audit log ([`audit`]) and starting processes under a local account with
//! privileges dropped ([`privdrop`]). [`MultiUser::route`] combines them.
//!
//! It must never run user code as root: every process for a task is started
//! through [`privdrop::run_as`].

pub mod audit;
pub mod mapping;
pub mod policy;
pub mod pool;
pub mod privdrop;
pub mod runner;
pub mod template;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use audit::{AuditLog, AuditRecord};
pub use mapping::{Account, Identity, IdentityMapper, MapperProgram, MappingError, RuleConfig};
pub use policy::Policy;
pub use pool::{PoolSettings, UserPool};
pub use runner::MultiUserRunner;

/// The `[multi_user]` table of an endpoint's `config.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiUserConfig {
    /// Lowest uid a task may run as (system accounts are below it).
    #[serde(default = "default_min_uid")]
    pub min_uid: u32,
    /// A child with no task for this long is stopped.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Ordered mapping rules; the first that matches decides.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// An external mapper used instead of the rules.
    #[serde(default)]
    pub mapper: Option<MapperProgram>,
    /// The per-user config template (TOML with `{{ variable }}` placeholders).
    #[serde(default)]
    pub user_config_template: Option<PathBuf>,
    /// The JSON Schema (documented subset) for the template's variables.
    #[serde(default)]
    pub user_config_schema: Option<PathBuf>,
    /// JSON-lines audit log [default: STATE_DIR/audit.log].
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    #[serde(default = "default_audit_max_bytes")]
    pub audit_max_bytes: u64,
    #[serde(default = "default_audit_keep")]
    pub audit_keep: u32,
    #[serde(default)]
    pub policy: Policy,
    /// Extra environment for the users' agents and their workers (the
    /// environment is otherwise clean), e.g. `SLURM_CONF` for a scheduler
    /// config in a non-default place.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub user_environment: std::collections::BTreeMap<String, String>,
    /// Tasks the root agent takes from the service at once, over all users.
    #[serde(default = "default_max_tasks")]
    pub max_tasks: u32,
}

fn default_min_uid() -> u32 {
    1000
}
fn default_idle_timeout() -> u64 {
    300
}
fn default_audit_max_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_audit_keep() -> u32 {
    5
}
fn default_max_tasks() -> u32 {
    256
}

impl Default for MultiUserConfig {
    fn default() -> Self {
        Self {
            min_uid: default_min_uid(),
            idle_timeout_secs: default_idle_timeout(),
            rules: Vec::new(),
            mapper: None,
            user_config_template: None,
            user_config_schema: None,
            audit_log: None,
            audit_max_bytes: default_audit_max_bytes(),
            audit_keep: default_audit_keep(),
            policy: Policy::default(),
            user_environment: Default::default(),
            max_tasks: default_max_tasks(),
        }
    }
}

impl MultiUserConfig {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// Checks what can be checked without running anything.
    pub fn check(&self) -> Result<(), String> {
        if self.rules.is_empty() && self.mapper.is_none() {
            return Err("[multi_user] needs mapping `rules` or a `mapper`".to_owned());
        }
        IdentityMapper::new(&self.rules, self.mapper.clone(), self.min_uid)
            .map_err(|e| e.to_string())?;
        if self.user_config_schema.is_some() && self.user_config_template.is_none() {
            return Err("[multi_user] user_config_schema needs a user_config_template".to_owned());
        }
        if self.max_tasks == 0 {
            return Err("[multi_user] max_tasks must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// A per-user agent's settings: what the admin's template renders to (a
/// TOML document; every key optional). Unknown keys are refused, so a typo
/// in the template fails the user's tasks with its name instead of being
/// ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAgentConfig {
    /// Local worker processes [default: 1, or 0 with a `[provider]`].
    #[serde(default)]
    pub workers: Option<u32>,
    /// Tasks each worker runs at once [default: 1].
    #[serde(default)]
    pub worker_capacity: Option<u32>,
    #[serde(default)]
    pub default_walltime_secs: Option<u32>,
    /// Where the user's agent listens for its block workers.
    #[serde(default)]
    pub dispatcher_listen: Option<std::net::SocketAddr>,
    /// `HOST:PORT` its block workers dial.
    #[serde(default)]
    pub dispatcher_address: Option<String>,
    /// Worker blocks submitted as the user (`slurm`, `pbs`, ...).
    #[serde(default)]
    pub provider: Option<crate::scheduler::ProviderConfig>,
    #[serde(default)]
    pub strategy: Option<crate::scheduler::StrategyConfig>,
}

impl UserAgentConfig {
    /// Parses a rendered template.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| {
            format!("the per-user config rendered from the admin's template is invalid: {e}")
        })?;
        if config.worker_capacity == Some(0) {
            return Err("the per-user config sets worker_capacity = 0".to_owned());
        }
        Ok(config)
    }
}

impl From<&lattice_protocol::frames::Submitter> for Identity {
    fn from(s: &lattice_protocol::frames::Submitter) -> Self {
        Identity {
            identity_id: s.identity_id.to_string(),
            username: s.username.clone(),
            email: s.email.clone(),
            identity_provider: Some(s.identity_provider.clone()),
        }
    }
}

/// Where one task goes: the account and the rendered per-user config. Tasks
/// with equal keys share a child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub account: Account,
    /// The canonical JSON of the validated variables.
    pub variables: String,
    /// The rendered per-user config (empty without a template).
    pub user_config: String,
}

impl Route {
    /// The child this task belongs to.
    pub fn key(&self) -> (String, String) {
        (self.account.name.clone(), self.variables.clone())
    }
}

/// Everything [`MultiUser::route`] needs, loaded once at start.
#[derive(Debug, Clone)]
pub struct MultiUser {
    mapper: IdentityMapper,
    policy: Policy,
    template: Option<String>,
    schema: serde_json::Value,
}

impl MultiUser {
    /// Compiles the rules and reads the template and schema files. Blocking.
    pub fn load(config: &MultiUserConfig) -> Result<Self, String> {
        config.check()?;
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        let template = config
            .user_config_template
            .as_deref()
            .map(read)
            .transpose()?;
        let schema = match config.user_config_schema.as_deref() {
            Some(p) => {
                serde_json::from_str(&read(p)?).map_err(|e| format!("{}: {e}", p.display()))?
            }
            None => serde_json::json!({"type": "object", "properties": {}}),
        };
        Self::new(config, template, schema)
    }

    pub fn new(
        config: &MultiUserConfig,
        template: Option<String>,
        schema: serde_json::Value,
    ) -> Result<Self, String> {
        let mapper = IdentityMapper::new(&config.rules, config.mapper.clone(), config.min_uid)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            mapper,
            policy: config.policy.clone(),
            template,
            schema,
        })
    }

    /// Decides where a task runs, or the error its task fails with (then
    /// nothing runs). Blocking (passwd lookups, maybe the mapper program).
    pub fn route(
        &self,
        identity: &Identity,
        function_id: &str,
        variables: Option<&serde_json::Value>,
    ) -> Result<Route, String> {
        let route = self.route_with(identity, function_id, variables, mapping::lookup_account)?;
        if self.policy.allowed_groups.is_some() {
            let groups = privdrop::group_names(&route.account)
                .map_err(|e| format!("cannot read the groups of `{}`: {e}", route.account.name))?;
            self.policy.check_groups(&route.account.name, &groups)?;
        }
        Ok(route)
    }

    pub fn route_with(
        &self,
        identity: &Identity,
        function_id: &str,
        variables: Option<&serde_json::Value>,
        lookup: impl Fn(&str) -> Option<Account>,
    ) -> Result<Route, String> {
        self.policy.check(identity, function_id)?;
        let account = self.mapper.map_with(identity, lookup).map_err(|e| {
            format!(
                "no local account for identity {} ({}): {e}",
                identity.identity_id,
                identity.username.escape_debug()
            )
        })?;
        let vars = template::validate(&self.schema, variables).map_err(|e| e.to_string())?;
        let user_config = match &self.template {
            Some(t) => template::render(t, &vars).map_err(|e| e.to_string())?,
            None => String::new(),
        };
        UserAgentConfig::parse(&user_config)?;
        Ok(Route {
            account,
            variables: template::canonical(&vars),
            user_config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lookup(name: &str) -> Option<Account> {
        let uid = match name {
            "alice" => 1001,
            "bob" => 1002,
            _ => return None,
        };
        Some(Account {
            name: name.to_owned(),
            uid,
            gid: uid,
            home: format!("/home/{name}").into(),
            shell: "/bin/bash".into(),
        })
    }

    fn config() -> MultiUserConfig {
        toml::from_str(
            r#"
            min_uid = 1000
            idle_timeout_secs = 60
            [[rules]]
            field = "email"
            match = '(.*)@uni\.edu'
            output = "{0}"
            [policy]
            allowed_identity_providers = ["https://idp.uni.edu"]
            "#,
        )
        .unwrap()
    }

    fn ident(email: &str) -> Identity {
        Identity {
            identity_id: "9f1c".into(),
            username: email.into(),
            email: Some(email.into()),
            identity_provider: Some("https://idp.uni.edu".into()),
        }
    }

    fn multi_user() -> MultiUser {
        MultiUser::new(
            &config(),
            Some(
                "default_walltime_secs = {{ walltime }}\n[provider]\ntype = \"slurm\"\naccount = {{ account }}\n"
                    .into(),
            ),
            json!({
                "properties": {
                    "account": {"type": "string", "default": "default"},
                    "walltime": {"type": "integer", "maximum": 3600, "default": 600}
                }
            }),
        )
        .unwrap()
    }

    #[test]
    fn config_parses_and_checks() {
        let c = config();
        assert_eq!(c.idle_timeout(), Duration::from_secs(60));
        assert_eq!(c.audit_keep, 5);
        assert!(c.check().is_ok());
        assert!(MultiUserConfig::default().check().is_err());
        assert!(toml::from_str::<MultiUserConfig>("bogus = 1").is_err());
    }

    #[test]
    fn endpoint_config_file_round_trips_the_multi_user_table() {
        let mut file = crate::EndpointFileConfig::new("http://127.0.0.1:1");
        file.workers = Some(2);
        let mut settings = config();
        settings.mapper = Some(MapperProgram {
            command: "/usr/local/bin/map-user".into(),
            args: vec!["--site".into()],
            timeout_secs: 3,
        });
        settings.audit_log = Some("/var/log/lattice/audit.log".into());
        file.multi_user = Some(settings);
        let text = file.render("facility");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &text).unwrap();
        let back = crate::EndpointFileConfig::load(&path).unwrap();
        assert_eq!(back, file, "{text}");
        // A bad rule is refused when the file is loaded.
        let bad = text.replace(r"(.*)@uni\.edu", "(.*");
        std::fs::write(&path, bad).unwrap();
        let err = crate::EndpointFileConfig::load(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid mapping rule"), "{err}");
    }

    #[test]
    fn routes_by_identity_and_variables() {
        let m = multi_user();
        let a = m
            .route_with(&ident("alice@uni.edu"), "f", None, lookup)
            .unwrap();
        assert_eq!(a.account.uid, 1001);
        assert_eq!(
            a.user_config,
            "default_walltime_secs = 600\n[provider]\ntype = \"slurm\"\naccount = \"default\"\n"
        );
        let parsed = UserAgentConfig::parse(&a.user_config).unwrap();
        assert_eq!(parsed.default_walltime_secs, Some(600));
        assert_eq!(parsed.provider.unwrap().kind(), "slurm");
        let a2 = m
            .route_with(
                &ident("alice@uni.edu"),
                "f",
                Some(&json!({"account": "p2"})),
                lookup,
            )
            .unwrap();
        assert_ne!(a.key(), a2.key());
        let a3 = m
            .route_with(
                &ident("alice@uni.edu"),
                "f",
                Some(&json!({"walltime": 600})),
                lookup,
            )
            .unwrap();
        assert_eq!(
            a.key(),
            a3.key(),
            "defaults and explicit equal values share a child"
        );
        let b = m
            .route_with(&ident("bob@uni.edu"), "f", None, lookup)
            .unwrap();
        assert_eq!(b.account.name, "bob");
    }

    #[test]
    fn refusals_have_clear_messages() {
        let m = multi_user();
        let err = m
            .route_with(&ident("mallory@evil.org"), "f", None, lookup)
            .unwrap_err();
        assert!(
            err.starts_with("no local account for identity 9f1c"),
            "{err}"
        );
        let err = m
            .route_with(&ident("carol@uni.edu"), "f", None, lookup)
            .unwrap_err();
        assert!(err.contains("`carol` does not exist"), "{err}");
        let err = m
            .route_with(
                &ident("alice@uni.edu"),
                "f",
                Some(&json!({"walltime": 7200})),
                lookup,
            )
            .unwrap_err();
        assert!(err.contains("greater than the maximum of 3600"), "{err}");
        let mut other = ident("alice@uni.edu");
        other.identity_provider = Some("https://other".into());
        assert!(m
            .route_with(&other, "f", None, lookup)
            .unwrap_err()
            .contains("not allowed"));
    }

    #[test]
    fn a_template_that_renders_an_invalid_config_refuses_the_task() {
        let m = MultiUser::new(
            &config(),
            Some("workers = 1\nbogus_key = {{ account }}\n".into()),
            json!({"properties": {"account": {"type": "string", "default": "x"}}}),
        )
        .unwrap();
        let err = m
            .route_with(&ident("alice@uni.edu"), "f", None, lookup)
            .unwrap_err();
        assert!(
            err.contains("per-user config") && err.contains("bogus_key"),
            "{err}"
        );
    }
}
