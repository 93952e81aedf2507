//! Compute benchmark against a running platform (see `bench/compute.sh`).
//!
//! Measures, for a shell function running `true`:
//! - submit time and total time for N tasks in one batch, and tasks/s;
//! - submit-to-result latency of single tasks on an idle system (p50/p99),
//!   and the part of it that is not the function itself (dispatch overhead:
//!   latency minus the worker's own start-to-finish time).
//!
//! Usage: `bench_compute URL TOKEN ENDPOINT_ID [TASKS] [SINGLES]`

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use lattice_client::Client;
use lattice_protocol::compute::{
    BatchSubmit, FunctionRegister, FunctionSpec, StreamEvent, TaskArgs, TaskSubmit,
};
use lattice_protocol::EndpointId;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (url, token, endpoint) = match args.as_slice() {
        [_, url, token, endpoint, ..] => {
            (url.clone(), token.clone(), endpoint.parse::<EndpointId>()?)
        }
        _ => anyhow::bail!("usage: bench_compute URL TOKEN ENDPOINT_ID [TASKS] [SINGLES]"),
    };
    let tasks: usize = args
        .get(4)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let singles: usize = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(200);
    let client = Client::new(&url, Some(token))?;
    let function = client
        .register_function(&FunctionRegister {
            name: Some("bench-true".into()),
            description: None,
            spec: FunctionSpec::Shell {
                command: "true".into(),
            },
        })
        .await?
        .id;

    // Warm up: workers started, caches filled.
    for _ in 0..20 {
        single(&client, function, endpoint).await?;
    }

    // Single-task latency on an idle system.
    let mut latencies = Vec::with_capacity(singles);
    let mut overheads = Vec::with_capacity(singles);
    for _ in 0..singles {
        let (latency, function_time) = single(&client, function, endpoint).await?;
        latencies.push(latency.as_secs_f64() * 1000.0);
        overheads.push((latency.as_secs_f64() - function_time.as_secs_f64()) * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    overheads.sort_by(f64::total_cmp);

    // Throughput.
    let started = Instant::now();
    let submitted = client
        .submit_batch(&BatchSubmit {
            function_id: function,
            endpoint_id: endpoint,
            tasks: vec![TaskArgs::new(); tasks],
            walltime_secs: None,
            max_retries: None,
            user_endpoint_config: None,
        })
        .await?;
    let submit_time = started.elapsed();
    let mut stream = client.stream_batch(submitted.batch_id).await?;
    let mut failed = 0u64;
    let mut done = None;
    while let Some(event) = stream.next().await? {
        match event {
            StreamEvent::Task { task } => {
                if task.state != lattice_protocol::compute::TaskState::Success {
                    failed += 1;
                }
            }
            StreamEvent::Done { status } => {
                done = Some(status);
                break;
            }
        }
    }
    let total = started.elapsed();
    let status = done.ok_or_else(|| anyhow::anyhow!("stream closed before the batch finished"))?;
    println!("tasks                    {tasks}");
    println!(
        "submit time              {:.3} s",
        submit_time.as_secs_f64()
    );
    println!("total time               {:.3} s", total.as_secs_f64());
    println!(
        "throughput               {:.0} tasks/s",
        tasks as f64 / total.as_secs_f64()
    );
    println!("succeeded / failed       {} / {}", status.success, failed);
    println!(
        "single-task latency p50  {:.2} ms",
        percentile(&latencies, 0.50)
    );
    println!(
        "single-task latency p99  {:.2} ms",
        percentile(&latencies, 0.99)
    );
    println!(
        "dispatch overhead p50    {:.2} ms (latency minus the worker's start-to-finish time)",
        percentile(&overheads, 0.50)
    );
    println!(
        "dispatch overhead p99    {:.2} ms",
        percentile(&overheads, 0.99)
    );
    Ok(())
}

/// Submits one task and waits for its result on the stream.
async fn single(
    client: &Client,
    function: lattice_protocol::FunctionId,
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
            let function_time = match (task.started_at, task.finished_at) {
                (Some(s), Some(f)) => (f - s).to_std().unwrap_or_default(),
                _ => Duration::ZERO,
            };
            return Ok((latency, function_time));
        }
    }
    anyhow::bail!("stream closed without a result")
}
