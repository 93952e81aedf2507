//! Running scheduler commands with `tokio::process` (never on an async
//! thread's time), with a timeout and their output captured.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// A scheduler command that could not run, timed out, failed, or printed
/// something unreadable.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{program}`: {source} (is it installed and on PATH?)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot read the output of `{command}`: {detail}")]
    Parse { command: String, detail: String },
}

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) success: bool,
    pub(crate) status: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// One invocation of a scheduler command.
#[derive(Debug)]
pub(crate) struct Invocation {
    program: PathBuf,
    args: Vec<String>,
    stdin: Option<String>,
    timeout: Duration,
}

impl Invocation {
    pub(crate) fn new(program: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
            timeout,
        }
    }

    pub(crate) fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub(crate) fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn stdin(mut self, text: impl Into<String>) -> Self {
        self.stdin = Some(text.into());
        self
    }

    /// `program arg ...` for messages.
    pub(crate) fn display(&self) -> String {
        let mut words = vec![self.program.display().to_string()];
        words.extend(self.args.iter().map(|a| crate::shell_quote(a)));
        words.join(" ")
    }

    /// Runs it to the end; a non-zero exit is not an error here.
    pub(crate) async fn output(&self) -> Result<Output, CommandError> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| CommandError::Spawn {
            program: self.program.display().to_string(),
            source,
        })?;
        if let (Some(text), Some(mut pipe)) = (&self.stdin, child.stdin.take()) {
            let text = text.clone();
            tokio::spawn(async move {
                let _ = pipe.write_all(text.as_bytes()).await;
                let _ = pipe.shutdown().await;
            });
        }
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| CommandError::Timeout {
                command: self.display(),
                timeout: self.timeout,
            })?
            .map_err(|source| CommandError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        tracing::debug!(command = %self.display(), status = %output.status, "scheduler command ran");
        Ok(Output {
            success: output.status.success(),
            status: output.status.to_string(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }

    pub(crate) fn failed(&self, output: &Output) -> CommandError {
        CommandError::Failed {
            command: self.display(),
            status: output.status.clone(),
            stderr: if output.stderr.is_empty() {
                output.stdout.trim().to_owned()
            } else {
                output.stderr.clone()
            },
        }
    }

    pub(crate) fn parse_error(&self, detail: impl std::fmt::Display) -> CommandError {
        CommandError::Parse {
            command: self.display(),
            detail: detail.to_string(),
        }
    }
}

/// The scheduler's message: stderr, else stdout (trimmed), else the status.
pub(crate) fn message_of(output: &Output) -> String {
    if !output.stderr.is_empty() {
        output.stderr.clone()
    } else if !output.stdout.trim().is_empty() {
        output.stdout.trim().to_owned()
    } else {
        format!("exited with {}", output.status)
    }
}

/// Writes a batch script where the scheduler (and a curious user) can read it.
pub(crate) async fn write_script(
    dir: &std::path::Path,
    name: &str,
    text: &str,
) -> Result<PathBuf, crate::ProviderError> {
    let io = |path: &std::path::Path, source| crate::ProviderError::Io {
        path: path.display().to_string(),
        source,
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| io(dir, e))?;
    let path = dir.join(name);
    tokio::fs::write(&path, text)
        .await
        .map_err(|e| io(&path, e))?;
    Ok(path)
}
