//! Per-invocation overhead of a no-op, in the worker: `Runtime::run` called
//! directly, as the worker does for each task (see `bench/runtime.sh`).
//!
//! - wasm: `tests/wasm/noop.wat` (after a first call that compiles it)
//! - shell: `true`
//! - container: `true` in `localbusybox` (skipped without a container API)
//!
//! Usage: `bench_runtime [WASM_CALLS] [SHELL_CALLS] [CONTAINER_CALLS]`

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use lattice_function_runtime::Runtime;
use lattice_function_runtime::{Invocation, Status};
use lattice_protocol::compute::FunctionSpec;
use lattice_protocol::{FunctionId, TaskId};

fn task(function_id: FunctionId, spec: &FunctionSpec) -> Invocation {
    Invocation {
        task_id: TaskId::new(),
        function_id,
        spec: spec.clone(),
        args: Default::default(),
        walltime_secs: 60,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `calls` invocations of `spec` one after the other and prints p50/p99.
async fn measure(runtime: &Runtime, label: &str, spec: FunctionSpec, calls: usize) {
    let function_id = FunctionId::new();
    // Warm-up: engine, compiled module, client connection, page cache.
    let first = Instant::now();
    let outcome = runtime.run(&task(function_id, &spec)).await;
    let first = first.elapsed();
    if outcome.status != Status::Success {
        println!("{label:<10} failed: {:?}", outcome.error);
        return;
    }
    for _ in 0..calls.min(10) {
        runtime.run(&task(function_id, &spec)).await;
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = task(function_id, &spec);
        let begin = Instant::now();
        let outcome = runtime.run(&t).await;
        times.push(begin.elapsed());
        assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / calls as u32;
    println!(
        "{label:<10} calls {calls:>6}  p50 {:>10.1?}  p99 {:>10.1?}  mean {:>10.1?}  first call {:>10.1?}",
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        mean,
        first
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("counts are numbers"))
        .collect();
    let wasm_calls = args.first().copied().unwrap_or(5000);
    let shell_calls = args.get(1).copied().unwrap_or(1000);
    let container_calls = args.get(2).copied().unwrap_or(30);

    let scratch = tempfile::tempdir().expect("scratch dir");
    let runtime = Runtime::new(scratch.path());

    let noop = wat::parse_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/wasm/noop.wat"
    ))
    .expect("tests/wasm/noop.wat");
    let wasm = FunctionSpec::Wasm {
        module: base64::engine::general_purpose::STANDARD.encode(noop),
    };
    measure(&runtime, "wasm", wasm, wasm_calls).await;
    println!("           module cache: {:?}", runtime.wasm.cache_stats());

    let shell = FunctionSpec::Shell {
        command: "true".into(),
    };
    measure(&runtime, "shell", shell, shell_calls).await;

    match runtime.container.ping().await {
        Ok(socket) => {
            println!("           container API at {}", socket.display());
            let container = FunctionSpec::Container {
                image: "localbusybox".into(),
                command: "true".into(),
            };
            measure(&runtime, "container", container, container_calls).await;
        }
        Err(e) => println!(
            "container  skipped: {e} (run .ci/runtime.sh and set LATTICE_CONTAINER_SOCKET)"
        ),
    }
}
