//! The `wasm` kind: a WASI preview 1 command module run by wasmtime.
//!
//! **What the module sees.** argv is `[function id, ...]`: when the task's
//! arguments have a key `argv`, its items (an array) or words (a string,
//! split on whitespace, as the CLI's `--arg argv=...` gives); otherwise the
//! values of all arguments except `stdin`, in key order. Strings are passed as
//! they are, other JSON values as their JSON text. The argument `stdin` (a
//! string), when present, is its standard input; otherwise stdin is empty.
//! The environment holds only the worker's variables named in
//! [`WasmRuntime::env_allow`] (none by default). The filesystem is only the
//! task's own empty scratch directory, preopened as `/work` (and as `.`, so
//! relative paths land there too); what the module leaves there is removed
//! after it. There are no sockets: WASI preview 1 cannot open
//! any, and nothing is preopened. The result is stdout, stderr and the exit
//! code (`proc_exit`, or 0 when `_start` returns).
//!
//! **Limits.** Linear memory through a `ResourceLimiter`
//! ([`WasmRuntime::memory_bytes`]): growing past it traps with
//! `memory limit: ...`. Time through epoch interruption: a ticker thread
//! advances the engine's epoch every [`EPOCH_TICK`]; at each tick the running
//! store checks its walltime deadline and cancellation, and ends the guest
//! with `timeout: ...`. Output: stdout and stderr together may hold
//! [`WasmRuntime::max_output_bytes`]; one byte more traps with
//! `output limit: ...` (the last [`WasmRuntime::output_tail_bytes`] of each
//! are kept). A trap ends the task `failed` with the trap's message. None of
//! this affects the worker, which runs the next task as usual.
//!
//! **Cost.** The wasmtime [`Engine`] (configuration, pooling allocator,
//! epoch ticker) is made once per [`WasmRuntime`] and its clones, on the
//! first Wasm task. A module is compiled once per host: its machine code is
//! cached on disk by the SHA-256 of its bytes (and the engine's
//! compatibility hash) in [`WasmRuntime::cache_dir`] and loaded with
//! `Module::deserialize_file` by later workers; in memory, each worker keeps
//! the linked `InstancePre` per function id (functions are immutable).
//! Per invocation: a `Store` with a fresh WASI context, an instance slot
//! from the pool, an empty scratch directory (reused: see [`WorkDirs`]), on
//! a blocking thread (Wasm never runs
//! on an async worker thread).

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::{Invocation, Outcome};
use base64::Engine as _;
use chrono::Utc;
use lattice_protocol::compute::{FunctionSpec, TaskResult};
use lattice_protocol::template::value_text;
use lattice_protocol::FunctionId;
use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, UpdateDeadline, WasmBacktrace,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::output::{
    failed, outcome, output_limit_error, timeout_error, Tail, DEFAULT_OUTPUT_TAIL_BYTES,
};

/// Default limit of a module's linear memory: 512 MiB.
pub const DEFAULT_WASM_MEMORY_BYTES: u64 = 512 << 20;
/// Default limit of what a module writes to stdout and stderr together: 16 MiB.
pub const DEFAULT_WASM_OUTPUT_BYTES: u64 = 16 << 20;
/// How often the engine's epoch advances: the resolution of timeouts and
/// cancellation.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Table elements a module may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Linked modules kept in memory per worker before the map is cleared.
const MAX_LINKED_MODULES: usize = 256;

/// Runs `wasm` functions.
///
/// Configuration fields are read when the engine is made, on the first Wasm
/// task: set them before. Clones share the engine and its caches.
#[derive(Clone)]
pub struct WasmRuntime {
    /// Parent of `.wasm-work/` (the directories behind `/work`) and, by
    /// default, of the module cache.
    pub scratch_root: PathBuf,
    /// Compiled modules, `<sha256>-<engine>.cwasm` [default: `SCRATCH_ROOT/.wasm-cache`].
    /// Whoever can write here can run native code as the worker: keep it
    /// private to the worker's account.
    pub cache_dir: PathBuf,
    /// Linear memory a module may have, in bytes.
    pub memory_bytes: u64,
    /// Bytes a module may write to stdout and stderr together.
    pub max_output_bytes: u64,
    /// Bytes kept from the end of stdout, and separately of stderr.
    pub output_tail_bytes: usize,
    /// Names of the worker's environment variables a module sees (when set).
    pub env_allow: Vec<String>,
    /// Modules running at once on this worker (slots of the pooling
    /// allocator); an invocation beyond them fails with a clear error. Keep
    /// it at least the worker's capacity.
    pub max_instances: u32,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    engine: OnceLock<Result<Arc<WasmEngine>, String>>,
    compiled: AtomicU64,
    loaded: AtomicU64,
    reused: AtomicU64,
}

/// Where the modules of the invocations so far came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WasmCacheStats {
    /// Compiled from bytes (and written to the disk cache).
    pub compiled: u64,
    /// Loaded from the disk cache (compiled earlier, perhaps by another worker).
    pub loaded: u64,
    /// Found already linked in this worker's memory.
    pub reused: u64,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("scratch_root", &self.scratch_root)
            .field("cache_dir", &self.cache_dir)
            .field("memory_bytes", &self.memory_bytes)
            .field("max_output_bytes", &self.max_output_bytes)
            .field("env_allow", &self.env_allow)
            .field("max_instances", &self.max_instances)
            .field("engine_ready", &self.shared.engine.get().is_some())
            .finish_non_exhaustive()
    }
}

impl WasmRuntime {
    pub fn new(scratch_root: impl Into<PathBuf>) -> Self {
        let scratch_root = scratch_root.into();
        Self {
            cache_dir: scratch_root.join(".wasm-cache"),
            scratch_root,
            memory_bytes: DEFAULT_WASM_MEMORY_BYTES,
            max_output_bytes: DEFAULT_WASM_OUTPUT_BYTES,
            output_tail_bytes: DEFAULT_OUTPUT_TAIL_BYTES,
            env_allow: Vec::new(),
            max_instances: 64,
            shared: Arc::default(),
        }
    }

    /// Where this runtime's modules came from so far.
    pub fn cache_stats(&self) -> WasmCacheStats {
        WasmCacheStats {
            compiled: self.shared.compiled.load(Ordering::Relaxed),
            loaded: self.shared.loaded.load(Ordering::Relaxed),
            reused: self.shared.reused.load(Ordering::Relaxed),
        }
    }

    fn engine(&self) -> Result<Arc<WasmEngine>, String> {
        self.shared
            .engine
            .get_or_init(|| WasmEngine::new(self).map(Arc::new))
            .clone()
    }

    /// Runs `task` to its end.
    pub async fn run(&self, task: &Invocation) -> Outcome {
        self.run_cancellable(task, std::future::pending())
            .await
            .unwrap_or_else(|| failed(Utc::now(), None, "cancelled".into()))
    }

    /// Runs `task` until it ends or `cancel` completes (`None`: cancelled;
    /// the guest is stopped at the next epoch tick).
    pub async fn run_cancellable(
        &self,
        task: &Invocation,
        cancel: impl Future<Output = ()>,
    ) -> Option<Outcome> {
        let started_at = Utc::now();
        let FunctionSpec::Wasm { module } = &task.spec else {
            return Some(failed(
                started_at,
                None,
                format!(
                    "function kind {} is not run by the wasm runtime",
                    task.spec.kind()
                ),
            ));
        };
        let (argv, stdin) = match guest_input(task) {
            Ok(input) => input,
            Err(e) => return Some(failed(started_at, None, format!("invalid arguments: {e}"))),
        };
        let engine = match self.engine() {
            Ok(engine) => engine,
            Err(e) => {
                return Some(failed(
                    started_at,
                    None,
                    format!("wasm runtime unavailable on this worker: {e}"),
                ))
            }
        };
        // The module's bytes cross to the blocking thread only when this
        // worker has not linked it yet.
        let source = match engine.linked(task.function_id) {
            Some(pre) => {
                self.shared.reused.fetch_add(1, Ordering::Relaxed);
                ModuleSource::Linked(pre)
            }
            None => ModuleSource::Base64(module.clone()),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_on_drop = StopOnDrop(stop.clone());
        let invocation = GuestCall {
            function_id: task.function_id,
            source,
            argv,
            stdin,
            env: self
                .env_allow
                .iter()
                .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)))
                .collect(),
            walltime: (task.walltime_secs > 0)
                .then(|| Duration::from_secs(task.walltime_secs.into())),
            memory_bytes: self.memory_bytes,
            max_output_bytes: self.max_output_bytes,
            output_tail_bytes: self.output_tail_bytes,
            stop: stop.clone(),
        };
        let shared = self.shared.clone();
        let job = tokio::task::spawn_blocking(move || engine.invoke(invocation, &shared));
        tokio::pin!(job);
        tokio::pin!(cancel);
        let joined = tokio::select! {
            joined = &mut job => joined,
            () = &mut cancel => {
                stop.store(true, Ordering::Relaxed);
                let _ = job.await;
                return None;
            }
        };
        let ran = match joined {
            Ok(ran) => ran,
            Err(e) => {
                tracing::error!(task_id = %task.task_id, "wasm invocation panicked: {e}");
                return Some(failed(started_at, None, "wasm invocation panicked".into()));
            }
        };
        match ran.end {
            End::Cancelled => None,
            End::Failed(error) => Some(outcome(started_at, ran.result, Some(error))),
            End::Timeout => Some(outcome(
                started_at,
                ran.result,
                Some(timeout_error(task.walltime_secs)),
            )),
            End::Exited => {
                let code = ran.result.as_ref().and_then(|r| r.returncode);
                let error = match code {
                    Some(0) => None,
                    Some(code) => Some(format!("module exited with status {code}")),
                    None => Some("module ended without an exit status".into()),
                };
                Some(outcome(started_at, ran.result, error))
            }
        }
    }
}

/// Sets the stop flag when the invocation's future is dropped, so an
/// abandoned run ends at the next tick instead of running on.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// argv and stdin from the task's arguments (see the module doc).
fn guest_input(task: &Invocation) -> Result<(Vec<String>, Vec<u8>), String> {
    let mut argv = vec![task.function_id.to_string()];
    match task.args.get("argv") {
        Some(serde_json::Value::Array(items)) => argv.extend(items.iter().map(value_text)),
        Some(serde_json::Value::String(words)) => {
            argv.extend(words.split_whitespace().map(str::to_owned))
        }
        Some(_) => return Err("`argv` must be an array or a string".into()),
        None => argv.extend(
            task.args
                .iter()
                .filter(|(key, _)| key.as_str() != "stdin")
                .map(|(_, value)| value_text(value)),
        ),
    }
    if let Some(arg) = argv.iter().find(|a| a.contains('\0')) {
        return Err(format!("argument {arg:?} contains a NUL byte"));
    }
    let stdin = match task.args.get("stdin") {
        None => Vec::new(),
        Some(serde_json::Value::String(text)) => text.clone().into_bytes(),
        Some(_) => return Err("`stdin` must be a string".into()),
    };
    Ok((argv, stdin))
}

/// Everything one invocation needs, moved to its blocking thread.
struct GuestCall {
    function_id: FunctionId,
    source: ModuleSource,
    argv: Vec<String>,
    stdin: Vec<u8>,
    env: Vec<(String, String)>,
    walltime: Option<Duration>,
    memory_bytes: u64,
    max_output_bytes: u64,
    output_tail_bytes: usize,
    stop: Arc<AtomicBool>,
}

enum ModuleSource {
    Linked(InstancePre<GuestState>),
    Base64(String),
}

/// How an invocation ended, with what it wrote (`None` when it never started).
struct Ran {
    end: End,
    result: Option<TaskResult>,
}

enum End {
    Exited,
    Timeout,
    Cancelled,
    Failed(String),
}

/// Why wasmtime stopped the guest, carried through its error as the cause.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("memory limit: the module asked for {desired} bytes of linear memory, the limit is {limit} bytes")]
    Memory { desired: usize, limit: u64 },
    #[error("timeout")]
    Timeout,
    #[error("cancelled")]
    Cancelled,
    #[error("output limit")]
    Output,
}

/// Per-store state.
struct GuestState {
    wasi: WasiP1Ctx,
    limits: GuestLimits,
}

struct GuestLimits {
    memory_bytes: u64,
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_bytes {
            return Err(wasmtime::Error::new(Stop::Memory {
                desired,
                limit: self.memory_bytes,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The long-lived half: engine, linker, linked modules, epoch ticker.
struct WasmEngine {
    engine: Engine,
    linker: Linker<GuestState>,
    cache_dir: PathBuf,
    /// `<engine>` part of cache file names: modules compiled by another
    /// wasmtime version or configuration are never loaded.
    engine_tag: String,
    linked: Mutex<HashMap<FunctionId, InstancePre<GuestState>>>,
    work_dirs: WorkDirs,
    ticker_stop: Arc<AtomicBool>,
}

/// The host directories behind `/work`, under `SCRATCH_ROOT/.wasm-work`.
/// The guest never sees the host path, so a directory the guest left empty
/// is handed to the next invocation instead of being removed and made again
/// (two journaled metadata writes, most of a no-op's cost on ext4); one it
/// left files in is removed with them.
struct WorkDirs {
    root: PathBuf,
    free: Mutex<Vec<PathBuf>>,
    made: AtomicU64,
}

impl WorkDirs {
    fn take(&self) -> std::io::Result<PathBuf> {
        if let Some(dir) = self.free.lock().expect("work dirs").pop() {
            return Ok(dir);
        }
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn give_back(&self, dir: PathBuf) {
        let empty = std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_none());
        if empty {
            self.free.lock().expect("work dirs").push(dir);
        } else if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), "cannot remove a scratch directory: {e}");
        }
    }
}

impl Drop for WorkDirs {
    fn drop(&mut self) {
        for dir in self.free.get_mut().expect("work dirs").drain(..) {
            let _ = std::fs::remove_dir(dir);
        }
        // Left in place while another worker's directories are in it.
        let _ = std::fs::remove_dir(&self.root);
    }
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl WasmEngine {
    fn new(options: &WasmRuntime) -> Result<Self, String> {
        // Slots keep the default size (4 GiB of address space, reserved but
        // not committed): the limiter, not the pool, enforces the limit, so
        // that passing it always reads `memory limit: ...`.
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(options.max_instances)
            .total_memories(options.max_instances)
            .total_tables(options.max_instances)
            .total_stacks(options.max_instances)
            .total_component_instances(0)
            .table_elements(MAX_TABLE_ELEMENTS);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| format!("cannot make the engine: {e:#}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut GuestState| {
            &mut state.wasi
        })
        .map_err(|e| format!("cannot link WASI: {e:#}"))?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_tag = format!("{:016x}", hasher.finish());

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticking = engine.clone();
        let stop = ticker_stop.clone();
        std::thread::Builder::new()
            .name("lattice-wasm-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| format!("cannot start the epoch thread: {e}"))?;
        Ok(Self {
            engine,
            linker,
            cache_dir: options.cache_dir.clone(),
            engine_tag,
            linked: Mutex::default(),
            work_dirs: WorkDirs {
                root: options.scratch_root.join(".wasm-work"),
                free: Mutex::default(),
                made: AtomicU64::new(0),
            },
            ticker_stop,
        })
    }

    fn linked(&self, function_id: FunctionId) -> Option<InstancePre<GuestState>> {
        self.linked
            .lock()
            .expect("wasm module map")
            .get(&function_id)
            .cloned()
    }

    /// Decodes, then loads (disk cache) or compiles, then links a module.
    fn prepare(
        &self,
        function_id: FunctionId,
        base64: &str,
        shared: &Shared,
    ) -> Result<InstancePre<GuestState>, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(base64)
            .map_err(|e| format!("invalid wasm module: not valid base64: {e}"))?;
        let hash = hex::encode(Sha256::digest(&bytes));
        let path = self
            .cache_dir
            .join(format!("{hash}-{}.cwasm", self.engine_tag));
        let module = match self.load_cached(&path) {
            Some(module) => {
                shared.loaded.fetch_add(1, Ordering::Relaxed);
                module
            }
            None => {
                let module = Module::new(&self.engine, &bytes)
                    .map_err(|e| format!("invalid wasm module: {e:#}"))?;
                shared.compiled.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.store_cached(&path, &module) {
                    tracing::warn!(path = %path.display(), "cannot cache the compiled module: {e}");
                }
                module
            }
        };
        if module.get_export("_start").is_none() {
            return Err(
                "invalid wasm module: no `_start` export (a WASI command module is needed, e.g. `clang --target=wasm32-wasi`)"
                    .into(),
            );
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| format!("invalid wasm module: {e:#}"))?;
        let mut linked = self.linked.lock().expect("wasm module map");
        if linked.len() >= MAX_LINKED_MODULES {
            linked.clear();
        }
        linked.insert(function_id, pre.clone());
        Ok(pre)
    }

    fn load_cached(&self, path: &Path) -> Option<Module> {
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `store_cached` from
        // `Module::serialize` of an engine with the same compatibility hash
        // (in its name); wasmtime checks its header and version again. The
        // cache directory is private to the worker's account (see
        // `WasmRuntime::cache_dir`).
        match unsafe { Module::deserialize_file(&self.engine, path) } {
            Ok(module) => Some(module),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring an unusable cached module: {e:#}");
                None
            }
        }
    }

    fn store_cached(&self, path: &Path, module: &Module) -> Result<(), String> {
        let bytes = module.serialize().map_err(|e| format!("{e:#}"))?;
        std::fs::create_dir_all(&self.cache_dir).map_err(|e| e.to_string())?;
        // Write then rename: a concurrent reader never sees half a file.
        let mut temp =
            tempfile::NamedTempFile::new_in(&self.cache_dir).map_err(|e| e.to_string())?;
        temp.write_all(&bytes).map_err(|e| e.to_string())?;
        temp.persist(path).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Runs one invocation to its end, on a blocking thread.
    fn invoke(&self, invocation: GuestCall, shared: &Shared) -> Ran {
        let never_started = |error: String| Ran {
            end: End::Failed(error),
            result: None,
        };
        let pre = match invocation.source {
            ModuleSource::Linked(ref pre) => pre.clone(),
            ModuleSource::Base64(ref base64) => {
                match self.prepare(invocation.function_id, base64, shared) {
                    Ok(pre) => pre,
                    Err(e) => return never_started(e),
                }
            }
        };
        let work = match self.work_dirs.take() {
            Ok(dir) => dir,
            Err(e) => {
                return never_started(format!(
                    "cannot create a scratch directory under {}: {e}",
                    self.work_dirs.root.display()
                ))
            }
        };
        let ran = self.run_guest(&pre, &invocation, &work);
        self.work_dirs.give_back(work);
        ran
    }

    fn run_guest(&self, pre: &InstancePre<GuestState>, invocation: &GuestCall, work: &Path) -> Ran {
        let capture = Capture::new(invocation.max_output_bytes, invocation.output_tail_bytes);
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_blocking_current_thread(true)
            .args(&invocation.argv)
            .stdin(MemoryInputPipe::new(invocation.stdin.clone()))
            .stdout(capture.stream(StreamKind::Stdout))
            .stderr(capture.stream(StreamKind::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (name, value) in &invocation.env {
            wasi.env(name, value);
        }
        for guest_path in ["/work", "."] {
            if let Err(e) = wasi.preopened_dir(work, guest_path, wasmtime_wasi::FsPerms::ReadWrite)
            {
                return Ran {
                    end: End::Failed(format!("cannot open the scratch directory: {e:#}")),
                    result: None,
                };
            }
        }
        let mut store = Store::new(
            &self.engine,
            GuestState {
                wasi: wasi.build_p1(),
                limits: GuestLimits {
                    memory_bytes: invocation.memory_bytes,
                },
            },
        );
        store.limiter(|state| &mut state.limits);
        let deadline = invocation.walltime.map(|w| Instant::now() + w);
        let stop = invocation.stop.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if stop.load(Ordering::Relaxed) {
                return Err(wasmtime::Error::new(Stop::Cancelled));
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(wasmtime::Error::new(Stop::Timeout));
            }
            Ok(UpdateDeadline::Continue(1))
        });

        let called = pre.instantiate(&mut store).and_then(|instance| {
            instance
                .get_typed_func::<(), ()>(&mut store, "_start")?
                .call(&mut store, ())
        });
        drop(store);
        let (stdout, stderr, output_exceeded) = capture.finish();
        let mut result = TaskResult {
            stdout,
            stderr,
            returncode: None,
            ..Default::default()
        };
        let end = match called {
            Ok(()) => {
                result.returncode = Some(0);
                End::Exited
            }
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    result.returncode = Some(exit.0);
                    End::Exited
                } else if output_exceeded || matches!(e.downcast_ref::<Stop>(), Some(Stop::Output))
                {
                    End::Failed(output_limit_error(invocation.max_output_bytes))
                } else {
                    match e.downcast_ref::<Stop>() {
                        Some(Stop::Timeout) => End::Timeout,
                        Some(Stop::Cancelled) => End::Cancelled,
                        Some(memory @ Stop::Memory { .. }) => End::Failed(memory.to_string()),
                        Some(Stop::Output) => unreachable!("handled above"),
                        None => End::Failed(guest_error(&e)),
                    }
                }
            }
        };
        Ran {
            end,
            result: Some(result),
        }
    }
}

/// The text of a guest failure: a trap (with the Wasm functions it was in)
/// or another error (a failed WASI call, an instantiation error).
fn guest_error(e: &wasmtime::Error) -> String {
    let Some(trap) = e.downcast_ref::<Trap>() else {
        return format!("wasm error: {e:#}");
    };
    let message = trap.to_string();
    let mut text = format!(
        "trap: {}",
        message.strip_prefix("wasm trap: ").unwrap_or(&message)
    );
    if let Some(backtrace) = e.downcast_ref::<WasmBacktrace>() {
        for frame in backtrace.frames() {
            let name = frame
                .func_name()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("<wasm function {}>", frame.func_index()));
            text.push_str(&format!("\n    at {name}"));
        }
    }
    text
}

/// Captured stdout and stderr of one invocation, sharing one byte budget.
#[derive(Clone)]
struct Capture(Arc<Mutex<CaptureState>>);

struct CaptureState {
    stdout: Tail,
    stderr: Tail,
    written: u64,
    limit: u64,
    exceeded: bool,
}

#[derive(Clone, Copy)]
enum StreamKind {
    Stdout,
    Stderr,
}

impl Capture {
    fn new(limit: u64, tail_bytes: usize) -> Self {
        Self(Arc::new(Mutex::new(CaptureState {
            stdout: Tail::new(tail_bytes),
            stderr: Tail::new(tail_bytes),
            written: 0,
            limit,
            exceeded: false,
        })))
    }

    fn stream(&self, kind: StreamKind) -> CaptureStream {
        CaptureStream {
            capture: self.clone(),
            kind,
        }
    }

    /// Stdout, stderr, and whether the limit was exceeded.
    fn finish(&self) -> (String, String, bool) {
        let state = self.0.lock().expect("capture");
        (
            state.stdout.to_lossy_string(),
            state.stderr.to_lossy_string(),
            state.exceeded,
        )
    }

    /// Takes what fits in the budget; `false` when the limit was passed.
    fn write(&self, kind: StreamKind, bytes: &[u8]) -> bool {
        let mut state = self.0.lock().expect("capture");
        let room = state.limit.saturating_sub(state.written);
        let taken = &bytes[..bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        state.written += taken.len() as u64;
        match kind {
            StreamKind::Stdout => state.stdout.push(taken),
            StreamKind::Stderr => state.stderr.push(taken),
        }
        if taken.len() < bytes.len() {
            state.exceeded = true;
            return false;
        }
        true
    }
}

/// One of the two streams of a [`Capture`], as WASI sees it.
#[derive(Clone)]
struct CaptureStream {
    capture: Capture,
    kind: StreamKind,
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        if self.capture.write(self.kind, &bytes) {
            Ok(())
        } else {
            Err(StreamError::Trap(wasmtime::Error::new(Stop::Output)))
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready; the budget is enforced in `write`, so that passing
        // it is an error instead of a stream that silently closes.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.capture.write(self.kind, buf) {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Ready(Err(std::io::Error::other("output limit")))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests;
