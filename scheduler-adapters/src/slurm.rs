//! Slurm: a generated batch script submitted with `sbatch --parsable`,
//! states from `squeue` with an explicit format (then `scontrol show job` and
//! `sacct` for jobs squeue no longer lists), `scancel` to give nodes back.
//!
//! The script asks for `nodes` nodes with `workers_per_node` tasks each and
//! starts one worker per task with `srun`, so every node of the block runs
//! its workers and Slurm accounts for (and kills) them with the job.
//!
//! This module owns `[provider] type = "slurm"` and Slurm's [`BatchDialect`]
//! (its directives, commands, output formats and state names); the flow
//! that uses them is `batch`'s. It must not run commands or grow a submit,
//! status or cancel of its own: a Slurm difference is a dialect value.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::batch::{
    BatchDialect, BatchProvider, BatchSettings, Cancel, Directive, Ids, JobRecord, Launch, Query,
    QueryFailure, ReasonStyle, Reply, ScriptVia, StateClass, Submit, WalltimeFormat,
};
use crate::config::{default_command_timeout, default_walltime, quoted, Render};
use crate::{BlockSpec, JobId};

/// `[provider] type = "slurm"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub qos: Option<String>,
    #[serde(default)]
    pub constraint: Option<String>,
    /// Ask for whole nodes (`--exclusive`).
    #[serde(default)]
    pub exclusive: bool,
    /// `HH:MM:SS` per block.
    #[serde(default = "default_walltime")]
    pub walltime: String,
    /// Extra header lines, verbatim (`#SBATCH --gres=gpu:1`).
    #[serde(default)]
    pub scheduler_options: Vec<String>,
    /// Shell lines run before the workers start.
    #[serde(default)]
    pub worker_init: Vec<String>,
    /// Where batch scripts and job output go [default: ENDPOINT_DIR/blocks].
    #[serde(default)]
    pub script_dir: Option<PathBuf>,
    /// Seconds a Slurm command may take.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_secs: u64,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            partition: None,
            account: None,
            qos: None,
            constraint: None,
            exclusive: false,
            walltime: default_walltime(),
            scheduler_options: Vec::new(),
            worker_init: Vec::new(),
            script_dir: None,
            command_timeout_secs: default_command_timeout(),
        }
    }
}

impl SlurmConfig {
    pub(crate) fn render(&self, out: &mut Render) {
        out.opt_string(
            "Partition (`#SBATCH --partition`); unset: the cluster's default.",
            "partition",
            &self.partition,
            "\"compute\"",
        );
        out.opt_string(
            "Account charged for the nodes (`--account`); unset: your default account.",
            "account",
            &self.account,
            "\"project123\"",
        );
        out.opt_string(
            "Quality of service (`--qos`).",
            "qos",
            &self.qos,
            "\"normal\"",
        );
        out.opt_string(
            "Node features the block needs (`--constraint`).",
            "constraint",
            &self.constraint,
            "\"haswell\"",
        );
        out.comment(
            "Ask for whole nodes (`--exclusive`).",
            "exclusive",
            Some(self.exclusive.to_string()),
            "",
        );
        out.comment(
            "Walltime of each block (`--time`), HH:MM:SS or D-HH:MM:SS. Workers are\nkilled when it ends; their running tasks are retried on another block.",
            "walltime",
            Some(quoted(&self.walltime)),
            "",
        );
        out.list(
            "Extra lines for the batch script's header, verbatim.",
            "scheduler_options",
            &self.scheduler_options,
            "[\"#SBATCH --gres=gpu:1\", \"#SBATCH --mail-type=FAIL\"]",
        );
        out.list(
            "Shell lines the batch script runs on the first node before the workers start\n(keep to POSIX sh: `. FILE`). The first line that fails stops the block; its\nstderr is shown on the endpoint and on the tasks that wait for it.",
            "worker_init",
            &self.worker_init,
            "[\"module load python\", \". ~/venv/bin/activate\"]",
        );
        out.opt_path(
            "Where batch scripts and job output files go (default: the endpoint's dir + /blocks).",
            "script_dir",
            &self.script_dir,
            "\"/home/me/lattice-blocks\"",
        );
        out.comment(
            "Seconds an sbatch/squeue/scancel call may take before it counts as failed.",
            "command_timeout_secs",
            Some(self.command_timeout_secs.to_string()),
            "",
        );
    }

    /// What the batch core needs of this config.
    fn batch_settings(&self) -> BatchSettings {
        BatchSettings {
            values: vec![
                ("partition", self.partition.clone()),
                ("account", self.account.clone()),
                ("qos", self.qos.clone()),
                ("constraint", self.constraint.clone()),
                ("exclusive", self.exclusive.then(String::new)),
            ],
            scheduler_options: self.scheduler_options.clone(),
            launcher: None,
            script_dir: self.script_dir.clone(),
            command_timeout_secs: self.command_timeout_secs,
        }
    }
}

/// Slurm's words.
static SLURM: BatchDialect = BatchDialect {
    kind: "slurm",
    directive_prefix: "#SBATCH",
    directives: &[
        Directive::always("--job-name=lattice-{block_id}"),
        Directive::always("--output={output}"),
        Directive::always("--nodes={nodes}"),
        Directive::always("--ntasks-per-node={workers_per_node}"),
        Directive::always("--time={walltime}"),
        Directive::if_set("partition", "--partition={partition}"),
        Directive::if_set("account", "--account={account}"),
        Directive::if_set("qos", "--qos={qos}"),
        Directive::if_set("constraint", "--constraint={constraint}"),
        Directive::if_set("exclusive", "--exclusive"),
    ],
    output_file: "lattice-{block_id}.%j.out",
    walltime: WalltimeFormat::Clock,
    preamble: "set -e\n",
    job_id_var: "SLURM_JOB_ID",
    // One Slurm task per worker, so that Slurm accounts for (and kills) them
    // with the job.
    launch: Launch::Tasks(
        "srun --nodes={nodes} --ntasks-per-node={workers_per_node} --ntasks={tasks} --kill-on-bad-exit=0 {worker}",
    ),
    submit: Submit {
        program: "sbatch",
        args: &["--parsable"],
        script: ScriptVia::Path,
        script_suffix: "sbatch",
        parse_id: parse_sbatch,
    },
    // squeue answers "Invalid job id specified" when the only id asked for
    // is gone.
    status: Query {
        program: "squeue",
        args: &["-h", "-t", "all", "-o", "%i|%T|%r", "-j"],
        ids: Ids::Joined(","),
        failure: QueryFailure::Harmless(&["Invalid job id"]),
        parse: parse_squeue,
    },
    // Slurm forgets finished jobs after `MinJobAge`: scontrol still knows
    // recent ones, sacct (when accounting is set up) the rest.
    history: &[
        Query {
            program: "scontrol",
            args: &["show", "job"],
            ids: Ids::OnePerCall,
            failure: QueryFailure::ReadAnyway,
            parse: parse_scontrol,
        },
        Query {
            program: "sacct",
            args: &["-n", "-X", "-P", "-o", "JobIDRaw,State,Reason", "-j"],
            ids: Ids::Joined(","),
            failure: QueryFailure::Harmless(&[]),
            parse: parse_sacct,
        },
    ],
    cancel: Cancel {
        program: "scancel",
        args: &[],
        harmless: &["Invalid job id"],
    },
    states: &[
        ("PENDING", StateClass::Waiting),
        ("CONFIGURING", StateClass::Waiting),
        ("REQUEUED", StateClass::Waiting),
        ("REQUEUE_HOLD", StateClass::Waiting),
        ("REQUEUE_FED", StateClass::Waiting),
        ("RESIZING", StateClass::Waiting),
        ("SUSPENDED", StateClass::Waiting),
        ("STOPPED", StateClass::Waiting),
        ("RUNNING", StateClass::Running),
        ("COMPLETING", StateClass::Running),
        ("SIGNALING", StateClass::Running),
        ("STAGE_OUT", StateClass::Running),
        ("COMPLETED", StateClass::Completed),
        ("CANCELLED", StateClass::Cancelled),
        ("REVOKED", StateClass::Cancelled),
        ("TIMEOUT", StateClass::Failed("TIMEOUT: killed at its walltime")),
        ("FAILED", StateClass::Failed("FAILED")),
        ("NODE_FAIL", StateClass::Failed("NODE_FAIL")),
        ("BOOT_FAIL", StateClass::Failed("BOOT_FAIL")),
        ("OUT_OF_MEMORY", StateClass::Failed("OUT_OF_MEMORY")),
        ("DEADLINE", StateClass::Failed("DEADLINE")),
        ("PREEMPTED", StateClass::Failed("PREEMPTED")),
        ("SPECIAL_EXIT", StateClass::Failed("SPECIAL_EXIT")),
    ],
    never_starts: &[
        "BadConstraints",
        "PartitionConfig",
        "InvalidAccount",
        "InvalidQOS",
        "QOSJobLimit",
        "AccountNotAllowed",
        "PartitionDown",
        "PartitionInactive",
        "ReqNodeNotAvail, UnavailableNodes",
    ],
    cancelled_reasons: &[],
    reason_style: ReasonStyle::InParentheses,
    exit_word: "status",
    walltime_exit_status: None,
    signal_exit_offset: None,
};

/// `sbatch --parsable` prints `JOBID` or `JOBID;CLUSTER`.
fn parse_sbatch(stdout: &str) -> Option<JobId> {
    let line = stdout.lines().find(|l| !l.trim().is_empty())?;
    let id = line.trim().split(';').next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit() || b == b'_')).then(|| id.to_owned())
}

fn record(id: &str, state: &str, reason: &str) -> Reply {
    Reply::Job(JobRecord {
        id: id.to_owned(),
        state: state.to_owned(),
        reason: reason.to_owned(),
        exit_status: None,
    })
}

/// `squeue -o %i|%T|%r`: `JOBID|STATE|REASON` lines.
fn parse_squeue(stdout: &str, _asked: &[JobId]) -> Result<Vec<Reply>, String> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(
            |line| match line.trim().splitn(3, '|').collect::<Vec<_>>()[..] {
                [id, state, reason] => Ok(record(id, state, reason)),
                _ => Err(format!("unexpected line {line:?}")),
            },
        )
        .collect()
}

/// `JobState=... Reason=...` of `scontrol show job JOBID`.
fn parse_scontrol(stdout: &str, asked: &[JobId]) -> Result<Vec<Reply>, String> {
    let field = |name: &str| {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    };
    Ok(match (asked, field("JobState")) {
        ([id], Some(state)) => vec![record(id, state, field("Reason").unwrap_or("None"))],
        _ => Vec::new(),
    })
}

/// `sacct -P -o JobIDRaw,State,Reason`: `JOBID|STATE|REASON` lines (State
/// may read `CANCELLED by 0`).
fn parse_sacct(stdout: &str, _asked: &[JobId]) -> Result<Vec<Reply>, String> {
    Ok(stdout
        .lines()
        .filter_map(
            |line| match line.trim().split('|').collect::<Vec<_>>()[..] {
                [id, state, reason, ..] => Some(record(id, state, reason)),
                _ => None,
            },
        )
        .collect())
}

/// The Slurm provider.
#[derive(Debug)]
pub struct SlurmProvider(BatchProvider);

impl SlurmProvider {
    /// `default_script_dir` is used unless the config names one.
    pub fn new(config: SlurmConfig, default_script_dir: &Path) -> Self {
        Self(BatchProvider::new(
            &SLURM,
            config.batch_settings(),
            default_script_dir,
        ))
    }

    /// Runs `sbatch` etc. from this directory instead of PATH.
    pub fn with_bin_dir(self, dir: impl Into<PathBuf>) -> Self {
        Self(self.0.with_bin_dir(dir.into()))
    }

    /// The batch script of a block.
    pub fn render_script(&self, spec: &BlockSpec) -> String {
        // srun starts the workers of any number of nodes: only a dialect
        // that needs a `launcher` setting can refuse a block.
        self.0
            .render_script(spec)
            .unwrap_or_else(|e| unreachable!("a slurm script cannot fail: {e}"))
    }
}

/// Renders the batch script of a block whose scripts go to `script_dir`.
pub fn render_script(config: &SlurmConfig, script_dir: &Path, spec: &BlockSpec) -> String {
    let config = SlurmConfig {
        script_dir: Some(script_dir.to_owned()),
        ..config.clone()
    };
    SlurmProvider::new(config, script_dir).render_script(spec)
}

crate::batch::provider_by_batch!(SlurmProvider);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::{fake_bin, spec};
    use crate::{BlockState, Provider, ProviderError};
    use expect_test::{expect, Expect};

    fn check(config: SlurmConfig, spec: &BlockSpec, expected: Expect) {
        expected.assert_eq(&render_script(&config, Path::new("/home/me/blocks"), spec));
    }

    #[test]
    fn default_script() {
        check(
            SlurmConfig::default(),
            &spec("b1", 1, 2),
            expect![[r#"
                #!/bin/bash
                #SBATCH --job-name=lattice-b1
                #SBATCH --output=/home/me/blocks/lattice-b1.%j.out
                #SBATCH --nodes=1
                #SBATCH --ntasks-per-node=2
                #SBATCH --time=00:30:00

                set -e
                export LATTICE_BLOCK_ID=b1

                # (no worker_init)

                # 2 worker(s) on each of 1 node(s)
                srun --nodes=1 --ntasks-per-node=2 --ntasks=2 --kill-on-bad-exit=0 /opt/lattice/bin/lattice worker --dispatcher login1:9000 --capacity 1 --block-id b1
            "#]],
        );
    }

    #[test]
    fn every_option_script() {
        let config = SlurmConfig {
            partition: Some("compute".into()),
            account: Some("proj42".into()),
            qos: Some("debug".into()),
            constraint: Some("haswell&ib".into()),
            exclusive: true,
            walltime: "ignored: the spec carries it".into(),
            scheduler_options: vec!["#SBATCH --gres=gpu:1".into()],
            worker_init: vec![],
            script_dir: None,
            command_timeout_secs: 5,
        };
        let mut spec = spec("b-7", 4, 8);
        spec.walltime = Duration::from_secs(2 * 86_400 + 3600);
        spec.worker_init = vec![
            "module load python/3.12".into(),
            "source ~/venv/bin/activate".into(),
        ];
        check(
            config,
            &spec,
            expect![[r##"
                #!/bin/bash
                #SBATCH --job-name=lattice-b-7
                #SBATCH --output=/home/me/blocks/lattice-b-7.%j.out
                #SBATCH --nodes=4
                #SBATCH --ntasks-per-node=8
                #SBATCH --time=2-01:00:00
                #SBATCH --partition=compute
                #SBATCH --account=proj42
                #SBATCH --qos=debug
                #SBATCH --constraint=haswell&ib
                #SBATCH --exclusive
                #SBATCH --gres=gpu:1

                set -e
                export LATTICE_BLOCK_ID=b-7

                # worker_init: the first line that fails stops the block before any worker starts
                exec 9>&2
                lattice_init_report=/home/me/blocks/lattice-"${SLURM_JOB_ID}".worker_init.err
                if { : >>"$lattice_init_report"; } 2>/dev/null; then exec 2>"$lattice_init_report"; else lattice_init_report=; fi
                lattice_init_failed() {
                  lattice_init_status=$1
                  exec 2>&9 9>&-
                  lattice_init_summary="lattice: worker_init line $lattice_init_step failed with exit status $lattice_init_status; no worker started"
                  [ "$lattice_init_status" -ne 0 ] || lattice_init_summary="lattice: worker_init line $lattice_init_step exited the block script (status 0); no worker started"
                  if [ -n "$lattice_init_report" ]; then
                    printf '%s\n' "$lattice_init_summary" >>"$lattice_init_report"
                    cat "$lattice_init_report" >&2
                  else
                    printf '%s\n' "$lattice_init_summary" >&2
                  fi
                  [ "$lattice_init_status" -ne 0 ] || lattice_init_status=1
                  exit "$lattice_init_status"
                }
                trap 'lattice_init_failed $?' EXIT
                lattice_init_step='1 (`module load python/3.12`)'
                {
                module load python/3.12
                } || exit
                lattice_init_step='2 (`source ~/venv/bin/activate`)'
                {
                source ~/venv/bin/activate
                } || exit
                trap - EXIT
                exec 2>&9 9>&-
                if [ -n "$lattice_init_report" ]; then cat "$lattice_init_report" >&2; rm -f "$lattice_init_report"; fi

                # 8 worker(s) on each of 4 node(s)
                srun --nodes=4 --ntasks-per-node=8 --ntasks=32 --kill-on-bad-exit=0 /opt/lattice/bin/lattice worker --dispatcher login1:9000 --capacity 1 --block-id b-7
            "##]],
        );
    }

    /// A job in `state` for `reason`, as squeue says it.
    fn slurm_state(state: &str, reason: &str) -> BlockState {
        let [Reply::Job(job)] = &parse_squeue(&format!("7|{state}|{reason}\n"), &[]).unwrap()[..]
        else {
            panic!("one record");
        };
        SLURM.block_state(job)
    }

    #[test]
    fn states_follow_slurm_words() {
        assert_eq!(slurm_state("PENDING", "Priority"), BlockState::Pending);
        assert_eq!(slurm_state("RUNNING", "None"), BlockState::Running);
        assert_eq!(slurm_state("COMPLETING", "None"), BlockState::Running);
        assert_eq!(slurm_state("COMPLETED", "None"), BlockState::Completed);
        assert_eq!(slurm_state("CANCELLED by 0", ""), BlockState::Cancelled);
        assert_eq!(
            slurm_state("TIMEOUT", "None"),
            BlockState::Failed {
                message: "slurm job TIMEOUT: killed at its walltime".into()
            }
        );
        assert_eq!(
            slurm_state("OUT_OF_MEMORY", "OutOfMemory"),
            BlockState::Failed {
                message: "slurm job OUT_OF_MEMORY (OutOfMemory)".into()
            }
        );
        assert_eq!(
            slurm_state("PENDING", "PartitionConfig"),
            BlockState::Failed {
                message: "slurm job cannot start (PartitionConfig)".into()
            }
        );
        assert_eq!(
            slurm_state("WEIRD", ""),
            BlockState::Unknown {
                message: "unrecognised slurm job state `WEIRD`".into()
            }
        );
        assert_eq!(
            parse_scontrol(
                "JobId=5 JobName=x\n   JobState=FAILED Reason=NonZeroExitCode Dependency=(null)\n",
                &["5".to_owned()]
            )
            .unwrap(),
            vec![record("5", "FAILED", "NonZeroExitCode")]
        );
        assert_eq!(
            parse_sacct("9|CANCELLED by 0|None\n\n", &[]).unwrap(),
            vec![record("9", "CANCELLED by 0", "None")]
        );
        let err = parse_squeue("4242|RUNNING\n", &[]).unwrap_err();
        assert_eq!(err, "unexpected line \"4242|RUNNING\"");
    }

    #[test]
    fn job_ids_from_sbatch() {
        assert_eq!(parse_sbatch("4242\n").as_deref(), Some("4242"));
        assert_eq!(parse_sbatch("\n4242;cluster2\n").as_deref(), Some("4242"));
        assert_eq!(parse_sbatch("4242_3\n").as_deref(), Some("4242_3"));
        assert_eq!(parse_sbatch("Submitted batch job 4242\n"), None);
        assert_eq!(parse_sbatch(""), None);
    }

    /// The real commands' behaviour is covered by the Slurm end-to-end test;
    /// this pins the parsing against their documented output formats.
    #[tokio::test]
    async fn submit_status_cancel_against_fake_commands() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let log = dir.path().join("calls.log");
        fake_bin(
            &bin,
            "sbatch",
            &format!(
                r#"echo "sbatch $*" >> {log}
case "$(cat "$2")" in
  *--account=nosuch*) echo "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified" >&2; exit 1;;
esac
echo "4242;lattice-test""#,
                log = log.display()
            ),
        );
        fake_bin(
            &bin,
            "squeue",
            &format!(
                r#"echo "squeue $*" >> {log}
printf '4242|RUNNING|None\n4243|PENDING|Resources\n4247|FAILED|NonZeroExitCode\n'"#,
                log = log.display()
            ),
        );
        fake_bin(
            &bin,
            "scontrol",
            r#"case "$3" in
  4244) printf 'JobId=4244 JobName=lattice-b3\n   JobState=TIMEOUT Reason=TimeLimit Dependency=(null)\n';;
  *) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1;;
esac"#,
        );
        fake_bin(&bin, "sacct", "printf '4245|CANCELLED by 0|None\\n'");
        fake_bin(
            &bin,
            "scancel",
            &format!(r#"echo "scancel $*" >> {log}"#, log = log.display()),
        );
        let provider = SlurmProvider::new(SlurmConfig::default(), &dir.path().join("blocks"))
            .with_bin_dir(&bin);
        assert_eq!(provider.submit(&spec("b1", 1, 1)).await.unwrap(), "4242");
        assert!(dir.path().join("blocks/lattice-b1.sbatch").is_file());

        let refused = SlurmProvider::new(
            SlurmConfig {
                account: Some("nosuch".into()),
                ..SlurmConfig::default()
            },
            &dir.path().join("blocks"),
        )
        .with_bin_dir(&bin);
        let err = refused.submit(&spec("b2", 1, 1)).await.unwrap_err();
        assert!(matches!(err, ProviderError::Refused(_)));
        assert_eq!(
            err.to_string(),
            "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified"
        );

        // The batch script of 4247 stopped in worker_init and left its
        // report; a report of a job that runs is not read.
        for job in ["4247", "4242"] {
            std::fs::write(
                dir.path().join(format!("blocks/lattice-{job}.worker_init.err")),
                "Lmod has detected the following error: The following module(s) are unknown: \"python/9.9\"\nlattice: worker_init line 1 (`module load python/9.9`) failed with exit status 1; no worker started\n",
            )
            .unwrap();
        }
        let jobs: Vec<JobId> = ["4242", "4243", "4244", "4245", "4246", "4247"]
            .map(String::from)
            .to_vec();
        let states = provider.status(&jobs).await.unwrap();
        assert_eq!(
            states["4247"],
            BlockState::Failed {
                message: "slurm job FAILED (NonZeroExitCode): worker_init line 1 (`module load python/9.9`) failed with exit status 1: Lmod has detected the following error: The following module(s) are unknown: \"python/9.9\"".into()
            }
        );
        assert_eq!(states["4242"], BlockState::Running);
        assert_eq!(states["4243"], BlockState::Pending);
        assert_eq!(
            states["4244"],
            BlockState::Failed {
                message: "slurm job TIMEOUT: killed at its walltime (TimeLimit)".into()
            }
        );
        assert_eq!(states["4245"], BlockState::Cancelled);
        assert_eq!(states["4246"], BlockState::Completed, "forgotten by Slurm");

        provider.cancel(&jobs[..2]).await.unwrap();
        let calls = std::fs::read_to_string(&log).unwrap();
        assert!(
            calls.contains("squeue -h -t all -o %i|%T|%r -j 4242,4243,4244,4245,4246,4247"),
            "{calls}"
        );
        assert!(calls.contains("scancel 4242 4243"), "{calls}");
    }
}
