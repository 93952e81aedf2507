//! The `[provider]` and `[strategy]` tables of an endpoint's config file:
//! typed, `deny_unknown_fields`, defaults in one place, and an annotated
//! rendering that explains every option (`lattice endpoint configure
//! --provider KIND` writes it).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kubernetes::KubernetesConfig;
use crate::local::LocalConfig;
use crate::lsf::LsfConfig;
use crate::pbs::PbsConfig;
use crate::slurm::SlurmConfig;

/// `[provider]`: which scheduler starts worker blocks, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProviderConfig {
    Local(LocalConfig),
    Slurm(SlurmConfig),
    Pbs(PbsConfig),
    Lsf(LsfConfig),
    Kubernetes(KubernetesConfig),
}

/// The provider kinds, as written in `type = "..."`.
pub const PROVIDER_KINDS: [&str; 5] = ["local", "slurm", "pbs", "lsf", "kubernetes"];

impl ProviderConfig {
    /// The default configuration of a kind (`slurm`, ...).
    pub fn template(kind: &str) -> Result<Self, String> {
        Ok(match kind {
            "local" => ProviderConfig::Local(LocalConfig::default()),
            "slurm" => ProviderConfig::Slurm(SlurmConfig::default()),
            "pbs" => ProviderConfig::Pbs(PbsConfig::default()),
            "lsf" => ProviderConfig::Lsf(LsfConfig::default()),
            "kubernetes" => ProviderConfig::Kubernetes(KubernetesConfig::default()),
            other => {
                return Err(format!(
                    "unknown provider `{other}`: use one of {}",
                    PROVIDER_KINDS.join(", ")
                ))
            }
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Local(_) => "local",
            ProviderConfig::Slurm(_) => "slurm",
            ProviderConfig::Pbs(_) => "pbs",
            ProviderConfig::Lsf(_) => "lsf",
            ProviderConfig::Kubernetes(_) => "kubernetes",
        }
    }

    /// How long one block may run (local blocks: until cancelled).
    pub fn walltime(&self) -> Duration {
        let text = match self {
            ProviderConfig::Local(_) => return Duration::from_secs(365 * 86_400),
            ProviderConfig::Slurm(c) => &c.walltime,
            ProviderConfig::Pbs(c) => &c.walltime,
            ProviderConfig::Lsf(c) => &c.walltime,
            ProviderConfig::Kubernetes(_) => return Duration::from_secs(365 * 86_400),
        };
        crate::parse_walltime(text).unwrap_or(Duration::from_secs(3600))
    }

    pub fn worker_init(&self) -> &[String] {
        match self {
            ProviderConfig::Local(c) => &c.worker_init,
            ProviderConfig::Slurm(c) => &c.worker_init,
            ProviderConfig::Pbs(c) => &c.worker_init,
            ProviderConfig::Lsf(c) => &c.worker_init,
            ProviderConfig::Kubernetes(c) => &c.worker_init,
        }
    }

    /// Checks values; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        let walltime = match self {
            ProviderConfig::Slurm(c) => Some(&c.walltime),
            ProviderConfig::Pbs(c) => Some(&c.walltime),
            ProviderConfig::Lsf(c) => Some(&c.walltime),
            ProviderConfig::Local(_) | ProviderConfig::Kubernetes(_) => None,
        };
        if let Some(walltime) = walltime {
            crate::parse_walltime(walltime).map_err(|e| format!("provider.{e}"))?;
        }
        if let ProviderConfig::Kubernetes(k) = self {
            if k.image.trim().is_empty() {
                return Err("provider.image: the worker image is required".into());
            }
        }
        Ok(())
    }

    /// The `[provider]` table with a comment for every option; unset
    /// optional ones are shown commented out with an example.
    pub fn render(&self) -> String {
        let mut out = Render::default();
        out.line("# Where worker blocks run. Each block is one allocation (a batch job, a");
        out.line("# set of pods, a group of local processes) whose nodes each start");
        out.line("# `workers_per_node` `lattice worker` processes that connect back to");
        out.line("# this agent's dispatcher; the [strategy] table decides how many.");
        out.line("[provider]");
        out.comment(
            &format!("One of: {}.", PROVIDER_KINDS.join(", ")),
            "type",
            Some(quoted(self.kind())),
            "",
        );
        match self {
            ProviderConfig::Local(c) => c.render(&mut out),
            ProviderConfig::Slurm(c) => c.render(&mut out),
            ProviderConfig::Pbs(c) => c.render(&mut out),
            ProviderConfig::Lsf(c) => c.render(&mut out),
            ProviderConfig::Kubernetes(c) => c.render(&mut out),
        }
        out.text
    }
}

/// Builds the provider a config describes; `block_dir` is where scripts and
/// logs go unless the config names a directory. Reads the Kubernetes token
/// and CA files (blocking; call it at startup or from `spawn_blocking`).
pub fn build_provider(
    config: &ProviderConfig,
    block_dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn crate::Provider>, crate::ProviderError> {
    use std::sync::Arc;
    config.check().map_err(crate::ProviderError::Config)?;
    Ok(match config {
        ProviderConfig::Local(c) => {
            Arc::new(crate::local::LocalProvider::new(c.clone(), block_dir))
        }
        ProviderConfig::Slurm(c) => {
            Arc::new(crate::slurm::SlurmProvider::new(c.clone(), block_dir))
        }
        ProviderConfig::Pbs(c) => Arc::new(crate::pbs::PbsProvider::new(c.clone(), block_dir)),
        ProviderConfig::Lsf(c) => Arc::new(crate::lsf::LsfProvider::new(c.clone(), block_dir)),
        ProviderConfig::Kubernetes(c) => {
            Arc::new(crate::kubernetes::KubernetesProvider::new(c.clone())?)
        }
    })
}

/// `[strategy]`: how many blocks, of what size, for how long idle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategyConfig {
    /// Blocks submitted when the agent starts.
    pub init_blocks: u32,
    /// Blocks kept even when idle.
    pub min_blocks: u32,
    /// Never more blocks than this (pending ones count).
    pub max_blocks: u32,
    pub nodes_per_block: u32,
    pub workers_per_node: u32,
    /// A block with no task for this long is cancelled (down to `min_blocks`).
    pub max_idletime_secs: u64,
    /// How often the scheduler is asked for block states and the decision is made.
    pub poll_interval_secs: u64,
}

impl Default for StrategyConfig {
    fn default() -> Self {
        Self {
            init_blocks: 0,
            min_blocks: 0,
            max_blocks: 1,
            nodes_per_block: 1,
            workers_per_node: 1,
            max_idletime_secs: 120,
            poll_interval_secs: 5,
        }
    }
}

impl StrategyConfig {
    pub fn max_idletime(&self) -> Duration {
        Duration::from_secs(self.max_idletime_secs)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_secs.max(1))
    }

    pub fn check(&self) -> Result<(), String> {
        if self.max_blocks == 0 {
            return Err("strategy.max_blocks must be at least 1".into());
        }
        if self.min_blocks > self.max_blocks {
            return Err(format!(
                "strategy.min_blocks ({}) exceeds strategy.max_blocks ({})",
                self.min_blocks, self.max_blocks
            ));
        }
        if self.init_blocks > self.max_blocks {
            return Err(format!(
                "strategy.init_blocks ({}) exceeds strategy.max_blocks ({})",
                self.init_blocks, self.max_blocks
            ));
        }
        if self.nodes_per_block == 0 {
            return Err("strategy.nodes_per_block must be at least 1".into());
        }
        if self.workers_per_node == 0 {
            return Err("strategy.workers_per_node must be at least 1".into());
        }
        Ok(())
    }

    pub fn render(&self) -> String {
        let mut out = Render::default();
        out.line("# How many blocks run. Blocks are added while tasks wait and no worker");
        out.line("# slot is free, and cancelled after `max_idletime_secs` without tasks.");
        out.line("[strategy]");
        let n = |v: u32| Some(v.to_string());
        out.comment(
            "Blocks submitted when the agent starts.",
            "init_blocks",
            n(self.init_blocks),
            "",
        );
        out.comment(
            "Blocks kept even when idle (0: give every node back when there is no work).",
            "min_blocks",
            n(self.min_blocks),
            "",
        );
        out.comment(
            "Never more blocks than this, pending ones included.",
            "max_blocks",
            n(self.max_blocks),
            "",
        );
        out.comment(
            "Nodes in each block (`--nodes` of the batch job, pods of a Kubernetes block).",
            "nodes_per_block",
            n(self.nodes_per_block),
            "",
        );
        out.comment(
            "Worker processes started on each node; each runs `worker_capacity` tasks at once.",
            "workers_per_node",
            n(self.workers_per_node),
            "",
        );
        out.comment(
            "Seconds a block may sit without tasks before it is cancelled.",
            "max_idletime_secs",
            Some(self.max_idletime_secs.to_string()),
            "",
        );
        out.comment(
            "Seconds between asking the scheduler for block states (and deciding).",
            "poll_interval_secs",
            Some(self.poll_interval_secs.to_string()),
            "",
        );
        out.text
    }
}

/// A TOML string literal.
pub(crate) fn quoted(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// A TOML array of strings on one line.
pub(crate) fn string_list(values: &[String]) -> String {
    toml::Value::Array(
        values
            .iter()
            .map(|v| toml::Value::String(v.clone()))
            .collect(),
    )
    .to_string()
}

/// Builds annotated TOML: every key preceded by its explanation.
#[derive(Default)]
pub(crate) struct Render {
    pub(crate) text: String,
}

impl Render {
    pub(crate) fn line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
    }

    /// `# explanation` then `key = value`, or `# key = example` when unset.
    pub(crate) fn comment(
        &mut self,
        explanation: &str,
        key: &str,
        value: Option<String>,
        example: &str,
    ) {
        self.text.push('\n');
        for line in explanation.lines() {
            self.text.push_str("# ");
            self.text.push_str(line);
            self.text.push('\n');
        }
        match value {
            Some(value) => self.text.push_str(&format!("{key} = {value}\n")),
            None => self.text.push_str(&format!("# {key} = {example}\n")),
        }
    }

    pub(crate) fn opt_string(
        &mut self,
        explanation: &str,
        key: &str,
        value: &Option<String>,
        example: &str,
    ) {
        self.comment(explanation, key, value.as_deref().map(quoted), example);
    }

    pub(crate) fn opt_path(
        &mut self,
        explanation: &str,
        key: &str,
        value: &Option<PathBuf>,
        example: &str,
    ) {
        self.comment(
            explanation,
            key,
            value.as_ref().map(|p| quoted(&p.display().to_string())),
            example,
        );
    }

    pub(crate) fn list(&mut self, explanation: &str, key: &str, values: &[String], example: &str) {
        let value = (!values.is_empty()).then(|| string_list(values));
        self.comment(explanation, key, value, example);
    }
}

pub(crate) fn default_walltime() -> String {
    "01:00:00".to_owned()
}

pub(crate) fn default_command_timeout() -> u64 {
    60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct File {
        provider: ProviderConfig,
        #[serde(default)]
        strategy: StrategyConfig,
    }

    #[test]
    fn every_template_round_trips_through_its_rendering() {
        for kind in PROVIDER_KINDS {
            let mut provider = ProviderConfig::template(kind).unwrap();
            if let ProviderConfig::Kubernetes(k) = &mut provider {
                k.image = "ghcr.io/example/lattice:1".into();
            }
            let strategy = StrategyConfig::default();
            let text = format!("{}\n{}", provider.render(), strategy.render());
            let file: File =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{kind}: {e}\n{text}"));
            assert_eq!(file.provider, provider, "{kind}");
            assert_eq!(file.strategy, strategy);
        }
    }

    #[test]
    fn unknown_keys_and_kinds_are_refused_with_the_key() {
        let err = toml::from_str::<File>("[provider]\ntype = \"slurm\"\npartiton = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("partiton"), "{err}");
        let err = toml::from_str::<File>("[provider]\ntype = \"condor\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("condor"), "{err}");
        let err =
            toml::from_str::<File>("[provider]\ntype = \"local\"\n[strategy]\nmax_block = 2\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("max_block"), "{err}");
    }

    #[test]
    fn strategy_limits_are_checked() {
        let mut s = StrategyConfig {
            min_blocks: 3,
            max_blocks: 2,
            ..StrategyConfig::default()
        };
        assert!(s.check().unwrap_err().contains("min_blocks"));
        s.min_blocks = 0;
        s.workers_per_node = 0;
        assert!(s.check().unwrap_err().contains("workers_per_node"));
        let slurm = ProviderConfig::Slurm(SlurmConfig {
            walltime: "1:99".into(),
            ..SlurmConfig::default()
        });
        assert!(slurm.check().unwrap_err().contains("provider.walltime"));
    }
}
