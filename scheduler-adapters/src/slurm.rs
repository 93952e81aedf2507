//! Slurm: a generated batch script submitted with `sbatch --parsable`,
//! states from `squeue` with an explicit format (then `scontrol show job` and
//! `sacct` for jobs squeue no longer lists), `scancel` to give nodes back.
//!
//! The script asks for `nodes` nodes with `workers_per_node` tasks each and
//! starts one worker per task with `srun`, so every node of the block runs
//! its workers and Slurm accounts for (and kills) them with the job.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::command::{message_of, write_script, Invocation};
use crate::config::{default_command_timeout, default_walltime, quoted, Render};
use crate::{
    add_init_reports, batch_init_report, format_walltime, worker_init_script, BlockSpec,
    BlockState, InitReport, JobId, Provider, ProviderError,
};

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
}

/// The Slurm provider.
#[derive(Debug)]
pub struct SlurmProvider {
    config: SlurmConfig,
    script_dir: PathBuf,
    /// Prefix of the Slurm commands (tests, or a cluster's odd install).
    bin_dir: Option<PathBuf>,
    timeout: Duration,
}

impl SlurmProvider {
    /// `default_script_dir` is used unless the config names one.
    pub fn new(config: SlurmConfig, default_script_dir: &Path) -> Self {
        let script_dir = config
            .script_dir
            .clone()
            .unwrap_or_else(|| default_script_dir.to_owned());
        let timeout = Duration::from_secs(config.command_timeout_secs.max(1));
        Self {
            config,
            script_dir,
            bin_dir: None,
            timeout,
        }
    }

    /// Runs `sbatch` etc. from this directory instead of PATH.
    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    fn command(&self, name: &str) -> Invocation {
        let program = match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        };
        Invocation::new(program, self.timeout)
    }

    /// The batch script of a block.
    pub fn render_script(&self, spec: &BlockSpec) -> String {
        render_script(&self.config, &self.script_dir, spec)
    }

    /// Jobs squeue does not list: `scontrol show job`, then `sacct`, else
    /// completed (Slurm forgets finished jobs after `MinJobAge`).
    async fn missing(&self, jobs: &[JobId]) -> HashMap<JobId, BlockState> {
        let mut states = HashMap::new();
        for job in jobs {
            let scontrol = self.command("scontrol").args(["show", "job", job.as_str()]);
            if let Ok(output) = scontrol.output().await {
                if output.success {
                    if let Some(state) = parse_scontrol(&output.stdout) {
                        states.insert(job.clone(), state);
                    }
                }
            }
        }
        let rest: Vec<&JobId> = jobs.iter().filter(|j| !states.contains_key(*j)).collect();
        if !rest.is_empty() {
            let ids = rest
                .iter()
                .map(|j| j.as_str())
                .collect::<Vec<_>>()
                .join(",");
            let sacct = self
                .command("sacct")
                .args(["-n", "-X", "-P", "-o", "JobIDRaw,State,Reason", "-j"])
                .arg(ids);
            match sacct.output().await {
                Ok(output) if output.success => {
                    for line in output.stdout.lines() {
                        let fields: Vec<&str> = line.trim().split('|').collect();
                        if let [id, state, reason, ..] = fields.as_slice() {
                            states.insert((*id).to_owned(), slurm_state(state, reason));
                        }
                    }
                }
                Ok(output) => {
                    tracing::debug!("sacct unavailable: {}", message_of(&output));
                }
                Err(e) => tracing::debug!("sacct unavailable: {e}"),
            }
        }
        for job in jobs {
            states.entry(job.clone()).or_insert(BlockState::Completed);
        }
        states
    }
}

/// Renders the batch script (also used by the snapshot tests).
pub fn render_script(config: &SlurmConfig, script_dir: &Path, spec: &BlockSpec) -> String {
    let mut s = String::from("#!/bin/bash\n");
    let mut opt = |line: String| {
        s.push_str("#SBATCH ");
        s.push_str(&line);
        s.push('\n');
    };
    opt(format!("--job-name=lattice-{}", spec.block_id));
    opt(format!(
        "--output={}",
        script_dir
            .join(format!("lattice-{}.%j.out", spec.block_id))
            .display()
    ));
    opt(format!("--nodes={}", spec.nodes));
    opt(format!("--ntasks-per-node={}", spec.workers_per_node));
    opt(format!("--time={}", format_walltime(spec.walltime)));
    if let Some(partition) = &config.partition {
        opt(format!("--partition={partition}"));
    }
    if let Some(account) = &config.account {
        opt(format!("--account={account}"));
    }
    if let Some(qos) = &config.qos {
        opt(format!("--qos={qos}"));
    }
    if let Some(constraint) = &config.constraint {
        opt(format!("--constraint={constraint}"));
    }
    if config.exclusive {
        opt("--exclusive".to_owned());
    }
    for line in &config.scheduler_options {
        s.push_str(line);
        s.push('\n');
    }
    s.push_str("\nset -e\n");
    s.push_str(&format!(
        "export LATTICE_BLOCK_ID={}\n",
        crate::shell_quote(&spec.block_id)
    ));
    s.push('\n');
    s.push_str(&worker_init_script(
        &spec.worker_init,
        InitReport::File(&batch_init_report(script_dir, "SLURM_JOB_ID")),
    ));
    s.push_str(&format!(
        "\n# {} worker(s) on each of {} node(s)\n",
        spec.workers_per_node, spec.nodes
    ));
    s.push_str(&format!(
        "srun --nodes={} --ntasks-per-node={} --ntasks={} --kill-on-bad-exit=0 {}\n",
        spec.nodes,
        spec.workers_per_node,
        spec.nodes * spec.workers_per_node,
        spec.worker.shell_line(&spec.block_id)
    ));
    s
}

#[async_trait]
impl Provider for SlurmProvider {
    fn kind(&self) -> &'static str {
        "slurm"
    }

    async fn submit(&self, spec: &BlockSpec) -> Result<JobId, ProviderError> {
        let script = self.render_script(spec);
        let path = write_script(
            &self.script_dir,
            &format!("lattice-{}.sbatch", spec.block_id),
            &script,
        )
        .await?;
        let sbatch = self
            .command("sbatch")
            .arg("--parsable")
            .arg(path.display().to_string());
        let output = sbatch.output().await?;
        if !output.success {
            return Err(ProviderError::Refused(message_of(&output)));
        }
        // `--parsable` prints `JOBID` or `JOBID;CLUSTER`.
        let line = output.stdout.lines().find(|l| !l.trim().is_empty());
        let id = line
            .and_then(|l| l.trim().split(';').next())
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit() || b == b'_'))
            .ok_or_else(|| sbatch.parse_error(format!("no job id in {:?}", output.stdout)))?;
        if !output.stderr.is_empty() {
            tracing::warn!(job_id = id, "sbatch: {}", output.stderr);
        }
        Ok(id.to_owned())
    }

    async fn status(&self, jobs: &[JobId]) -> Result<HashMap<JobId, BlockState>, ProviderError> {
        if jobs.is_empty() {
            return Ok(HashMap::new());
        }
        let squeue = self
            .command("squeue")
            .args(["-h", "-t", "all", "-o", "%i|%T|%r", "-j"])
            .arg(jobs.join(","));
        let output = squeue.output().await?;
        let mut states = HashMap::new();
        if output.success {
            for line in output.stdout.lines().filter(|l| !l.trim().is_empty()) {
                let fields: Vec<&str> = line.trim().splitn(3, '|').collect();
                let [id, state, reason] = fields.as_slice() else {
                    return Err(squeue
                        .parse_error(format!("unexpected line {line:?}"))
                        .into());
                };
                if jobs.iter().any(|j| j == id) {
                    states.insert((*id).to_owned(), slurm_state(state, reason));
                }
            }
        } else if !output.stderr.contains("Invalid job id") {
            // squeue answers "Invalid job id specified" when the only id asked
            // for is gone; anything else is a real failure.
            return Err(squeue.failed(&output).into());
        }
        let missing: Vec<JobId> = jobs
            .iter()
            .filter(|j| !states.contains_key(*j))
            .cloned()
            .collect();
        if !missing.is_empty() {
            states.extend(self.missing(&missing).await);
        }
        add_init_reports(&self.script_dir, &mut states).await;
        Ok(states)
    }

    async fn cancel(&self, jobs: &[JobId]) -> Result<(), ProviderError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let scancel = self.command("scancel").args(jobs.iter().cloned());
        let output = scancel.output().await?;
        if !output.success && !output.stderr.contains("Invalid job id") {
            return Err(scancel.failed(&output).into());
        }
        Ok(())
    }
}

/// A Slurm job state (`%T` of squeue, `State` of sacct, `JobState` of
/// scontrol) and its reason, as a block state.
fn slurm_state(state: &str, reason: &str) -> BlockState {
    // sacct writes `CANCELLED by 0`.
    let state = state.split_whitespace().next().unwrap_or("");
    let with_reason = |what: &str| {
        let reason = reason.trim();
        if reason.is_empty() || reason == "None" {
            format!("slurm job {what}")
        } else {
            format!("slurm job {what} ({reason})")
        }
    };
    match state {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESIZING"
        | "SUSPENDED" | "STOPPED" => {
            // Some pending reasons mean the job will never start.
            let hopeless = [
                "BadConstraints",
                "PartitionConfig",
                "InvalidAccount",
                "InvalidQOS",
                "QOSJobLimit",
                "AccountNotAllowed",
                "PartitionDown",
                "PartitionInactive",
                "ReqNodeNotAvail, UnavailableNodes",
            ];
            if hopeless.iter().any(|h| reason.starts_with(h)) {
                BlockState::Failed {
                    message: with_reason("cannot start"),
                }
            } else {
                BlockState::Pending
            }
        }
        "RUNNING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT" => BlockState::Running,
        "COMPLETED" => BlockState::Completed,
        "CANCELLED" | "REVOKED" => BlockState::Cancelled,
        "TIMEOUT" => BlockState::Failed {
            message: with_reason("TIMEOUT: killed at its walltime"),
        },
        "FAILED" | "NODE_FAIL" | "BOOT_FAIL" | "OUT_OF_MEMORY" | "DEADLINE" | "PREEMPTED"
        | "SPECIAL_EXIT" => BlockState::Failed {
            message: with_reason(state),
        },
        other => BlockState::Unknown {
            message: format!("unrecognised slurm job state `{other}` ({reason})"),
        },
    }
}

/// `JobState=... Reason=...` of `scontrol show job`.
fn parse_scontrol(text: &str) -> Option<BlockState> {
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    };
    let state = field("JobState")?;
    Some(slurm_state(state, field("Reason").unwrap_or("None")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fake_bin, spec};
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

    #[test]
    fn states_follow_slurm_words() {
        assert_eq!(slurm_state("PENDING", "Priority"), BlockState::Pending);
        assert_eq!(slurm_state("RUNNING", "None"), BlockState::Running);
        assert_eq!(slurm_state("CANCELLED by 0", ""), BlockState::Cancelled);
        assert_eq!(
            slurm_state("TIMEOUT", "None"),
            BlockState::Failed {
                message: "slurm job TIMEOUT: killed at its walltime".into()
            }
        );
        assert_eq!(
            slurm_state("PENDING", "PartitionConfig"),
            BlockState::Failed {
                message: "slurm job cannot start (PartitionConfig)".into()
            }
        );
        assert!(matches!(
            slurm_state("WEIRD", ""),
            BlockState::Unknown { .. }
        ));
        assert_eq!(
            parse_scontrol(
                "JobId=5 JobName=x\n   JobState=FAILED Reason=NonZeroExitCode Dependency=(null)\n"
            ),
            Some(BlockState::Failed {
                message: "slurm job FAILED (NonZeroExitCode)".into()
            })
        );
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
