//! IBM Spectrum LSF: a generated script fed to `bsub` on stdin (its `#BSUB`
//! lines are the options), states from `bjobs -json -o '...'`, `bkill`.
//!
//! No LSF cluster can run on Lattice's test machines: the tests drive this
//! provider against fake `bsub`/`bjobs`/`bkill` scripts that print the
//! formats of the LSF 10.1 command reference (`bjobs -json`), errors included.
//!
//! This module owns `[provider] type = "lsf"` and LSF's [`BatchDialect`]
//! (its directives, commands, output formats and state names); the flow
//! that uses them is `batch`'s. It must not run commands or grow a submit,
//! status or cancel of its own: an LSF difference is a dialect value.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::batch::{
    BatchDialect, BatchProvider, BatchSettings, Cancel, Directive, Ids, JobRecord, Launch, Query,
    QueryFailure, ReasonStyle, Reply, ScriptVia, StateClass, Submit, WalltimeFormat,
};
use crate::config::{default_command_timeout, default_walltime, quoted, Render};
use crate::{BlockSpec, JobId, ProviderError};

/// `[provider] type = "lsf"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LsfConfig {
    #[serde(default)]
    pub queue: Option<String>,
    /// `#BSUB -P`.
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default = "default_walltime")]
    pub walltime: String,
    #[serde(default)]
    pub scheduler_options: Vec<String>,
    #[serde(default)]
    pub worker_init: Vec<String>,
    #[serde(default)]
    pub launcher: Option<String>,
    #[serde(default)]
    pub script_dir: Option<PathBuf>,
    #[serde(default = "default_command_timeout")]
    pub command_timeout_secs: u64,
}

impl Default for LsfConfig {
    fn default() -> Self {
        Self {
            queue: None,
            project: None,
            walltime: default_walltime(),
            scheduler_options: Vec::new(),
            worker_init: Vec::new(),
            launcher: None,
            script_dir: None,
            command_timeout_secs: default_command_timeout(),
        }
    }
}

impl LsfConfig {
    pub(crate) fn render(&self, out: &mut Render) {
        out.opt_string("Queue (`#BSUB -q`).", "queue", &self.queue, "\"normal\"");
        out.opt_string(
            "Project charged (`#BSUB -P`).",
            "project",
            &self.project,
            "\"project123\"",
        );
        out.comment(
            "Walltime of each block, HH:MM:SS (`#BSUB -W`, rounded up to minutes).",
            "walltime",
            Some(quoted(&self.walltime)),
            "",
        );
        out.list(
            "Extra lines for the script's header, verbatim.",
            "scheduler_options",
            &self.scheduler_options,
            "[\"#BSUB -alloc_flags smt4\"]",
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
            "\"jsrun --nrs {nodes} --rs_per_host 1\"",
        );
        out.opt_path(
            "Where scripts and job output go (default: the endpoint's dir + /blocks).",
            "script_dir",
            &self.script_dir,
            "\"/home/me/lattice-blocks\"",
        );
        out.comment(
            "Seconds a bsub/bjobs/bkill call may take.",
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
                ("project", self.project.clone()),
            ],
            scheduler_options: self.scheduler_options.clone(),
            launcher: self.launcher.clone(),
            script_dir: self.script_dir.clone(),
            command_timeout_secs: self.command_timeout_secs,
        }
    }
}

/// LSF's words.
static LSF: BatchDialect = BatchDialect {
    kind: "lsf",
    directive_prefix: "#BSUB",
    directives: &[
        Directive::always("-J lattice-{block_id}"),
        Directive::always("-o {output}"),
        Directive::always("-n {tasks}"),
        Directive::always("-R \"span[ptile={workers_per_node}]\""),
        Directive::always("-W {walltime}"),
        Directive::if_set("queue", "-q {queue}"),
        Directive::if_set("project", "-P {project}"),
    ],
    output_file: "lattice-{block_id}.%J.out",
    walltime: WalltimeFormat::HoursMinutes,
    preamble: "",
    job_id_var: "LSB_JOBID",
    launch: Launch::PerNode,
    // bsub reads the script's `#BSUB` lines as its options only from stdin.
    submit: Submit {
        program: "bsub",
        args: &[],
        script: ScriptVia::Stdin,
        script_suffix: "lsf",
        parse_id: parse_bsub,
    },
    // bjobs exits non-zero when some job is not found, but still prints a
    // record (with ERROR) for each.
    status: Query {
        program: "bjobs",
        args: &[
            "-json",
            "-a",
            "-o",
            "jobid stat exit_code exit_reason pend_reason",
        ],
        ids: Ids::Separate,
        failure: QueryFailure::ReadAnyway,
        parse: parse_bjobs,
    },
    // `-a` already includes finished jobs, until CLEAN_PERIOD.
    history: &[],
    cancel: Cancel {
        program: "bkill",
        args: &[],
        harmless: &["Job has already finished", "No matching job found"],
    },
    states: &[
        ("PEND", StateClass::Waiting),
        ("PSUSP", StateClass::Waiting),
        ("WAIT", StateClass::Waiting),
        ("PROV", StateClass::Waiting),
        ("RUN", StateClass::Running),
        ("USUSP", StateClass::Running),
        ("SSUSP", StateClass::Running),
        ("DONE", StateClass::Completed),
        ("EXIT", StateClass::Failed("exited")),
    ],
    never_starts: &[],
    cancelled_reasons: &["TERM_OWNER", "TERM_ADMIN"],
    reason_style: ReasonStyle::AfterColon,
    exit_word: "code",
    walltime_exit_status: None,
    signal_exit_offset: None,
};

/// `Job <1234> is submitted to queue <normal>.`
fn parse_bsub(stdout: &str) -> Option<JobId> {
    stdout.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("Job <")?;
        let (id, tail) = rest.split_once('>')?;
        tail.contains("is submitted").then(|| id.to_owned())
    })
}

#[derive(Deserialize)]
struct BjobsJson {
    #[serde(rename = "RECORDS", default)]
    records: Vec<BjobsRecord>,
}

#[derive(Deserialize)]
struct BjobsRecord {
    #[serde(rename = "JOBID")]
    jobid: Option<String>,
    #[serde(rename = "STAT", default)]
    stat: String,
    #[serde(rename = "EXIT_CODE", default)]
    exit_code: String,
    #[serde(rename = "EXIT_REASON", default)]
    exit_reason: String,
    #[serde(rename = "PEND_REASON", default)]
    pend_reason: String,
    #[serde(rename = "ERROR")]
    error: Option<String>,
}

/// `bjobs -json`: one record per id asked, with ERROR for the ones LSF does
/// not know.
fn parse_bjobs(stdout: &str, _asked: &[JobId]) -> Result<Vec<Reply>, String> {
    let answer: BjobsJson = serde_json::from_str(stdout).map_err(|e| e.to_string())?;
    Ok(answer
        .records
        .into_iter()
        .filter_map(|record| {
            let id = record.jobid?;
            Some(match record.error {
                // "Job <123> is not found": LSF forgot it (CLEAN_PERIOD
                // passed); left out, it counts as completed.
                Some(error) if error.contains("not found") => return None,
                Some(message) => Reply::Error { id, message },
                None => Reply::Job(JobRecord {
                    id,
                    state: record.stat,
                    reason: if record.exit_reason.is_empty() {
                        record.pend_reason
                    } else {
                        record.exit_reason
                    },
                    exit_status: record.exit_code.trim().parse().ok(),
                }),
            })
        })
        .collect())
}

/// The LSF provider.
#[derive(Debug)]
pub struct LsfProvider(BatchProvider);

impl LsfProvider {
    /// `default_script_dir` is used unless the config names one.
    pub fn new(config: LsfConfig, default_script_dir: &Path) -> Self {
        Self(BatchProvider::new(
            &LSF,
            config.batch_settings(),
            default_script_dir,
        ))
    }

    /// Runs `bsub` etc. from this directory instead of PATH.
    pub fn with_bin_dir(self, dir: impl Into<PathBuf>) -> Self {
        Self(self.0.with_bin_dir(dir.into()))
    }

    /// The batch script of a block; blocks of several nodes need `launcher`.
    pub fn render_script(&self, spec: &BlockSpec) -> Result<String, ProviderError> {
        self.0.render_script(spec)
    }
}

crate::batch::provider_by_batch!(LsfProvider);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::{fake_bin, spec};
    use crate::{BlockState, Provider};
    use expect_test::expect;

    /// `bjobs -json -a -o 'jobid stat exit_code exit_reason pend_reason' IDS`
    /// in LSF 10.1's shape: one record per id asked, ERROR for unknown ones.
    const BJOBS_JSON: &str = r#"{
  "COMMAND":"bjobs",
  "JOBS":5,
  "RECORDS":[
    {
      "JOBID":"5001",
      "STAT":"RUN",
      "EXIT_CODE":"",
      "EXIT_REASON":"",
      "PEND_REASON":""
    },
    {
      "JOBID":"5002",
      "STAT":"PEND",
      "EXIT_CODE":"",
      "EXIT_REASON":"",
      "PEND_REASON":"Job slot limit reached;"
    },
    {
      "JOBID":"5003",
      "STAT":"EXIT",
      "EXIT_CODE":"140",
      "EXIT_REASON":"TERM_RUNLIMIT: job killed after reaching LSF run time limit",
      "PEND_REASON":""
    },
    {
      "JOBID":"5004",
      "STAT":"EXIT",
      "EXIT_CODE":"130",
      "EXIT_REASON":"TERM_OWNER: job killed by owner",
      "PEND_REASON":""
    },
    {
      "JOBID":"5005",
      "ERROR":"Job <5005> is not found"
    }
  ]
}"#;

    #[test]
    fn script() {
        let provider = LsfProvider::new(
            LsfConfig {
                queue: Some("batch".into()),
                project: Some("bio101".into()),
                ..LsfConfig::default()
            },
            Path::new("/home/me/blocks"),
        );
        let mut spec = spec("b9", 1, 4);
        spec.walltime = Duration::from_secs(5430);
        expect![[r##"
            #!/bin/bash
            #BSUB -J lattice-b9
            #BSUB -o /home/me/blocks/lattice-b9.%J.out
            #BSUB -n 4
            #BSUB -R "span[ptile=4]"
            #BSUB -W 1:31
            #BSUB -q batch
            #BSUB -P bio101

            export LATTICE_BLOCK_ID=b9

            # (no worker_init)

            # 4 worker(s) on each of 1 node(s)
            for i in $(seq 1 4); do /opt/lattice/bin/lattice worker --dispatcher login1:9000 --capacity 1 --block-id b9 & done; wait
        "##]]
        .assert_eq(&provider.render_script(&spec).unwrap());
    }

    /// The states of `bjobs -json` records (`STAT`, `EXIT_CODE`,
    /// `EXIT_REASON`, `PEND_REASON`).
    fn lsf_state(stat: &str, exit_code: &str, exit_reason: &str, pend_reason: &str) -> BlockState {
        let json = serde_json::json!({"RECORDS": [{
            "JOBID": "1", "STAT": stat, "EXIT_CODE": exit_code,
            "EXIT_REASON": exit_reason, "PEND_REASON": pend_reason,
        }]});
        match &parse_bjobs(&json.to_string(), &[]).unwrap()[..] {
            [Reply::Job(job)] => LSF.block_state(job),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn states_follow_lsf_words() {
        assert_eq!(
            lsf_state("PEND", "", "", "Job slot limit reached;"),
            BlockState::Pending
        );
        assert_eq!(lsf_state("SSUSP", "", "", ""), BlockState::Running);
        assert_eq!(lsf_state("DONE", "0", "", ""), BlockState::Completed);
        assert_eq!(
            lsf_state("EXIT", "130", "TERM_ADMIN: job killed by root", ""),
            BlockState::Cancelled
        );
        assert_eq!(
            lsf_state("EXIT", "", "", ""),
            BlockState::Failed {
                message: "lsf job exited".into()
            }
        );
        assert_eq!(
            lsf_state("EXIT", "1", "", ""),
            BlockState::Failed {
                message: "lsf job exited with code 1".into()
            }
        );
        assert_eq!(
            lsf_state("ZOMBI", "", "", "odd"),
            BlockState::Unknown {
                message: "unrecognised lsf job state `ZOMBI`: odd".into()
            }
        );
        let errors = parse_bjobs(
            r#"{"RECORDS":[{"JOBID":"7","ERROR":"Job <7> is not found"},{"JOBID":"8","ERROR":"Permission denied"}]}"#,
            &[],
        )
        .unwrap();
        assert_eq!(
            errors,
            vec![Reply::Error {
                id: "8".into(),
                message: "Permission denied".into()
            }]
        );
        assert_eq!(
            parse_bsub("Job <5001> is submitted to queue <normal>.\n").as_deref(),
            Some("5001")
        );
        assert_eq!(parse_bsub("Job <5001> was rejected\n"), None);
    }

    #[tokio::test]
    async fn submit_status_cancel_against_fake_commands() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let log = dir.path().join("calls.log");
        std::fs::write(dir.path().join("bjobs.json"), BJOBS_JSON).unwrap();
        fake_bin(
            &bin,
            "bsub",
            &format!(
                r##"script=$(cat)
echo "bsub $*" >> {log}
case "$script" in
  *"#BSUB -q nosuch"*) echo "nosuch: No such queue. Job not submitted."; exit 255;;
esac
echo "Job <5001> is submitted to queue <normal>.""##,
                log = log.display()
            ),
        );
        fake_bin(
            &bin,
            "bjobs",
            &format!(
                r#"echo "bjobs $*" >> {log}
cat {json}
exit 255"#,
                log = log.display(),
                json = dir.path().join("bjobs.json").display()
            ),
        );
        fake_bin(
            &bin,
            "bkill",
            &format!(
                r#"echo "bkill $*" >> {log}
echo "Job <5001> is being terminated""#,
                log = log.display()
            ),
        );
        let provider =
            LsfProvider::new(LsfConfig::default(), &dir.path().join("blocks")).with_bin_dir(&bin);
        assert_eq!(provider.submit(&spec("b1", 1, 1)).await.unwrap(), "5001");
        let refused = LsfProvider::new(
            LsfConfig {
                queue: Some("nosuch".into()),
                ..LsfConfig::default()
            },
            &dir.path().join("blocks"),
        )
        .with_bin_dir(&bin);
        let err = refused.submit(&spec("b2", 1, 1)).await.unwrap_err();
        assert_eq!(err.to_string(), "nosuch: No such queue. Job not submitted.");

        let jobs: Vec<JobId> = (5001..=5005).map(|n| n.to_string()).collect();
        std::fs::write(
            dir.path().join("blocks/lattice-5003.worker_init.err"),
            "conda: environment 'sim' not found\nlattice: worker_init line 2 (`conda activate sim`) failed with exit status 1; no worker started\n",
        )
        .unwrap();
        let states = provider.status(&jobs).await.unwrap();
        assert_eq!(states["5001"], BlockState::Running);
        assert_eq!(states["5002"], BlockState::Pending);
        assert_eq!(
            states["5003"],
            BlockState::Failed {
                message: "lsf job exited with code 140: TERM_RUNLIMIT: job killed after reaching LSF run time limit: worker_init line 2 (`conda activate sim`) failed with exit status 1: conda: environment 'sim' not found".into()
            }
        );
        assert_eq!(states["5004"], BlockState::Cancelled);
        assert_eq!(states["5005"], BlockState::Completed);

        provider.cancel(&jobs[..1]).await.unwrap();
        let calls = std::fs::read_to_string(&log).unwrap();
        assert!(
            calls.contains(
                "bjobs -json -a -o jobid stat exit_code exit_reason pend_reason 5001 5002"
            ),
            "{calls}"
        );
        assert!(calls.contains("bkill 5001"), "{calls}");
    }
}
