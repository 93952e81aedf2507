//! The `python` kind: a callable serialized by the Python SDK, run by a
//! persistent interpreter (`PYTHON -m lattice.worker`, shipped in
//! `sdk/python`) that this runtime talks to over pipes.
//!
//! Cost: [`PythonRuntime`] is a cheap handle (clones share one pool). An
//! interpreter is started on first use (tens of milliseconds: Python start
//! plus `msgpack` and `cloudpickle` imports) and then kept: each task borrows
//! one from the pool, so concurrent tasks get their own interpreters and the
//! pool grows to the worker's concurrency; at most
//! [`PythonRuntime::max_idle`] are kept idle. A call costs one request and
//! one response on the pipes (tens of microseconds for a no-op).
//!
//! Protocol (both directions): a 4-byte big-endian length, then a
//! MessagePack map; see `sdk/python/lattice/worker.py` for the fields. The
//! function payload is sent once per interpreter (the interpreter caches the
//! deserialized callable by function id, and answers `need_function` if it
//! evicted it). Arguments and results stay base64 end to end: this side
//! never decodes them.
//!
//! Failures are task errors, never a crashed worker: a payload or arguments
//! that do not deserialize, a return value that does not pickle or is over
//! [`PythonRuntime::max_result_bytes`], an interpreter that dies in the
//! middle of a call (it is replaced), a walltime that expires (the
//! interpreter's process group is killed and a fresh one started), a
//! `python_version` mismatch between the submitter and this interpreter for
//! pickled functions (one sentence naming both versions; source functions
//! only get a warning on stderr).
//!
//! Isolation: none beyond the process. The interpreter runs as the worker's
//! user, in the worker's working directory, with the worker's environment
//! plus [`PythonRuntime::env`]; a function may change interpreter state that
//! later calls of other functions see (imports, globals of modules).

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Invocation, Outcome, Status};
use chrono::Utc;
use lattice_protocol::compute::{FunctionSpec, RemoteException, TaskResult, PYTHON_ARGS_KEY};
use lattice_protocol::framing::{self, MAX_FRAME_BYTES};
use lattice_protocol::FunctionId;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::output::DEFAULT_OUTPUT_TAIL_BYTES;

/// Environment variable naming the interpreter when [`PythonRuntime::python`]
/// is left at its default.
pub const PYTHON_ENV: &str = "LATTICE_PYTHON";

/// Largest return value (pickled) by default; the service's inline limit.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 10_000_000;

/// Idle interpreters kept by default.
pub const DEFAULT_MAX_IDLE: usize = 4;

/// How long a new interpreter may take to say hello.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Lines of an interpreter's own stderr kept for error messages.
const STDERR_LINES_KEPT: usize = 20;

/// Functions remembered as sent to one interpreter before the set is reset.
const LOADED_SET_LIMIT: usize = 4096;

/// Runs `python` functions. Cheap to clone; long-lived interpreters are
/// shared by clones.
#[derive(Clone)]
pub struct PythonRuntime {
    /// The interpreter to start (e.g. a conda env's `python`); it must be
    /// able to import `lattice.worker` (`pip install` the SDK into it)
    /// [default: `$LATTICE_PYTHON`, else `python3`].
    pub python: PathBuf,
    /// Extra environment of the interpreters (e.g. `PYTHONPATH`).
    pub env: Vec<(OsString, OsString)>,
    /// Idle interpreters kept for the next tasks [default: 4].
    pub max_idle: usize,
    /// Largest pickled return value; larger ones fail the task with
    /// `result too large: ...` [default: 10 MB].
    pub max_result_bytes: usize,
    /// Characters kept from the end of a call's stdout, and of its stderr.
    pub output_tail_bytes: usize,
    pool: Arc<Pool>,
}

impl Default for PythonRuntime {
    fn default() -> Self {
        let python = std::env::var_os(PYTHON_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("python3"));
        Self::new(python)
    }
}

impl std::fmt::Debug for PythonRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonRuntime")
            .field("python", &self.python)
            .field("env", &self.env)
            .field("max_idle", &self.max_idle)
            .field("max_result_bytes", &self.max_result_bytes)
            .field("output_tail_bytes", &self.output_tail_bytes)
            .field("idle_interpreters", &self.idle_interpreters())
            .finish()
    }
}

#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<Interpreter>>,
    next_request: AtomicU64,
}

impl PythonRuntime {
    /// A runtime starting `python` (no interpreter is started yet).
    pub fn new(python: impl Into<PathBuf>) -> Self {
        Self {
            python: python.into(),
            env: Vec::new(),
            max_idle: DEFAULT_MAX_IDLE,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            output_tail_bytes: DEFAULT_OUTPUT_TAIL_BYTES,
            pool: Arc::default(),
        }
    }

    /// Interpreters waiting for a task.
    pub fn idle_interpreters(&self) -> usize {
        self.pool.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }

    /// Starts interpreters until `count` are idle, so that the first tasks
    /// do not pay for Python's start. Errors are the start error's text.
    pub async fn prewarm(&self, count: usize) -> Result<(), String> {
        while self.idle_interpreters() < count.min(self.max_idle) {
            let interpreter = self.spawn().await?;
            self.give_back(interpreter);
        }
        Ok(())
    }

    /// Runs `task` until it ends or `cancel` completes (`None`: cancelled;
    /// the interpreter running it is killed and replaced).
    pub async fn run_cancellable(
        &self,
        task: &Invocation,
        cancel: impl Future<Output = ()>,
    ) -> Option<Outcome> {
        let started_at = Utc::now();
        let fail = |error: String| {
            Some(Outcome {
                status: Status::Failed,
                result: None,
                error: Some(error),
                started_at,
                finished_at: Utc::now(),
            })
        };
        let FunctionSpec::Python {
            payload,
            serializer,
            python_version,
            entry_point,
        } = &task.spec
        else {
            return fail(format!(
                "the python runtime cannot run a {} function",
                task.spec.kind()
            ));
        };
        let args = match python_args(task) {
            Ok(args) => args,
            Err(e) => return fail(e),
        };
        let call = Call {
            task,
            payload,
            serializer,
            entry_point: entry_point.as_deref(),
            args,
        };

        // A dead idle interpreter is noticed when the request cannot be
        // written; the task was not started then, so try a fresh one.
        tokio::pin!(cancel);
        let mut attempts = 0;
        let (mut interpreter, response) = loop {
            attempts += 1;
            let mut interpreter = match self.take().await {
                Ok(interpreter) => interpreter,
                Err(e) => return fail(e),
            };
            let mut warning = None;
            if python_version != &interpreter.python_version {
                let mismatch = version_mismatch(python_version, &interpreter);
                if serializer != "source" {
                    self.give_back(interpreter);
                    return fail(mismatch);
                }
                warning = Some(format!(
                    "lattice: warning: this function was written under Python {python_version} and runs on Python {} here\n",
                    interpreter.python_version
                ));
            }
            match self
                .exchange(&mut interpreter, &call, task.walltime_secs, cancel.as_mut())
                .await
            {
                Exchange::Response(mut response) => {
                    if let Some(warning) = warning {
                        let stderr = response.get("stderr").and_then(Value::as_str).unwrap_or("");
                        response["stderr"] = Value::String(format!("{warning}{stderr}"));
                    }
                    break (interpreter, response);
                }
                Exchange::NotSent(e) if attempts < 2 => {
                    tracing::debug!(task_id = %task.task_id, "idle python interpreter was gone ({e}); starting another");
                    continue;
                }
                Exchange::NotSent(e) => {
                    return fail(format!(
                        "cannot send the task to the Python interpreter: {e}"
                    ))
                }
                Exchange::Cancelled => {
                    self.replace_in_background();
                    return None;
                }
                Exchange::Timeout => {
                    self.replace_in_background();
                    return fail(format!(
                        "timeout: exceeded walltime of {} s (the Python interpreter was killed and restarted)",
                        task.walltime_secs
                    ));
                }
                Exchange::Died(e) => {
                    let detail = interpreter.death(e).await;
                    self.replace_in_background();
                    return fail(detail);
                }
            }
        };
        interpreter.tasks_run += 1;
        let outcome = outcome_of(started_at, response);
        self.give_back(interpreter);
        Some(outcome)
    }

    async fn take(&self) -> Result<Interpreter, String> {
        let idle = self.pool.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(interpreter) => Ok(interpreter),
            None => self.spawn().await,
        }
    }

    fn give_back(&self, interpreter: Interpreter) {
        if let Ok(mut idle) = self.pool.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(interpreter);
            }
        }
    }

    /// After a kill, a fresh interpreter is started at once so the next
    /// task does not wait for Python to start.
    fn replace_in_background(&self) {
        let runtime = self.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if runtime.idle_interpreters() < runtime.max_idle {
                    match runtime.spawn().await {
                        Ok(interpreter) => runtime.give_back(interpreter),
                        Err(e) => tracing::warn!("cannot restart a python interpreter: {e}"),
                    }
                }
            });
        }
    }

    async fn spawn(&self) -> Result<Interpreter, String> {
        let what = format!("{} -m lattice.worker", self.python.display());
        let mut command = tokio::process::Command::new(&self.python);
        command
            .arg("-u")
            .arg("-m")
            .arg("lattice.worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the Python worker `{what}`: {e}"))?;
        let pid = child.id().map(|pid| pid as libc::pid_t);
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout =
            BufReader::with_capacity(64 * 1024, child.stdout.take().expect("stdout is piped"));
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(drain_stderr(stderr, stderr_tail.clone(), pid.unwrap_or(0)));
        }
        let mut interpreter = Interpreter {
            child,
            pgid: pid,
            stdin,
            stdout,
            stderr_tail,
            python_version: String::new(),
            executable: self.python.display().to_string(),
            loaded: HashSet::new(),
            tasks_run: 0,
        };
        let hello = match tokio::time::timeout(
            STARTUP_TIMEOUT,
            read_message(&mut interpreter.stdout),
        )
        .await
        {
            Ok(Ok(hello)) => hello,
            Ok(Err(e)) => {
                let detail = interpreter.death(e).await;
                return Err(format!(
                    "cannot start the Python worker `{what}` ({detail}); install the Lattice SDK into that Python (`pip install lattice`, from sdk/python) or set the endpoint's python executable"
                ));
            }
            Err(_) => {
                return Err(format!(
                    "the Python worker `{what}` did not start within {} s",
                    STARTUP_TIMEOUT.as_secs()
                ))
            }
        };
        interpreter.python_version = hello
            .get("python_version")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        if let Some(executable) = hello.get("executable").and_then(Value::as_str) {
            interpreter.executable = executable.to_owned();
        }
        tracing::debug!(pid = ?interpreter.pgid, python_version = %interpreter.python_version, executable = %interpreter.executable, "python interpreter started");
        Ok(interpreter)
    }

    async fn exchange(
        &self,
        interpreter: &mut Interpreter,
        call: &Call<'_>,
        walltime_secs: u32,
        cancel: impl Future<Output = ()>,
    ) -> Exchange {
        let function_id = call.task.function_id;
        let mut with_payload = !interpreter.loaded.contains(&function_id);
        let request_id = self.pool.next_request.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = interpreter
            .send(&self.request(call, request_id, with_payload))
            .await
        {
            return Exchange::NotSent(e);
        }
        let walltime = async {
            match walltime_secs {
                0 => std::future::pending().await,
                secs => tokio::time::sleep(Duration::from_secs(secs.into())).await,
            }
        };
        tokio::pin!(walltime);
        tokio::pin!(cancel);
        loop {
            let response = tokio::select! {
                response = read_message(&mut interpreter.stdout) => response,
                () = &mut walltime => return Exchange::Timeout,
                () = &mut cancel => return Exchange::Cancelled,
            };
            let response = match response {
                Ok(response) => response,
                Err(e) => return Exchange::Died(e),
            };
            if response.get("id").and_then(Value::as_u64) != Some(request_id) {
                return Exchange::Died("the interpreter answered another request".into());
            }
            match response.get("status").and_then(Value::as_str) {
                Some("need_function") if !with_payload => {
                    with_payload = true;
                    if let Err(e) = interpreter
                        .send(&self.request(call, request_id, true))
                        .await
                    {
                        return Exchange::Died(e);
                    }
                }
                _ => {
                    if interpreter.loaded.len() >= LOADED_SET_LIMIT {
                        interpreter.loaded.clear();
                    }
                    interpreter.loaded.insert(function_id);
                    return Exchange::Response(response);
                }
            }
        }
    }

    fn request(&self, call: &Call<'_>, id: u64, with_payload: bool) -> Value {
        json!({
            "id": id,
            "task_id": call.task.task_id.to_string(),
            "function_id": call.task.function_id.to_string(),
            "payload": if with_payload { Some(call.payload) } else { None },
            "serializer": call.serializer,
            "entry_point": call.entry_point,
            "args": call.args,
            "max_result_bytes": self.max_result_bytes,
            "output_tail_bytes": self.output_tail_bytes,
        })
    }
}

struct Call<'a> {
    task: &'a Invocation,
    payload: &'a str,
    serializer: &'a str,
    entry_point: Option<&'a str>,
    args: Option<&'a str>,
}

enum Exchange {
    Response(Value),
    /// The request could not be written: the interpreter was already gone.
    NotSent(String),
    /// The interpreter died (or broke the protocol) during the call.
    Died(String),
    Timeout,
    Cancelled,
}

/// One live `python -m lattice.worker` process.
struct Interpreter {
    child: Child,
    /// The interpreter leads its own process group (killed as a whole).
    pgid: Option<libc::pid_t>,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// `major.minor` reported by the interpreter.
    python_version: String,
    executable: String,
    /// Functions whose payload this interpreter was sent.
    loaded: HashSet<FunctionId>,
    tasks_run: u64,
}

impl Drop for Interpreter {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: killpg only sends a signal; an absent group is ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Interpreter {
    async fn send(&mut self, message: &Value) -> Result<(), String> {
        let body = framing::encode(message).map_err(|e| e.to_string())?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        self.stdin
            .write_all(&frame)
            .await
            .map_err(|e| e.to_string())?;
        self.stdin.flush().await.map_err(|e| e.to_string())
    }

    /// Why the interpreter stopped answering, in one message; kills it.
    async fn death(&mut self, cause: String) -> String {
        if let Some(pgid) = self.pgid {
            // SAFETY: as in Drop.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        // Let the stderr drain catch the last lines.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stderr: Vec<String> = self
            .stderr_tail
            .lock()
            .map(|tail| tail.iter().cloned().collect())
            .unwrap_or_default();
        let how = match status {
            Ok(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(code), _) => format!("exited with status {code}"),
                    (None, Some(signal)) => format!("was killed by signal {signal}"),
                    _ => "ended".to_owned(),
                }
            }
            _ => format!("stopped answering ({cause})"),
        };
        let mut message = format!(
            "the Python interpreter ({}) {how} while running the task; it was restarted",
            self.executable
        );
        if let Some(last) = stderr.iter().rev().find(|l| !l.trim().is_empty()) {
            message.push_str(&format!("; its last stderr line: {}", last.trim()));
        }
        message
    }
}

async fn drain_stderr(
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    pid: libc::pid_t,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(pid, "python: {line}");
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == STDERR_LINES_KEPT {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

async fn read_message(stdout: &mut BufReader<ChildStdout>) -> Result<Value, String> {
    let mut header = [0u8; 4];
    stdout
        .read_exact(&mut header)
        .await
        .map_err(|e| format!("reading from the interpreter: {e}"))?;
    let size = u32::from_be_bytes(header) as usize;
    if size > MAX_FRAME_BYTES {
        return Err(format!(
            "the interpreter sent a message of {size} bytes, over the limit of {MAX_FRAME_BYTES}"
        ));
    }
    let mut body = vec![0u8; size];
    stdout
        .read_exact(&mut body)
        .await
        .map_err(|e| format!("reading from the interpreter: {e}"))?;
    framing::decode(&body).map_err(|e| format!("the interpreter sent a malformed message: {e}"))
}

/// The task's pickled arguments, if any.
fn python_args(task: &Invocation) -> Result<Option<&str>, String> {
    if let Some(key) = task.args.keys().find(|k| k.as_str() != PYTHON_ARGS_KEY) {
        return Err(format!(
            "unknown argument `{key}`: python functions take their arguments under `{PYTHON_ARGS_KEY}` (as the Lattice Python SDK writes them)"
        ));
    }
    match task.args.get(PYTHON_ARGS_KEY) {
        None => Ok(None),
        Some(value) => value.as_str().map(Some).ok_or_else(|| {
            format!("`{PYTHON_ARGS_KEY}` must be a string (base64 of the pickled arguments)")
        }),
    }
}

fn version_mismatch(submitted: &str, interpreter: &Interpreter) -> String {
    format!(
        "python version mismatch: this function was serialized by Python {submitted} but this endpoint runs Python {} ({}); use the same major.minor version on both sides or register the function as source",
        interpreter.python_version, interpreter.executable
    )
}

fn outcome_of(started_at: chrono::DateTime<Utc>, response: Value) -> Outcome {
    let text = |key: &str| {
        response
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let mut result = TaskResult {
        stdout: text("stdout"),
        stderr: text("stderr"),
        returncode: None,
        value: None,
        exception: None,
    };
    let (status, error) = match response.get("status").and_then(Value::as_str) {
        Some("ok") => {
            result.value = Some(text("value"));
            (Status::Success, None)
        }
        Some("exception") => {
            let exception = response.get("exception").cloned().unwrap_or(Value::Null);
            let field = |key: &str| {
                exception
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let exception = RemoteException {
                type_name: field("type_name"),
                message: field("message"),
                traceback: field("traceback"),
                payload: exception
                    .get("payload")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            };
            let first_line = exception.message.lines().next().unwrap_or("");
            let mut error = if first_line.is_empty() {
                exception.type_name.clone()
            } else {
                format!("{}: {first_line}", exception.type_name)
            };
            if error.len() > 500 {
                let mut end = 500;
                while !error.is_char_boundary(end) {
                    end -= 1;
                }
                error.truncate(end);
                error.push('…');
            }
            result.exception = Some(exception);
            (Status::Failed, Some(error))
        }
        Some("error") => (Status::Failed, Some(text("error"))),
        other => (
            Status::Failed,
            Some(format!(
                "the Python interpreter sent an unexpected answer ({})",
                other.unwrap_or("no status")
            )),
        ),
    };
    Outcome {
        status,
        result: Some(result),
        error,
        started_at,
        finished_at: Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_protocol::compute::TaskArgs;
    use lattice_protocol::TaskId;
    use std::path::Path;

    /// An interpreter that can run `lattice.worker` from this repository's
    /// `sdk/python`, or `None` (the test is then skipped, or fails when
    /// `LATTICE_REQUIRE_SERVICES=1`).
    fn runtime(test: &str) -> Option<PythonRuntime> {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/python");
        let candidates: Vec<PathBuf> = std::env::var_os(PYTHON_ENV)
            .map(PathBuf::from)
            .into_iter()
            .chain([
                PathBuf::from("/var/cache/lattice/venv/bin/python"),
                PathBuf::from("python3"),
            ])
            .collect();
        for python in candidates {
            let ok = std::process::Command::new(&python)
                .args(["-c", "import msgpack, cloudpickle"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                let mut runtime = PythonRuntime::new(python);
                runtime
                    .env
                    .push(("PYTHONPATH".into(), sdk.into_os_string()));
                return Some(runtime);
            }
        }
        let reason =
            "no python with msgpack and cloudpickle (run .ci/python.sh or set LATTICE_PYTHON)";
        if std::env::var("LATTICE_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("{test}: {reason}");
        }
        eprintln!("SKIPPED {test}: {reason}");
        None
    }

    /// Runs Python code in the test's interpreter and returns its stdout.
    fn python_output(runtime: &PythonRuntime, code: &str) -> String {
        let mut command = std::process::Command::new(&runtime.python);
        command.args(["-c", code]);
        for (k, v) in &runtime.env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn interpreter_version(runtime: &PythonRuntime) -> String {
        python_output(runtime, "import sys; print('%d.%d' % sys.version_info[:2])")
    }

    fn b64(text: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    /// A source function (version-independent) with pickled args.
    fn source_task(
        runtime: &PythonRuntime,
        source: &str,
        entry: &str,
        args_expr: &str,
    ) -> Invocation {
        let args = python_output(
            runtime,
            &format!("from lattice import serialize; a, k = {args_expr}; print(serialize.serialize_args(a, k))"),
        );
        let mut map = TaskArgs::new();
        map.insert(PYTHON_ARGS_KEY.into(), Value::String(args));
        Invocation {
            task_id: TaskId::new(),
            function_id: FunctionId::new(),
            spec: FunctionSpec::Python {
                payload: b64(source),
                serializer: "source".into(),
                python_version: interpreter_version(runtime),
                entry_point: Some(entry.into()),
            },
            args: map,
            walltime_secs: 30,
        }
    }

    fn value_repr(runtime: &PythonRuntime, outcome: &Outcome) -> String {
        let value = outcome.result.as_ref().unwrap().value.clone().unwrap();
        python_output(
            runtime,
            &format!("from lattice import serialize; print(repr(serialize.deserialize_value('{value}')))"),
        )
    }

    async fn run(runtime: &PythonRuntime, task: &Invocation) -> Outcome {
        runtime
            .run_cancellable(task, std::future::pending())
            .await
            .expect("not cancelled")
    }

    #[tokio::test]
    async fn runs_a_function_with_args_and_captures_its_output() {
        let Some(rt) = runtime("runs_a_function_with_args_and_captures_its_output") else {
            return;
        };
        let task = source_task(
            &rt,
            "def add(a, b=1):\n    print('adding', a, b)\n    import sys\n    print('warn', file=sys.stderr)\n    return a + b\n",
            "add",
            "(2,), {'b': 40}",
        );
        let outcome = run(&rt, &task).await;
        assert_eq!(outcome.status, Status::Success, "{outcome:?}");
        let result = outcome.result.as_ref().unwrap();
        assert_eq!(result.stdout, "adding 2 40\n");
        assert_eq!(result.stderr, "warn\n");
        assert_eq!(value_repr(&rt, &outcome), "42");

        // The same interpreter serves the next task (no start per task).
        let pid = source_task(
            &rt,
            "def pid():\n    import os\n    return os.getpid()\n",
            "pid",
            "(), {}",
        );
        let first = value_repr(&rt, &run(&rt, &pid).await);
        let second = value_repr(&rt, &run(&rt, &pid).await);
        assert_eq!(first, second);
        assert_eq!(rt.idle_interpreters(), 1);
    }

    #[tokio::test]
    async fn an_exception_comes_back_with_type_message_traceback_and_pickle() {
        let Some(rt) = runtime("an_exception_comes_back_with_type_message_traceback_and_pickle")
        else {
            return;
        };
        let task = source_task(
            &rt,
            "def boom(x):\n    print('before')\n    raise ValueError(f'bad value {x}')\n",
            "boom",
            "(7,), {}",
        );
        let outcome = run(&rt, &task).await;
        assert_eq!(outcome.status, Status::Failed);
        assert_eq!(outcome.error.as_deref(), Some("ValueError: bad value 7"));
        let result = outcome.result.unwrap();
        assert_eq!(result.stdout, "before\n");
        let exception = result.exception.unwrap();
        assert_eq!(exception.type_name, "ValueError");
        assert_eq!(exception.message, "bad value 7");
        assert!(
            exception.traceback.contains("in boom"),
            "{}",
            exception.traceback
        );
        assert!(
            !exception.traceback.contains("worker.py"),
            "{}",
            exception.traceback
        );
        assert!(exception.payload.is_some());
    }

    #[tokio::test]
    async fn a_python_version_mismatch_is_one_clear_sentence() {
        let Some(rt) = runtime("a_python_version_mismatch_is_one_clear_sentence") else {
            return;
        };
        let mut task = source_task(&rt, "def one():\n    return 1\n", "one", "(), {}");
        let here = interpreter_version(&rt);
        let FunctionSpec::Python { python_version, .. } = &mut task.spec else {
            unreachable!()
        };
        *python_version = "2.7".into();
        // Source: runs, with a warning.
        let outcome = run(&rt, &task).await;
        assert_eq!(outcome.status, Status::Success, "{outcome:?}");
        assert!(outcome.result.unwrap().stderr.starts_with(&format!(
            "lattice: warning: this function was written under Python 2.7 and runs on Python {here} here"
        )));
        // Pickled: refused before deserializing.
        let FunctionSpec::Python { serializer, .. } = &mut task.spec else {
            unreachable!()
        };
        *serializer = "cloudpickle".into();
        let outcome = run(&rt, &task).await;
        let error = outcome.error.unwrap();
        assert!(
            error.starts_with(&format!(
                "python version mismatch: this function was serialized by Python 2.7 but this endpoint runs Python {here} ("
            )),
            "{error}"
        );
        assert!(error.ends_with(
            "use the same major.minor version on both sides or register the function as source"
        ));
    }

    #[tokio::test]
    async fn walltime_kills_and_restarts_the_interpreter() {
        let Some(rt) = runtime("walltime_kills_and_restarts_the_interpreter") else {
            return;
        };
        let mut task = source_task(
            &rt,
            "def slow():\n    import time\n    time.sleep(60)\n",
            "slow",
            "(), {}",
        );
        task.walltime_secs = 1;
        let outcome = run(&rt, &task).await;
        assert_eq!(outcome.status, Status::Failed);
        assert!(outcome
            .error
            .unwrap()
            .starts_with("timeout: exceeded walltime of 1 s"));
        let next = source_task(&rt, "def one():\n    return 1\n", "one", "(), {}");
        let outcome = run(&rt, &next).await;
        assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    }

    #[tokio::test]
    async fn a_crashed_interpreter_fails_its_task_and_is_replaced() {
        let Some(rt) = runtime("a_crashed_interpreter_fails_its_task_and_is_replaced") else {
            return;
        };
        let task = source_task(
            &rt,
            "def die():\n    import os\n    os._exit(3)\n",
            "die",
            "(), {}",
        );
        let outcome = run(&rt, &task).await;
        assert_eq!(outcome.status, Status::Failed);
        let error = outcome.error.unwrap();
        assert!(
            error.contains("exited with status 3 while running the task; it was restarted"),
            "{error}"
        );
        let next = source_task(&rt, "def one():\n    return 1\n", "one", "(), {}");
        assert_eq!(run(&rt, &next).await.status, Status::Success);
    }

    #[tokio::test]
    async fn bad_payloads_and_arguments_are_task_errors() {
        let Some(rt) = runtime("bad_payloads_and_arguments_are_task_errors") else {
            return;
        };
        let mut task = source_task(&rt, "def one():\n    return 1\n", "one", "(), {}");
        task.spec = FunctionSpec::Python {
            payload: b64("not a pickle"),
            serializer: "cloudpickle".into(),
            python_version: interpreter_version(&rt),
            entry_point: Some("f".into()),
        };
        let error = run(&rt, &task).await.error.unwrap();
        assert!(
            error.starts_with("cannot load f (cloudpickle): UnpicklingError"),
            "{error}"
        );

        let mut task = source_task(&rt, "def one():\n    return 1\n", "one", "(), {}");
        task.args
            .insert(PYTHON_ARGS_KEY.into(), Value::String(b64("garbage")));
        let error = run(&rt, &task).await.error.unwrap();
        assert!(
            error.starts_with("cannot deserialize the arguments of one"),
            "{error}"
        );

        task.args.insert("x".into(), Value::String("1".into()));
        let error = run(&rt, &task).await.error.unwrap();
        assert!(error.starts_with("unknown argument `x`"), "{error}");

        let unpicklable = source_task(
            &rt,
            "def gen():\n    return (i for i in range(3))\n",
            "gen",
            "(), {}",
        );
        let error = run(&rt, &unpicklable).await.error.unwrap();
        assert!(
            error.starts_with("cannot serialize the return value of gen (generator)"),
            "{error}"
        );

        let mut small = rt.clone();
        small.max_result_bytes = 1000;
        let big = source_task(&rt, "def big():\n    return 'x' * 5000\n", "big", "(), {}");
        let error = run(&small, &big).await.error.unwrap();
        assert!(error.starts_with("result too large:"), "{error}");

        // The worker still works after all that.
        let next = source_task(&rt, "def one():\n    return 1\n", "one", "(), {}");
        assert_eq!(run(&rt, &next).await.status, Status::Success);
    }

    #[tokio::test]
    async fn a_missing_interpreter_is_a_clear_error() {
        let rt = PythonRuntime::new("/nonexistent/python3");
        let task = Invocation {
            task_id: TaskId::new(),
            function_id: FunctionId::new(),
            spec: FunctionSpec::Python {
                payload: b64("def f():\n    pass\n"),
                serializer: "source".into(),
                python_version: "3.11".into(),
                entry_point: Some("f".into()),
            },
            args: TaskArgs::new(),
            walltime_secs: 10,
        };
        let error = run(&rt, &task).await.error.unwrap();
        assert!(
            error.starts_with(
                "cannot start the Python worker `/nonexistent/python3 -m lattice.worker`"
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn cancel_kills_the_call_and_reports_nothing() {
        let Some(rt) = runtime("cancel_kills_the_call_and_reports_nothing") else {
            return;
        };
        let task = source_task(
            &rt,
            "def slow():\n    import time\n    time.sleep(60)\n",
            "slow",
            "(), {}",
        );
        let outcome = rt
            .run_cancellable(&task, tokio::time::sleep(Duration::from_millis(300)))
            .await;
        assert!(outcome.is_none());
    }

    /// Per-invocation overhead of a no-op in the worker (not a pass/fail
    /// check): `cargo test --release -p lattice-function-runtime python_overhead -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore]
    async fn python_overhead() {
        let Some(rt) = runtime("python_overhead") else {
            return;
        };
        let task = source_task(&rt, "def noop(x):\n    return x\n", "noop", "(1,), {}");
        for _ in 0..200 {
            run(&rt, &task).await;
        }
        let mut samples = Vec::new();
        for _ in 0..5000 {
            let begin = std::time::Instant::now();
            let outcome = run(&rt, &task).await;
            samples.push(begin.elapsed());
            assert_eq!(outcome.status, Status::Success);
        }
        samples.sort();
        let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
        eprintln!(
            "python no-op in-worker overhead over {} calls: p50 {:?}, p99 {:?}",
            samples.len(),
            p(0.5),
            p(0.99)
        );
    }
}
