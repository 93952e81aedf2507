//! IBM Spectrum LSF: a generated script fed to `bsub` on stdin (its `#BSUB`
//! lines are the options), states from `bjobs -json -o '...'`, `bkill`.
//!
//! No LSF cluster can run on Lattice's test machines: the tests drive this
//! provider against fake `bsub`/`bjobs`/`bkill` scripts that print the
//! formats of the LSF 10.1 command reference (`bjobs -json`), errors included.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::command::{message_of, write_script, Invocation};
use crate::config::{default_command_timeout, default_walltime, quoted, Render};
use crate::{
    add_init_reports, batch_init_report, node_launch, worker_init_script, BlockSpec, BlockState,
    InitReport, JobId, Provider, ProviderError,
};

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
}

/// The LSF provider.
#[derive(Debug)]
pub struct LsfProvider {
    config: LsfConfig,
    script_dir: PathBuf,
    bin_dir: Option<PathBuf>,
    timeout: Duration,
}

impl LsfProvider {
    pub fn new(config: LsfConfig, default_script_dir: &Path) -> Self {
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

    /// Runs `bsub` etc. from this directory instead of PATH.
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

    pub fn render_script(&self, spec: &BlockSpec) -> Result<String, ProviderError> {
        let c = &self.config;
        let minutes = spec.walltime.as_secs().div_ceil(60).max(1);
        let mut s = String::from("#!/bin/bash\n");
        let mut opt = |line: String| {
            s.push_str("#BSUB ");
            s.push_str(&line);
            s.push('\n');
        };
        opt(format!("-J lattice-{}", spec.block_id));
        opt(format!(
            "-o {}",
            self.script_dir
                .join(format!("lattice-{}.%J.out", spec.block_id))
                .display()
        ));
        opt(format!("-n {}", spec.nodes * spec.workers_per_node));
        opt(format!("-R \"span[ptile={}]\"", spec.workers_per_node));
        opt(format!("-W {}:{:02}", minutes / 60, minutes % 60));
        if let Some(queue) = &c.queue {
            opt(format!("-q {queue}"));
        }
        if let Some(project) = &c.project {
            opt(format!("-P {project}"));
        }
        for line in &c.scheduler_options {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str(&format!(
            "\nexport LATTICE_BLOCK_ID={}\n\n",
            crate::shell_quote(&spec.block_id)
        ));
        s.push_str(&worker_init_script(
            &spec.worker_init,
            InitReport::File(&batch_init_report(&self.script_dir, "LSB_JOBID")),
        ));
        s.push('\n');
        s.push_str(&node_launch(spec, c.launcher.as_deref())?);
        Ok(s)
    }
}

#[async_trait]
impl Provider for LsfProvider {
    fn kind(&self) -> &'static str {
        "lsf"
    }

    async fn submit(&self, spec: &BlockSpec) -> Result<JobId, ProviderError> {
        let script = self.render_script(spec)?;
        // Kept for the user to read; bsub itself reads the script on stdin.
        write_script(
            &self.script_dir,
            &format!("lattice-{}.lsf", spec.block_id),
            &script,
        )
        .await?;
        let bsub = self.command("bsub").stdin(script);
        let output = bsub.output().await?;
        // `Job <1234> is submitted to queue <normal>.`
        let id = output.stdout.lines().find_map(|line| {
            let rest = line.trim().strip_prefix("Job <")?;
            let (id, tail) = rest.split_once('>')?;
            tail.contains("is submitted").then(|| id.to_owned())
        });
        match id {
            Some(id) if output.success => Ok(id),
            _ if !output.success => Err(ProviderError::Refused(message_of(&output))),
            _ => Err(bsub
                .parse_error(format!("no job id in {:?}", output.stdout))
                .into()),
        }
    }

    async fn status(&self, jobs: &[JobId]) -> Result<HashMap<JobId, BlockState>, ProviderError> {
        if jobs.is_empty() {
            return Ok(HashMap::new());
        }
        let bjobs = self
            .command("bjobs")
            .args([
                "-json",
                "-a",
                "-o",
                "jobid stat exit_code exit_reason pend_reason",
            ])
            .args(jobs.iter().cloned());
        // bjobs exits non-zero when some job is not found, but still prints
        // a record (with ERROR) for each: read the JSON either way.
        let output = bjobs.output().await?;
        let answer: BjobsJson = match serde_json::from_str(&output.stdout) {
            Ok(answer) => answer,
            Err(_) if !output.success => return Err(bjobs.failed(&output).into()),
            Err(e) => return Err(bjobs.parse_error(e).into()),
        };
        let mut states = HashMap::new();
        for record in answer.records {
            let Some(id) = record.jobid.clone() else {
                continue;
            };
            let state = match &record.error {
                // "Job <123> is not found": LSF forgot it (CLEAN_PERIOD passed).
                Some(error) if error.contains("not found") => BlockState::Completed,
                Some(error) => BlockState::Unknown {
                    message: error.clone(),
                },
                None => record.state(),
            };
            states.insert(id, state);
        }
        for job in jobs {
            states.entry(job.clone()).or_insert(BlockState::Completed);
        }
        states.retain(|id, _| jobs.contains(id));
        add_init_reports(&self.script_dir, &mut states).await;
        Ok(states)
    }

    async fn cancel(&self, jobs: &[JobId]) -> Result<(), ProviderError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let bkill = self.command("bkill").args(jobs.iter().cloned());
        let output = bkill.output().await?;
        let harmless = output.stderr.lines().all(|l| {
            l.contains("Job has already finished")
                || l.contains("No matching job found")
                || l.trim().is_empty()
        });
        if !output.success && !harmless {
            return Err(bkill.failed(&output).into());
        }
        Ok(())
    }
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

impl BjobsRecord {
    fn state(&self) -> BlockState {
        match self.stat.as_str() {
            "PEND" | "PSUSP" | "WAIT" | "PROV" => BlockState::Pending,
            "RUN" | "USUSP" | "SSUSP" => BlockState::Running,
            "DONE" => BlockState::Completed,
            "EXIT"
                if self.exit_reason.starts_with("TERM_OWNER")
                    || self.exit_reason.starts_with("TERM_ADMIN") =>
            {
                BlockState::Cancelled
            }
            "EXIT" => {
                let mut message = "lsf job exited".to_owned();
                if !self.exit_code.is_empty() {
                    message.push_str(&format!(" with code {}", self.exit_code));
                }
                if !self.exit_reason.is_empty() {
                    message.push_str(&format!(": {}", self.exit_reason));
                }
                BlockState::Failed { message }
            }
            other => BlockState::Unknown {
                message: format!("lsf job state `{other}` {}", self.pend_reason.trim())
                    .trim()
                    .to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fake_bin, spec};
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
