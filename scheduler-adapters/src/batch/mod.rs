//! The one core of the batch-scheduler providers (Slurm, PBS, LSF): a
//! generated job script written to the script dir and submitted, the job id
//! read from the submit command's output, the states of many jobs from one
//! query (then the scheduler's history for the jobs it no longer lists),
//! each job's worker_init report added to its failure, and cancelling.
//!
//! This module owns that flow and its error handling; everything that
//! differs between schedulers is a [`BatchDialect`] value (in `slurm.rs`,
//! `pbs.rs`, `lsf.rs`), and nothing here may name a scheduler, its commands
//! or its words. Commands run through `command.rs` (`tokio::process`, with a
//! timeout), never on an async thread's time; a state is only ever what the
//! scheduler said.

mod dialect;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

pub(crate) use dialect::{
    BatchDialect, Cancel, Directive, Ids, JobRecord, Launch, Query, QueryFailure, ReasonStyle,
    Reply, ScriptVia, StateClass, Submit, WalltimeFormat,
};

use crate::command::{message_of, write_script, Invocation, Output};
use crate::{
    describe_init_report, format_walltime, shell_quote, worker_init_script, BlockSpec, BlockState,
    InitReport, JobId, Provider, ProviderError,
};

/// What a provider's config gives the core.
#[derive(Clone, Debug, Default)]
pub(crate) struct BatchSettings {
    /// Values of the dialect's optional directives and of placeholders in
    /// its templates, by name (`partition`, `queue`, `select_options`); a
    /// setting without a value leaves out the directives that need it.
    pub(crate) values: Vec<(&'static str, Option<String>)>,
    /// Extra header lines, verbatim.
    pub(crate) scheduler_options: Vec<String>,
    /// For [`Launch::PerNode`]: runs its argument once on every node.
    pub(crate) launcher: Option<String>,
    pub(crate) script_dir: Option<PathBuf>,
    pub(crate) command_timeout_secs: u64,
}

/// A provider for one batch scheduler, driven by its dialect.
#[derive(Debug)]
pub(crate) struct BatchProvider {
    dialect: &'static BatchDialect,
    settings: BatchSettings,
    script_dir: PathBuf,
    /// Prefix of the scheduler's commands (tests, or a cluster's odd install).
    bin_dir: Option<PathBuf>,
    timeout: Duration,
}

impl BatchProvider {
    /// `default_script_dir` is used unless the settings name one.
    pub(crate) fn new(
        dialect: &'static BatchDialect,
        settings: BatchSettings,
        default_script_dir: &Path,
    ) -> Self {
        let script_dir = settings
            .script_dir
            .clone()
            .unwrap_or_else(|| default_script_dir.to_owned());
        let timeout = Duration::from_secs(settings.command_timeout_secs.max(1));
        Self {
            dialect,
            settings,
            script_dir,
            bin_dir: None,
            timeout,
        }
    }

    /// Runs the scheduler's commands from this directory instead of PATH.
    pub(crate) fn with_bin_dir(mut self, dir: PathBuf) -> Self {
        self.bin_dir = Some(dir);
        self
    }

    fn command(&self, name: &str) -> Invocation {
        let program = match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        };
        Invocation::new(program, self.timeout)
    }

    /// The value of a `{name}` in the dialect's templates for this block.
    fn placeholder(&self, spec: &BlockSpec, name: &str) -> Option<String> {
        let d = self.dialect;
        Some(match name {
            "block_id" => spec.block_id.clone(),
            "nodes" => spec.nodes.to_string(),
            "workers_per_node" => spec.workers_per_node.to_string(),
            "tasks" => (spec.nodes * spec.workers_per_node).to_string(),
            "walltime" => match d.walltime {
                WalltimeFormat::Clock => format_walltime(spec.walltime),
                WalltimeFormat::HoursMinutes => {
                    let minutes = spec.walltime.as_secs().div_ceil(60).max(1);
                    format!("{}:{:02}", minutes / 60, minutes % 60)
                }
            },
            "output" => {
                let name = dialect::fill(d.output_file, |n| self.placeholder(spec, n));
                self.script_dir.join(name).display().to_string()
            }
            "worker" => spec.worker.shell_line(&spec.block_id),
            _ => self.setting(name)?.to_owned(),
        })
    }

    fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .values
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The job script of a block. Fails only when the block needs a
    /// `launcher` setting it does not have.
    pub(crate) fn render_script(&self, spec: &BlockSpec) -> Result<String, ProviderError> {
        let d = self.dialect;
        let fill = |template: &str| dialect::fill(template, |n| self.placeholder(spec, n));
        let mut s = String::from("#!/bin/bash\n");
        for directive in d.directives {
            if directive.only_if.is_some_and(|n| self.setting(n).is_none()) {
                continue;
            }
            s.push_str(&format!(
                "{} {}\n",
                d.directive_prefix,
                fill(directive.template)
            ));
        }
        for line in &self.settings.scheduler_options {
            s.push_str(line);
            s.push('\n');
        }
        s.push('\n');
        s.push_str(d.preamble);
        s.push_str(&format!(
            "export LATTICE_BLOCK_ID={}\n\n",
            shell_quote(&spec.block_id)
        ));
        s.push_str(&worker_init_script(
            &spec.worker_init,
            InitReport::File(&batch_init_report(&self.script_dir, d.job_id_var)),
        ));
        s.push('\n');
        let launch = match d.launch {
            Launch::Tasks(template) => fill(template),
            Launch::PerNode => node_launch(spec, self.settings.launcher.as_deref())?,
        };
        s.push_str(&format!(
            "# {} worker(s) on each of {} node(s)\n{launch}\n",
            spec.workers_per_node, spec.nodes
        ));
        Ok(s)
    }

    /// Adds the states of the jobs asked for among `replies` to `states`.
    fn record(
        &self,
        asked: &[JobId],
        states: &mut HashMap<JobId, BlockState>,
        replies: Vec<Reply>,
    ) {
        for reply in replies {
            let (id, state) = match reply {
                Reply::Job(job) => (job.id.clone(), self.dialect.block_state(&job)),
                Reply::Error { id, message } => (id, BlockState::Unknown { message }),
            };
            if asked.contains(&id) {
                states.insert(id, state);
            }
        }
    }

    /// Runs `query` about `jobs` (as many commands as its [`Ids`] need).
    /// `Err` carries the failed command's error.
    async fn ask(&self, query: &Query, jobs: &[JobId]) -> Result<Vec<Reply>, ProviderError> {
        let base = || self.command(query.program).args(query.args.iter().copied());
        let calls: Vec<Invocation> = match query.ids {
            Ids::Joined(separator) => vec![base().arg(jobs.join(separator))],
            Ids::Separate => vec![base().args(jobs.iter().cloned())],
            Ids::OnePerCall => jobs.iter().map(|job| base().arg(job.clone())).collect(),
        };
        let mut replies = Vec::new();
        for (n, call) in calls.iter().enumerate() {
            let asked = match query.ids {
                Ids::OnePerCall => &jobs[n..=n],
                Ids::Joined(_) | Ids::Separate => jobs,
            };
            let output = call.output().await?;
            let readable = output.success
                || match query.failure {
                    QueryFailure::ReadAnyway => true,
                    QueryFailure::Harmless(words) => only_harmless(&output, words),
                };
            if !readable {
                return Err(call.failed(&output).into());
            }
            match (query.parse)(&output.stdout, asked) {
                Ok(mut more) => replies.append(&mut more),
                Err(_) if !output.success => return Err(call.failed(&output).into()),
                Err(detail) => return Err(call.parse_error(detail).into()),
            }
        }
        Ok(replies)
    }
}

/// Whether every line the command wrote on stderr holds one of `words`.
fn only_harmless(output: &Output, words: &[&str]) -> bool {
    output
        .stderr
        .lines()
        .all(|l| l.trim().is_empty() || words.iter().any(|w| l.contains(w)))
}

/// `impl Provider` for a scheduler's provider, a newtype around
/// [`BatchProvider`]: every call goes to the batch flow.
macro_rules! provider_by_batch {
    ($provider:ty) => {
        #[async_trait::async_trait]
        impl crate::Provider for $provider {
            fn kind(&self) -> &'static str {
                crate::Provider::kind(&self.0)
            }

            async fn submit(
                &self,
                spec: &crate::BlockSpec,
            ) -> Result<crate::JobId, crate::ProviderError> {
                crate::Provider::submit(&self.0, spec).await
            }

            async fn status(
                &self,
                jobs: &[crate::JobId],
            ) -> Result<
                std::collections::HashMap<crate::JobId, crate::BlockState>,
                crate::ProviderError,
            > {
                crate::Provider::status(&self.0, jobs).await
            }

            async fn cancel(&self, jobs: &[crate::JobId]) -> Result<(), crate::ProviderError> {
                crate::Provider::cancel(&self.0, jobs).await
            }
        }
    };
}
pub(crate) use provider_by_batch;

#[async_trait]
impl Provider for BatchProvider {
    fn kind(&self) -> &'static str {
        self.dialect.kind
    }

    async fn submit(&self, spec: &BlockSpec) -> Result<JobId, ProviderError> {
        let submit = &self.dialect.submit;
        let script = self.render_script(spec)?;
        let path = write_script(
            &self.script_dir,
            &format!("lattice-{}.{}", spec.block_id, submit.script_suffix),
            &script,
        )
        .await?;
        let command = self
            .command(submit.program)
            .args(submit.args.iter().copied());
        let command = match submit.script {
            ScriptVia::Path => command.arg(path.display().to_string()),
            ScriptVia::Stdin => command.stdin(script),
        };
        let output = command.output().await?;
        if !output.success {
            return Err(ProviderError::Refused(message_of(&output)));
        }
        let id = (submit.parse_id)(&output.stdout)
            .ok_or_else(|| command.parse_error(format!("no job id in {:?}", output.stdout)))?;
        if !output.stderr.is_empty() {
            tracing::warn!(job_id = %id, "{}: {}", submit.program, output.stderr);
        }
        Ok(id)
    }

    async fn status(&self, jobs: &[JobId]) -> Result<HashMap<JobId, BlockState>, ProviderError> {
        if jobs.is_empty() {
            return Ok(HashMap::new());
        }
        let d = self.dialect;
        let mut states = HashMap::new();
        self.record(jobs, &mut states, self.ask(&d.status, jobs).await?);
        for query in d.history {
            let rest: Vec<JobId> = jobs
                .iter()
                .filter(|j| !states.contains_key(*j))
                .cloned()
                .collect();
            if rest.is_empty() {
                break;
            }
            // The history is a second opinion: when it cannot be had, the
            // jobs are taken for finished, as when it does not know them.
            match self.ask(query, &rest).await {
                Ok(replies) => self.record(&rest, &mut states, replies),
                Err(e) => tracing::debug!("{} unavailable: {e}", query.program),
            }
        }
        for job in jobs {
            states.entry(job.clone()).or_insert(BlockState::Completed);
        }
        add_init_reports(&self.script_dir, &mut states).await;
        Ok(states)
    }

    async fn cancel(&self, jobs: &[JobId]) -> Result<(), ProviderError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let cancel = &self.dialect.cancel;
        let command = self
            .command(cancel.program)
            .args(cancel.args.iter().copied())
            .args(jobs.iter().cloned());
        let output = command.output().await?;
        if !output.success && !only_harmless(&output, cancel.harmless) {
            return Err(command.failed(&output).into());
        }
        Ok(())
    }
}

/// Script lines that start `workers_per_node` workers on every node of the
/// block and wait for them: directly when the block has one node, else
/// through `launcher`, a command prefix that runs its argument once on every
/// node (`{nodes}` is replaced by the node count).
fn node_launch(spec: &BlockSpec, launcher: Option<&str>) -> Result<String, ProviderError> {
    let per_node = format!(
        "for i in $(seq 1 {}); do {} & done; wait",
        spec.workers_per_node,
        spec.worker.shell_line(&spec.block_id)
    );
    match launcher {
        _ if spec.nodes == 1 => Ok(per_node),
        Some(launcher) => Ok(format!(
            "{} /bin/sh -c {}",
            launcher.replace("{nodes}", &spec.nodes.to_string()),
            shell_quote(&per_node)
        )),
        None => Err(ProviderError::Config(format!(
            "blocks of {} nodes need `launcher` in [provider]: a command that runs its argument once on every node of the job",
            spec.nodes
        ))),
    }
}

/// The report file a batch job's worker_init writes in `script_dir`
/// (`lattice-JOBID.worker_init.err`, shared with the login node like the
/// job's output), as a shell word: `job_var` is the scheduler's variable
/// holding the job id (`SLURM_JOB_ID`, `PBS_JOBID`, `LSB_JOBID`).
fn batch_init_report(script_dir: &Path, job_var: &str) -> String {
    format!(
        "{}\"${{{job_var}}}\".worker_init.err",
        shell_quote(&format!("{}/lattice-", script_dir.display()))
    )
}

/// Where [`batch_init_report`] is for a job.
fn batch_init_report_path(script_dir: &Path, job: &str) -> PathBuf {
    script_dir.join(format!("lattice-{job}.worker_init.err"))
}

/// Adds to every failed job's message what its worker_init report says, if
/// the job left one (its worker_init stopped it).
async fn add_init_reports(script_dir: &Path, states: &mut HashMap<JobId, BlockState>) {
    for (job, state) in states.iter_mut() {
        let BlockState::Failed { message } = state else {
            continue;
        };
        if let Ok(text) = tokio::fs::read(batch_init_report_path(script_dir, job)).await {
            let init = describe_init_report(&String::from_utf8_lossy(&text));
            *message = format!("{message}: {init}");
        }
    }
}
