//! PBS Pro / OpenPBS: a generated script submitted with `qsub`, states from
//! `qstat -f -F json -x` (finished jobs included, from the job history),
//! `qdel` to give nodes back.
//!
//! No PBS server can run on Lattice's test machines: the tests drive this
//! provider against fake `qsub`/`qstat`/`qdel` scripts that print the output
//! formats of the PBS Pro reference guide (`qstat -F json`), errors included.
//!
//! This module owns `[provider] type = "pbs"` and PBS's [`BatchDialect`]
//! (its directives, commands, output formats and state names); the flow
//! that uses them is `batch`'s. It must not run commands or grow a submit,
//! status or cancel of its own: a PBS difference is a dialect value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::batch::{
    BatchDialect, BatchProvider, BatchSettings, Cancel, Directive, Ids, JobRecord, Launch, Query,
    QueryFailure, ReasonStyle, Reply, ScriptVia, StateClass, Submit, WalltimeFormat,
};
use crate::config::{default_command_timeout, default_walltime, quoted, Render};
use crate::{BlockSpec, JobId, ProviderError};

/// `[provider] type = "pbs"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PbsConfig {
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    /// Appended to `select=NODES` (`:ncpus=64:mem=200gb`).
    #[serde(default)]
    pub select_options: String,
    #[serde(default = "default_walltime")]
    pub walltime: String,
    #[serde(default)]
    pub scheduler_options: Vec<String>,
    #[serde(default)]
    pub worker_init: Vec<String>,
    /// Runs its argument once on every node (needed for blocks of several nodes).
    #[serde(default)]
    pub launcher: Option<String>,
    #[serde(default)]
    pub script_dir: Option<PathBuf>,
    #[serde(default = "default_command_timeout")]
    pub command_timeout_secs: u64,
}

impl Default for PbsConfig {
    fn default() -> Self {
        Self {
            queue: None,
            account: None,
            select_options: String::new(),
            walltime: default_walltime(),
            scheduler_options: Vec::new(),
            worker_init: Vec::new(),
            launcher: None,
            script_dir: None,
            command_timeout_secs: default_command_timeout(),
        }
    }
}

impl PbsConfig {
    pub(crate) fn render(&self, out: &mut Render) {
        out.opt_string("Queue (`#PBS -q`).", "queue", &self.queue, "\"workq\"");
        out.opt_string(
            "Account / project charged (`#PBS -A`).",
            "account",
            &self.account,
            "\"project123\"",
        );
        out.comment(
            "Appended to `-l select=NODES` (chunk resources of each node).",
            "select_options",
            Some(quoted(&self.select_options)),
            "",
        );
        out.comment(
            "Walltime of each block (`-l walltime`), HH:MM:SS.",
            "walltime",
            Some(quoted(&self.walltime)),
            "",
        );
        out.list(
            "Extra lines for the script's header, verbatim.",
            "scheduler_options",
            &self.scheduler_options,
            "[\"#PBS -l filesystems=home\"]",
        );
        out.list(
            "Shell lines the batch script runs on the first node before the workers start\n(keep to POSIX sh: `. FILE`). The first line that fails stops the block; its\nstderr is shown on the endpoint and on the tasks that wait for it.",
            "worker_init",
            &self.worker_init,
            "[\"module load python\"]",
        );
        out.opt_string(
            "Runs its argument once on every node; required when nodes_per_block > 1\n(`{nodes}` becomes the node count).",
            "launcher",
            &self.launcher,
            "\"mpiexec -n {nodes} --ppn 1\"",
        );
        out.opt_path(
            "Where scripts and job output go (default: the endpoint's dir + /blocks).",
            "script_dir",
            &self.script_dir,
            "\"/home/me/lattice-blocks\"",
        );
        out.comment(
            "Seconds a qsub/qstat/qdel call may take.",
            "command_timeout_secs",
            Some(self.command_timeout_secs.to_string()),
            "",
        );
    }

    /// What the batch core needs of this config.
    fn batch_settings(&self) -> BatchSettings {
        BatchSettings {
            values: vec![
                ("queue", self.queue.clone()),
                ("account", self.account.clone()),
                ("select_options", Some(self.select_options.clone())),
            ],
            scheduler_options: self.scheduler_options.clone(),
            launcher: self.launcher.clone(),
            script_dir: self.script_dir.clone(),
            command_timeout_secs: self.command_timeout_secs,
        }
    }
}

/// PBS's words.
static PBS: BatchDialect = BatchDialect {
    kind: "pbs",
    directive_prefix: "#PBS",
    directives: &[
        Directive::always("-N lattice-{block_id}"),
        Directive::always("-o {output}"),
        Directive::always("-j oe"),
        Directive::always("-l select={nodes}{select_options}"),
        Directive::always("-l place=scatter"),
        Directive::always("-l walltime={walltime}"),
        Directive::if_set("queue", "-q {queue}"),
        Directive::if_set("account", "-A {account}"),
    ],
    output_file: "lattice-{block_id}.out",
    walltime: WalltimeFormat::Clock,
    preamble: "",
    job_id_var: "PBS_JOBID",
    launch: Launch::PerNode,
    submit: Submit {
        program: "qsub",
        args: &[],
        script: ScriptVia::Path,
        script_suffix: "pbs",
        parse_id: parse_qsub,
    },
    // Unknown ids make qstat exit non-zero (`qstat: Unknown Job Id ...`)
    // while it still prints the others.
    status: Query {
        program: "qstat",
        args: &["-f", "-F", "json", "-x"],
        ids: Ids::Separate,
        failure: QueryFailure::Harmless(&["Unknown Job Id"]),
        parse: parse_qstat,
    },
    // `-x` already includes the job history.
    history: &[],
    cancel: Cancel {
        program: "qdel",
        args: &[],
        harmless: &["Unknown Job Id", "has finished"],
    },
    states: &[
        ("Q", StateClass::Waiting),
        ("H", StateClass::Waiting),
        ("W", StateClass::Waiting),
        ("T", StateClass::Waiting),
        ("M", StateClass::Waiting),
        ("S", StateClass::Waiting),
        ("U", StateClass::Waiting),
        ("R", StateClass::Running),
        ("E", StateClass::Running),
        ("B", StateClass::Running),
        ("X", StateClass::Completed),
        ("F", StateClass::Ended),
    ],
    never_starts: &["Can Never Run"],
    cancelled_reasons: &[],
    reason_style: ReasonStyle::AfterColon,
    exit_word: "status",
    // JOB_EXEC_KILL_WALLTIME.
    walltime_exit_status: Some(-29),
    // 256 + the signal's number.
    signal_exit_offset: Some(256),
};

/// qsub prints the job id, `SEQ.SERVER`.
fn parse_qsub(stdout: &str) -> Option<JobId> {
    stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .filter(|id| id.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(str::to_owned)
}

#[derive(Deserialize)]
struct QstatJson {
    #[serde(rename = "Jobs", default)]
    jobs: HashMap<String, QstatJob>,
}

#[derive(Deserialize)]
struct QstatJob {
    job_state: String,
    #[serde(default)]
    comment: Option<String>,
    #[serde(rename = "Exit_status", default)]
    exit_status: Option<i64>,
}

/// `qstat -f -F json`; nothing at all when no job asked is known.
fn parse_qstat(stdout: &str, _asked: &[JobId]) -> Result<Vec<Reply>, String> {
    if stdout.trim().is_empty() {
        return Ok(Vec::new());
    }
    let answer: QstatJson = serde_json::from_str(stdout).map_err(|e| e.to_string())?;
    Ok(answer
        .jobs
        .into_iter()
        .map(|(id, job)| {
            Reply::Job(JobRecord {
                id,
                state: job.job_state,
                reason: job.comment.unwrap_or_default(),
                exit_status: job.exit_status,
            })
        })
        .collect())
}

/// The PBS provider.
#[derive(Debug)]
pub struct PbsProvider(BatchProvider);

impl PbsProvider {
    /// `default_script_dir` is used unless the config names one.
    pub fn new(config: PbsConfig, default_script_dir: &Path) -> Self {
        Self(BatchProvider::new(
            &PBS,
            config.batch_settings(),
            default_script_dir,
        ))
    }

    /// Runs `qsub` etc. from this directory instead of PATH.
    pub fn with_bin_dir(self, dir: impl Into<PathBuf>) -> Self {
        Self(self.0.with_bin_dir(dir.into()))
    }

    /// The batch script of a block; blocks of several nodes need `launcher`.
    pub fn render_script(&self, spec: &BlockSpec) -> Result<String, ProviderError> {
        self.0.render_script(spec)
    }
}

crate::batch::provider_by_batch!(PbsProvider);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fake_bin, spec};
    use crate::{BlockState, Provider};
    use expect_test::expect;

    /// `qstat -f -F json -x` as PBS Pro 2021.1 prints it (fields trimmed to
    /// the ones that matter, in their real shapes): a running job, a queued
    /// one that can never run, one killed at its walltime, one done.
    const QSTAT_JSON: &str = r#"{
    "timestamp":1700000000,
    "pbs_version":"2021.1.4",
    "pbs_server":"pbs01",
    "Jobs":{
        "101.pbs01":{
            "Job_Name":"lattice-b1",
            "Job_Owner":"me@login1",
            "job_state":"R",
            "queue":"workq",
            "exec_host":"node7/0",
            "Resource_List":{"ncpus":1,"nodect":1,"place":"scatter","select":"1","walltime":"00:30:00"},
            "comment":"Job run at Tue Nov 14 at 22:13 on (node7:ncpus=1)"
        },
        "102.pbs01":{
            "Job_Name":"lattice-b2",
            "job_state":"Q",
            "queue":"workq",
            "comment":"Can Never Run: Insufficient amount of resource: ncpus (R: 512 A: 128 T: 128)"
        },
        "103.pbs01":{
            "Job_Name":"lattice-b3",
            "job_state":"F",
            "queue":"workq",
            "comment":"Job run at Tue Nov 14 at 21:00 on (node2:ncpus=1) and failed",
            "Exit_status":-29
        },
        "104.pbs01":{
            "Job_Name":"lattice-b4",
            "job_state":"F",
            "queue":"workq",
            "comment":"Job run at Tue Nov 14 at 21:00 on (node3:ncpus=1) and finished",
            "Exit_status":0
        }
    }
}"#;

    #[test]
    fn script() {
        let provider = PbsProvider::new(
            PbsConfig {
                queue: Some("debug".into()),
                account: Some("proj42".into()),
                select_options: ":ncpus=64".into(),
                launcher: Some("mpiexec -n {nodes} --ppn 1".into()),
                ..PbsConfig::default()
            },
            Path::new("/home/me/blocks"),
        );
        let mut spec = spec("b1", 2, 3);
        spec.worker_init = vec!["module load python".into()];
        expect![[r##"
            #!/bin/bash
            #PBS -N lattice-b1
            #PBS -o /home/me/blocks/lattice-b1.out
            #PBS -j oe
            #PBS -l select=2:ncpus=64
            #PBS -l place=scatter
            #PBS -l walltime=00:30:00
            #PBS -q debug
            #PBS -A proj42

            export LATTICE_BLOCK_ID=b1

            # worker_init: the first line that fails stops the block before any worker starts
            exec 9>&2
            lattice_init_report=/home/me/blocks/lattice-"${PBS_JOBID}".worker_init.err
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
            lattice_init_step='1 (`module load python`)'
            {
            module load python
            } || exit
            trap - EXIT
            exec 2>&9 9>&-
            if [ -n "$lattice_init_report" ]; then cat "$lattice_init_report" >&2; rm -f "$lattice_init_report"; fi

            # 3 worker(s) on each of 2 node(s)
            mpiexec -n 2 --ppn 1 /bin/sh -c 'for i in $(seq 1 3); do /opt/lattice/bin/lattice worker --dispatcher login1:9000 --capacity 1 --block-id b1 & done; wait'
        "##]]
        .assert_eq(&provider.render_script(&spec).unwrap());

        let no_launcher = PbsProvider::new(PbsConfig::default(), Path::new("/b"));
        let err = no_launcher.render_script(&spec).unwrap_err().to_string();
        assert!(err.contains("launcher"), "{err}");
    }

    /// The state of a job in `job_state`, with `comment` and `Exit_status`.
    fn pbs_state(job_state: &str, comment: &str, exit_status: Option<i64>) -> BlockState {
        PBS.block_state(&JobRecord {
            id: "1.pbs01".into(),
            state: job_state.into(),
            reason: comment.into(),
            exit_status,
        })
    }

    #[test]
    fn states_follow_pbs_words() {
        assert_eq!(
            pbs_state(
                "Q",
                "Not Running: Insufficient amount of resource: ncpus",
                None
            ),
            BlockState::Pending
        );
        assert_eq!(pbs_state("H", "", None), BlockState::Pending);
        assert_eq!(pbs_state("E", "", None), BlockState::Running);
        assert_eq!(pbs_state("X", "", None), BlockState::Completed);
        assert_eq!(
            pbs_state("F", "Job run at ... and finished", Some(0)),
            BlockState::Completed
        );
        assert_eq!(pbs_state("F", "", None), BlockState::Completed);
        assert_eq!(
            pbs_state("F", "", Some(-29)),
            BlockState::Failed {
                message: "pbs job killed at its walltime".into()
            }
        );
        assert_eq!(
            pbs_state("F", "Job run at ... and failed", Some(265)),
            BlockState::Failed {
                message: "pbs job killed by signal 9: Job run at ... and failed".into()
            }
        );
        assert_eq!(
            pbs_state("F", "", Some(2)),
            BlockState::Failed {
                message: "pbs job exited with status 2".into()
            }
        );
        assert_eq!(
            pbs_state("Z", "", None),
            BlockState::Unknown {
                message: "unrecognised pbs job state `Z`".into()
            }
        );
        assert_eq!(parse_qsub("\n101.pbs01\n").as_deref(), Some("101.pbs01"));
        assert_eq!(parse_qsub("qsub: would exceed queue limit\n"), None);
        assert_eq!(parse_qstat("  \n", &[]).unwrap(), vec![]);
        assert!(parse_qstat("{\"Jobs\":", &[]).is_err());
    }

    #[tokio::test]
    async fn submit_status_cancel_against_fake_commands() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let log = dir.path().join("calls.log");
        std::fs::write(dir.path().join("qstat.json"), QSTAT_JSON).unwrap();
        fake_bin(
            &bin,
            "qsub",
            &format!(
                r#"echo "qsub $*" >> {log}
if grep -q '^#PBS -q nosuch' "$1"; then echo "qsub: Unknown queue" >&2; exit 170; fi
echo "101.pbs01""#,
                log = log.display()
            ),
        );
        fake_bin(
            &bin,
            "qstat",
            &format!(
                r#"echo "qstat $*" >> {log}
cat {json}
for id in "$@"; do case "$id" in 105.pbs01) echo "qstat: Unknown Job Id 105.pbs01" >&2; rc=153;; esac; done
exit ${{rc:-0}}"#,
                log = log.display(),
                json = dir.path().join("qstat.json").display()
            ),
        );
        fake_bin(
            &bin,
            "qdel",
            &format!(
                r#"echo "qdel $*" >> {log}
echo "qdel: Job has finished 104.pbs01" >&2; exit 35"#,
                log = log.display()
            ),
        );
        let provider =
            PbsProvider::new(PbsConfig::default(), &dir.path().join("blocks")).with_bin_dir(&bin);
        assert_eq!(
            provider.submit(&spec("b1", 1, 2)).await.unwrap(),
            "101.pbs01"
        );

        let refused = PbsProvider::new(
            PbsConfig {
                queue: Some("nosuch".into()),
                ..PbsConfig::default()
            },
            &dir.path().join("blocks"),
        )
        .with_bin_dir(&bin);
        let err = refused.submit(&spec("b2", 1, 1)).await.unwrap_err();
        assert_eq!(err.to_string(), "qsub: Unknown queue");

        let jobs: Vec<JobId> = [
            "101.pbs01",
            "102.pbs01",
            "103.pbs01",
            "104.pbs01",
            "105.pbs01",
        ]
        .map(String::from)
        .to_vec();
        // 103 was killed while its worker_init still ran: what the report
        // holds so far is in the message.
        std::fs::write(
            dir.path().join("blocks/lattice-103.pbs01.worker_init.err"),
            "Waiting for the lock on /home/me/.conda/pkgs ...\n",
        )
        .unwrap();
        let states = provider.status(&jobs).await.unwrap();
        assert_eq!(states["101.pbs01"], BlockState::Running);
        assert_eq!(
            states["102.pbs01"],
            BlockState::Failed {
                message: "pbs job cannot start: Can Never Run: Insufficient amount of resource: ncpus (R: 512 A: 128 T: 128)".into()
            }
        );
        assert_eq!(
            states["103.pbs01"],
            BlockState::Failed {
                message: "pbs job killed at its walltime: Job run at Tue Nov 14 at 21:00 on (node2:ncpus=1) and failed: worker_init did not finish: Waiting for the lock on /home/me/.conda/pkgs ...".into()
            }
        );
        assert_eq!(states["104.pbs01"], BlockState::Completed);
        assert_eq!(
            states["105.pbs01"],
            BlockState::Completed,
            "gone from the history"
        );
        assert_eq!(states.len(), 5);

        provider.cancel(&jobs[3..4]).await.unwrap();
        let calls = std::fs::read_to_string(&log).unwrap();
        assert!(
            calls.contains("qstat -f -F json -x 101.pbs01 102.pbs01"),
            "{calls}"
        );
        assert!(calls.contains("qdel 104.pbs01"), "{calls}");
    }
}
