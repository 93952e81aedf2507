//! What sets one batch scheduler apart from another, as data: a
//! [`BatchDialect`] value says how its job scripts are written, which
//! commands submit, query and cancel jobs and how their output reads, and
//! what its state names mean.
//!
//! This module owns that description and the two pure functions every
//! dialect shares: filling a template ([`fill`]) and turning one job record
//! into a [`BlockState`] ([`BatchDialect::block_state`]). It must not run
//! commands or touch files (that is `batch/mod.rs`), and it names no
//! scheduler: the values live in `slurm.rs`, `pbs.rs` and `lsf.rs`.

use crate::{BlockState, JobId};

/// One batch scheduler, described.
#[derive(Debug)]
pub(crate) struct BatchDialect {
    /// `slurm`: [`crate::Provider::kind`], and the first word of its state
    /// messages (`slurm job TIMEOUT ...`).
    pub(crate) kind: &'static str,
    /// Starts every option line of the script's header (`#SBATCH`).
    pub(crate) directive_prefix: &'static str,
    /// The header's option lines, in order, without the prefix.
    pub(crate) directives: &'static [Directive],
    /// Name of the job's output file in the script dir; may hold the
    /// scheduler's own job id pattern (`lattice-{block_id}.%j.out`).
    pub(crate) output_file: &'static str,
    pub(crate) walltime: WalltimeFormat,
    /// Lines between the header and `export LATTICE_BLOCK_ID=...`.
    pub(crate) preamble: &'static str,
    /// The variable holding the job id inside the job (`SLURM_JOB_ID`),
    /// which names the job's worker_init report.
    pub(crate) job_id_var: &'static str,
    pub(crate) launch: Launch,
    pub(crate) submit: Submit,
    /// The one query for the states of many jobs.
    pub(crate) status: Query,
    /// Asked in turn, each only about the jobs no query before answered
    /// for; a job none answers for is completed (schedulers forget
    /// finished jobs).
    pub(crate) history: &'static [Query],
    pub(crate) cancel: Cancel,
    /// The scheduler's state names (the first word of what it prints) and
    /// what they mean; a name not here is [`BlockState::Unknown`].
    pub(crate) states: &'static [(&'static str, StateClass)],
    /// Reasons (prefixes) that mean a waiting job will never start.
    pub(crate) never_starts: &'static [&'static str],
    /// Reasons (prefixes) that mean a failed or ended job was cancelled.
    pub(crate) cancelled_reasons: &'static [&'static str],
    pub(crate) reason_style: ReasonStyle,
    /// The scheduler's word for an exit status in messages (`status`,
    /// `code`).
    pub(crate) exit_word: &'static str,
    /// The exit status the scheduler gives a job it killed at its walltime.
    pub(crate) walltime_exit_status: Option<i64>,
    /// Exit statuses above this mean "killed by signal (status - this)".
    pub(crate) signal_exit_offset: Option<i64>,
}

/// One option line of a script header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Directive {
    /// `{name}` placeholders are filled from the block (`block_id`,
    /// `output`, `nodes`, `workers_per_node`, `tasks`, `walltime`) and the
    /// provider's settings.
    pub(crate) template: &'static str,
    /// Written only when this setting has a value.
    pub(crate) only_if: Option<&'static str>,
}

impl Directive {
    pub(crate) const fn always(template: &'static str) -> Self {
        Self {
            template,
            only_if: None,
        }
    }

    pub(crate) const fn if_set(setting: &'static str, template: &'static str) -> Self {
        Self {
            template,
            only_if: Some(setting),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WalltimeFormat {
    /// `[D-]HH:MM:SS`.
    Clock,
    /// `H:MM`, rounded up to whole minutes (at least one).
    HoursMinutes,
}

/// How the script starts the workers on every node of the block.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Launch {
    /// The scheduler's own launcher, one task per worker: a template filled
    /// like a [`Directive`], plus `{worker}` (the worker's shell line).
    /// Cannot refuse a block.
    Tasks(&'static str),
    /// The provider's `launcher` setting, once per node, each starting the
    /// node's workers; blocks of more than one node need it.
    PerNode,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Submit {
    pub(crate) program: &'static str,
    pub(crate) args: &'static [&'static str],
    /// How the command gets the script (written to
    /// `lattice-BLOCK.{script_suffix}` in the script dir either way, for the
    /// user to read).
    pub(crate) script: ScriptVia,
    pub(crate) script_suffix: &'static str,
    /// The job id in what the command printed on success.
    pub(crate) parse_id: fn(&str) -> Option<JobId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScriptVia {
    /// The script's path, after the arguments.
    Path,
    Stdin,
}

/// A command that asks about jobs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Query {
    pub(crate) program: &'static str,
    /// Followed by the job ids.
    pub(crate) args: &'static [&'static str],
    pub(crate) ids: Ids,
    /// When a non-zero exit still leaves the output worth reading.
    pub(crate) failure: QueryFailure,
    /// The records in what the command printed; the ids asked are given.
    /// An error is the reason the output cannot be read.
    pub(crate) parse: fn(&str, &[JobId]) -> Result<Vec<Reply>, String>,
}

/// How job ids are passed to a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ids {
    /// One argument, the ids joined by this separator.
    Joined(&'static str),
    /// One argument per id.
    Separate,
    /// One command per id.
    OnePerCall,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueryFailure {
    /// Fine when every line on stderr holds one of these (the scheduler's
    /// complaints about ids it no longer knows).
    Harmless(&'static [&'static str]),
    /// The scheduler exits non-zero whenever one job is unknown and still
    /// answers for all of them: read the output whatever the status.
    ReadAnyway,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Cancel {
    pub(crate) program: &'static str,
    /// The ids follow, one argument each.
    pub(crate) args: &'static [&'static str],
    /// A non-zero exit is fine when every line on stderr holds one of these
    /// (the job had already finished or is forgotten).
    pub(crate) harmless: &'static [&'static str],
}

/// What a query said about one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Job(JobRecord),
    /// The scheduler answered for this job with an error of its own.
    Error {
        id: JobId,
        message: String,
    },
}

/// One job as the scheduler described it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct JobRecord {
    pub(crate) id: JobId,
    /// The state's name; only its first word counts (sacct: `CANCELLED by 0`).
    pub(crate) state: String,
    /// Why it waits or ended, in the scheduler's words (empty: none given).
    pub(crate) reason: String,
    pub(crate) exit_status: Option<i64>,
}

/// What a state name means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StateClass {
    /// Pending, unless its reason is one of [`BatchDialect::never_starts`].
    Waiting,
    Running,
    Completed,
    Cancelled,
    /// Failed: `KIND job WHAT [with EXIT_WORD STATUS]`, then the reason.
    Failed(&'static str),
    /// Finished; its exit status says whether it failed.
    Ended,
}

/// How a reason follows a state message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReasonStyle {
    /// `slurm job FAILED (NonZeroExitCode)`.
    InParentheses,
    /// `pbs job cannot start: Can Never Run: ...`.
    AfterColon,
}

impl ReasonStyle {
    /// The reason as it follows a message; nothing for none (`None` is
    /// Slurm's word for none).
    fn suffix(self, reason: &str) -> String {
        let reason = reason.trim();
        if reason.is_empty() || reason == "None" {
            return String::new();
        }
        match self {
            ReasonStyle::InParentheses => format!(" ({reason})"),
            ReasonStyle::AfterColon => format!(": {reason}"),
        }
    }
}

impl BatchDialect {
    /// The block state of one job record.
    pub(crate) fn block_state(&self, record: &JobRecord) -> BlockState {
        let name = record.state.split_whitespace().next().unwrap_or("");
        let reason = record.reason.trim();
        let failed = |what: &str| BlockState::Failed {
            message: format!(
                "{} job {what}{}",
                self.kind,
                self.reason_style.suffix(reason)
            ),
        };
        let Some(class) = self
            .states
            .iter()
            .find_map(|(n, class)| (*n == name).then_some(*class))
        else {
            return BlockState::Unknown {
                message: format!(
                    "unrecognised {} job state `{name}`{}",
                    self.kind,
                    self.reason_style.suffix(reason)
                ),
            };
        };
        let cancelled = self.cancelled_reasons.iter().any(|r| reason.starts_with(r));
        match class {
            StateClass::Waiting if self.never_starts.iter().any(|r| reason.starts_with(r)) => {
                failed("cannot start")
            }
            StateClass::Waiting => BlockState::Pending,
            StateClass::Running => BlockState::Running,
            StateClass::Completed => BlockState::Completed,
            StateClass::Cancelled => BlockState::Cancelled,
            StateClass::Failed(_) | StateClass::Ended if cancelled => BlockState::Cancelled,
            StateClass::Failed(what) => match record.exit_status {
                Some(status) => failed(&format!("{what} with {} {status}", self.exit_word)),
                None => failed(what),
            },
            StateClass::Ended => match record.exit_status {
                None | Some(0) => BlockState::Completed,
                Some(status) if Some(status) == self.walltime_exit_status => {
                    failed("killed at its walltime")
                }
                Some(status) if self.signal_exit_offset.is_some_and(|o| status > o) => {
                    let offset = self.signal_exit_offset.unwrap_or(0);
                    failed(&format!("killed by signal {}", status - offset))
                }
                Some(status) => failed(&format!("exited with {} {status}", self.exit_word)),
            },
        }
    }
}

/// `template` with each `{name}` replaced by `value(name)`, in one pass (a
/// value is never read as a template); a name without a value stays as it
/// is.
pub(crate) fn fill(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}').and_then(|close| {
            let name = &after[..close];
            value(name).map(|v| (v, close))
        }) {
            Some((v, close)) => {
                out.push_str(&v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_in_one_pass() {
        let value = |name: &str| match name {
            "nodes" => Some("4".to_owned()),
            "partition" => Some("{nodes}".to_owned()),
            _ => None,
        };
        assert_eq!(fill("--nodes={nodes}", value), "--nodes=4");
        assert_eq!(fill("-p {partition} x", value), "-p {nodes} x");
        assert_eq!(fill("{unknown}-{nodes}", value), "{unknown}-4");
        assert_eq!(fill("span[ptile={nodes}] {", value), "span[ptile=4] {");
    }
}
