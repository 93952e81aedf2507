//! End-to-end per-invocation cost of a no-op for each function kind,
//! through a running platform (see `bench/runtime.sh`): submit one task,
//! wait for its result on the batch stream, repeat. Reports submit-to-result
//! latency p50/p99 and the worker's own start-to-finish time for it.
//!
//! Usage: `bench_runtime_e2e URL TOKEN ENDPOINT_ID [SINGLES] [CONTAINER_SINGLES]`
//! (a container function is measured when `LATTICE_BENCH_CONTAINER_IMAGE`
//! names an image on the endpoint's host).

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use lattice_client::Client;
use lattice_protocol::compute::{
    FunctionRegister, FunctionSpec, StreamEvent, TaskArgs, TaskState, TaskSubmit,
};
use lattice_protocol::{EndpointId, FunctionId};

/// `(module (memory (export "memory") 1) (func (export "_start")))`; the
/// service validates it at registration.
const NOOP_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
    0x03, 0x02, 0x01, 0x00, // func 0: type 0
    0x05, 0x03, 0x01, 0x00, 0x01, // memory: min 1 page
    0x07, 0x13, 0x02, // exports: 2
    0x06, b'm', b'e', b'm', b'o', b'r', b'y', 0x02, 0x00, // "memory" memory 0
    0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x00, // "_start" func 0
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code: empty body
];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (url, token, endpoint) = match args.as_slice() {
        [_, url, token, endpoint, ..] => {
            (url.clone(), token.clone(), endpoint.parse::<EndpointId>()?)
        }
        _ => anyhow::bail!(
            "usage: bench_runtime_e2e URL TOKEN ENDPOINT_ID [SINGLES] [CONTAINER_SINGLES]"
        ),
    };
    let singles: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(200);
    let container_singles: usize = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let client = Client::new(&url, Some(token))?;

    let mut kinds = vec![
        (
            "wasm",
            FunctionSpec::Wasm {
                module: base64::engine::general_purpose::STANDARD.encode(NOOP_WASM),
            },
            singles,
        ),
        (
            "shell",
            FunctionSpec::Shell {
                command: "true".into(),
            },
            singles,
        ),
    ];
    if let Ok(image) = std::env::var("LATTICE_BENCH_CONTAINER_IMAGE") {
        kinds.push((
            "container",
            FunctionSpec::Container {
                image,
                command: "true".into(),
            },
            container_singles,
        ));
    }
    for (label, spec, count) in kinds {
        let function = client
            .register_function(&FunctionRegister {
                name: Some(format!("bench-noop-{label}")),
                description: None,
                spec,
            })
            .await?
            .id;
        // Warm-up: compiled module, connections, interpreters.
        for _ in 0..5 {
            single(&client, function, endpoint).await?;
        }
        let mut latencies = Vec::with_capacity(count);
        let mut in_worker = Vec::with_capacity(count);
        for _ in 0..count {
            let (latency, function_time) = single(&client, function, endpoint).await?;
            latencies.push(latency.as_secs_f64() * 1000.0);
            in_worker.push(function_time.as_secs_f64() * 1000.0);
        }
        latencies.sort_by(f64::total_cmp);
        in_worker.sort_by(f64::total_cmp);
        println!(
            "{label:<10} tasks {count:>5}  end-to-end p50 {:>7.2} ms  p99 {:>7.2} ms   worker start-to-finish p50 {:>7.2} ms  p99 {:>7.2} ms",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            percentile(&in_worker, 0.50),
            percentile(&in_worker, 0.99),
        );
    }
    Ok(())
}

/// Submits one task and waits for its result; latency and the worker's
/// start-to-finish time (millisecond timestamps).
async fn single(
    client: &Client,
    function: FunctionId,
    endpoint: EndpointId,
) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    let submitted = client
        .submit_task(&TaskSubmit {
            function_id: function,
            endpoint_id: endpoint,
            args: TaskArgs::new(),
            walltime_secs: None,
            max_retries: None,
            user_endpoint_config: None,
        })
        .await?;
    let mut stream = client.stream_batch(submitted.batch_id).await?;
    while let Some(event) = stream.next().await? {
        if let StreamEvent::Task { task } = event {
            let latency = started.elapsed();
            anyhow::ensure!(
                task.state == TaskState::Success,
                "task failed: {:?}",
                task.error
            );
            let function_time = match (task.started_at, task.finished_at) {
                (Some(s), Some(f)) => (f - s).to_std().unwrap_or_default(),
                _ => Duration::ZERO,
            };
            return Ok((latency, function_time));
        }
    }
    anyhow::bail!("stream closed without a result")
}
