//! Flows benchmark against a running platform (see `bench/flows.sh`).
//!
//! Measures, on one platform, with a shell function running `true`:
//! 1. a 10-state `Pass` flow, RUNS runs one after another: run latency
//!    (start to SUCCEEDED seen by polling `GET /v1/runs/{id}` every 1 ms),
//!    runs/s, and the engine's time per transition;
//! 2. a flow of one compute action, RUNS runs, against RUNS single tasks
//!    submitted directly (submit to result, as `bench_compute` measures it),
//!    interleaved so both see the same system; target: flow p50 within 1.5x
//!    of the task's;
//! 3. a `Map` of ITEMS items, one compute action each, against ITEMS tasks
//!    in one batch; target: within 2x of the batch;
//! 4. if given the time of the same fan-out as a Parsl `join_app` (measured
//!    by the script), the ratio Map / Parsl.
//!
//! Usage: `bench_flows URL TOKEN ENDPOINT_ID [RUNS] [ITEMS] [PARSL_SECONDS]`

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use lattice_client::Client;
use lattice_protocol::compute::{
    BatchSubmit, FunctionRegister, FunctionSpec, StreamEvent, TaskArgs, TaskState, TaskSubmit,
};
use lattice_protocol::flows::{FlowCreate, FlowInfo, RunInfo, RunLog, RunStart, RunStatus};
use lattice_protocol::{EndpointId, FlowId, FunctionId};
use serde_json::{json, Value};

/// Interval between polls of a run's status.
const POLL: Duration = Duration::from_millis(1);
/// Pass states in the chain of part 1.
const PASS_STATES: usize = 10;
/// Target of part 2: flow p50 over single-task p50.
const FLOW_VS_TASK_TARGET: f64 = 1.5;
/// Target of part 3: Map time over batch time.
const MAP_VS_BATCH_TARGET: f64 = 2.0;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_flows URL TOKEN ENDPOINT_ID [RUNS] [ITEMS] [PARSL_SECONDS]";
    let (url, token, endpoint) = match args.as_slice() {
        [_, url, token, endpoint, ..] => {
            (url.clone(), token.clone(), endpoint.parse::<EndpointId>()?)
        }
        _ => anyhow::bail!(usage),
    };
    let runs: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(200);
    let items: usize = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let parsl_secs: Option<f64> = args
        .get(6)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse())
        .transpose()?;
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
    let compute_action = json!({
        "Type": "Action",
        "ActionUrl": "/v1/actions/compute",
        "Parameters": {"endpoint_id": endpoint, "function_id": function, "args": {}},
        "End": true,
    });

    // The flows.
    let mut states = serde_json::Map::new();
    for i in 1..=PASS_STATES {
        let mut state = json!({"Type": "Pass"});
        if i == PASS_STATES {
            state["End"] = json!(true);
        } else {
            state["Next"] = json!(format!("P{}", i + 1));
        }
        states.insert(format!("P{i}"), state);
    }
    let pass_flow = create_flow(
        &client,
        "bench-pass-10",
        json!({"StartAt": "P1", "States": states}),
    )
    .await?;
    let compute_flow = create_flow(
        &client,
        "bench-compute-1",
        json!({"StartAt": "Run", "States": {"Run": compute_action}}),
    )
    .await?;
    let map_flow = create_flow(
        &client,
        "bench-map",
        json!({
            "StartAt": "Fan",
            "States": {"Fan": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "MaxConcurrency": items,
                "Iterator": {"StartAt": "Run", "States": {"Run": compute_action}},
                "ResultPath": "$.results",
                "End": true,
            }},
        }),
    )
    .await?;

    // Warm up: workers started, caches filled, the run driver exercised.
    for _ in 0..10 {
        single(&client, function, endpoint).await?;
        run_flow(&client, pass_flow, json!({})).await?;
        run_flow(&client, compute_flow, json!({})).await?;
    }

    // 1. The 10-state Pass flow, one run after another.
    let mut pass_latencies = Vec::with_capacity(runs);
    let mut pass_server = Vec::with_capacity(runs);
    let mut transitions = 0u64;
    let mut final_at_start = 0usize;
    let started = Instant::now();
    for _ in 0..runs {
        let (latency, run, polls) = run_flow(&client, pass_flow, json!({})).await?;
        pass_latencies.push(ms(latency));
        pass_server.push(server_ms(&run));
        transitions = run.transitions;
        final_at_start += usize::from(polls == 0);
    }
    let pass_total = started.elapsed();
    let pass_latencies = sorted(pass_latencies);
    let pass_server = sorted(pass_server);

    // 2. One compute action as a flow against the task alone, interleaved.
    let mut flow_latencies = Vec::with_capacity(runs);
    let mut task_latencies = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (latency, _, _) = run_flow(&client, compute_flow, json!({})).await?;
        flow_latencies.push(ms(latency));
        task_latencies.push(ms(single(&client, function, endpoint).await?));
    }
    let flow_latencies = sorted(flow_latencies);
    let task_latencies = sorted(task_latencies);

    // 3. A Map over ITEMS items against one batch of ITEMS tasks.
    let input = json!({"items": (0..items).collect::<Vec<_>>()});
    let (map_time, map_run, _) =
        run_flow_polling(&client, map_flow, input, Duration::from_millis(10)).await?;
    let map_outputs = map_run.details["output"]["results"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let map_phases = phases(&client, &map_run).await?;
    let (batch_time, batch_failed) = batch(&client, function, endpoint, items).await?;

    // The table.
    let flow_p50 = percentile(&flow_latencies, 0.50);
    let task_p50 = percentile(&task_latencies, 0.50);
    let flow_vs_task = flow_p50 / task_p50;
    let map_vs_batch = map_time.as_secs_f64() / batch_time.as_secs_f64();
    let met = |ok: bool| if ok { "yes" } else { "NO" };
    println!("{:<52} {:>14}  {:<10} met", "measure", "value", "target");
    let line = |name: &str, value: String| println!("{name:<52} {value:>14}");
    println!("-- 1. Pass flow, {PASS_STATES} states, {runs} runs one after another");
    line(
        "run latency p50 (start to SUCCEEDED seen)",
        format!("{:.2} ms", percentile(&pass_latencies, 0.50)),
    );
    line(
        "run latency p99",
        format!("{:.2} ms", percentile(&pass_latencies, 0.99)),
    );
    line(
        "runs/s",
        format!("{:.1}", runs as f64 / pass_total.as_secs_f64()),
    );
    line(
        "transitions per run (RunInfo.transitions)",
        format!("{transitions}"),
    );
    line(
        "engine time per transition (p50 latency / transitions)",
        format!(
            "{:.3} ms",
            percentile(&pass_latencies, 0.50) / transitions.max(1) as f64
        ),
    );
    line(
        "server run time p50 (completion_time - start_time)",
        format!("{:.2} ms", percentile(&pass_server, 0.50)),
    );
    line(
        "runs already SUCCEEDED in the start answer",
        format!("{final_at_start} / {runs}"),
    );
    println!("-- 2. one compute action: {runs} flow runs vs {runs} single tasks, interleaved");
    line("flow run latency p50", format!("{flow_p50:.2} ms"));
    line(
        "flow run latency p99",
        format!("{:.2} ms", percentile(&flow_latencies, 0.99)),
    );
    line(
        "flow runs over 200 ms (the driver's first look: 250 ms)",
        format!(
            "{} / {runs}",
            flow_latencies.iter().filter(|&&l| l > 200.0).count()
        ),
    );
    line(
        "single task submit-to-result p50",
        format!("{task_p50:.2} ms"),
    );
    line(
        "single task submit-to-result p99",
        format!("{:.2} ms", percentile(&task_latencies, 0.99)),
    );
    println!(
        "{:<52} {:>14}  {:<10} {}",
        "flow p50 / task p50",
        format!("{flow_vs_task:.2}x"),
        format!("<= {FLOW_VS_TASK_TARGET}x"),
        met(flow_vs_task <= FLOW_VS_TASK_TARGET)
    );
    println!("-- 3. Map over {items} items (one compute action each) vs a batch of {items} tasks");
    line(
        "Map run: start to SUCCEEDED (polled every 10 ms)",
        format!("{:.3} s", map_time.as_secs_f64()),
    );
    line(
        "Map items/s",
        format!("{:.0}", items as f64 / map_time.as_secs_f64()),
    );
    line(
        "Map server time (completion_time - start_time)",
        format!("{:.3} s", server_ms(&map_run) / 1000.0),
    );
    line(
        "Map transitions / outputs",
        format!("{} / {map_outputs}", map_run.transitions),
    );
    line(
        "Map log: first action completed (all started by then)",
        format!("{:.3} s", map_phases.0),
    );
    line(
        "Map log: last action completed (after run start)",
        format!("{:.3} s", map_phases.1),
    );
    line(
        "batch: submit to all final",
        format!("{:.3} s", batch_time.as_secs_f64()),
    );
    line(
        "batch tasks/s",
        format!("{:.0}", items as f64 / batch_time.as_secs_f64()),
    );
    line("batch tasks not SUCCESS", format!("{batch_failed}"));
    println!(
        "{:<52} {:>14}  {:<10} {}",
        "Map time / batch time",
        format!("{map_vs_batch:.2}x"),
        format!("<= {MAP_VS_BATCH_TARGET}x"),
        met(map_vs_batch <= MAP_VS_BATCH_TARGET)
    );
    println!("-- 4. the same fan-out as a Parsl join_app (HighThroughputExecutor, 2 workers)");
    match parsl_secs {
        Some(parsl) => {
            line("Parsl join_app time", format!("{parsl:.3} s"));
            line(
                "Lattice Map time / Parsl time",
                format!("{:.2}x", map_time.as_secs_f64() / parsl),
            );
        }
        None => line("Parsl", "skipped".into()),
    }
    Ok(())
}

async fn create_flow(client: &Client, title: &str, definition: Value) -> anyhow::Result<FlowId> {
    let flow: FlowInfo = client
        .post(
            "v1/flows",
            &FlowCreate {
                definition,
                input_schema: json!({}),
                title: title.into(),
                subtitle: String::new(),
                description: String::new(),
                keywords: Vec::new(),
                flow_administrators: Vec::new(),
                flow_starters: Vec::new(),
                flow_viewers: Vec::new(),
                run_managers: Vec::new(),
                run_monitors: Vec::new(),
            },
        )
        .await?;
    if !flow.warnings.is_empty() {
        println!("warnings for {title}: {:?}", flow.warnings);
    }
    Ok(flow.id)
}

/// The run's own duration, as the service recorded it, in ms.
fn server_ms(run: &RunInfo) -> f64 {
    match run.completion_time {
        Some(end) => (end - run.start_time).to_std().map(ms).unwrap_or(f64::NAN),
        None => f64::NAN,
    }
}

/// Starts a run and polls it every 1 ms until it is final.
async fn run_flow(
    client: &Client,
    flow: FlowId,
    input: Value,
) -> anyhow::Result<(Duration, RunInfo, usize)> {
    run_flow_polling(client, flow, input, POLL).await
}

/// Starts a run and polls it until it is final; fails unless SUCCEEDED.
/// Returns the time from start to the final status seen, the run, and the
/// number of polls (0: the start answer was already final).
async fn run_flow_polling(
    client: &Client,
    flow: FlowId,
    input: Value,
    poll: Duration,
) -> anyhow::Result<(Duration, RunInfo, usize)> {
    let started = Instant::now();
    let run: RunInfo = client
        .post(
            &format!("v1/flows/{flow}/run"),
            &RunStart {
                body: input,
                ..RunStart::default()
            },
        )
        .await?;
    let mut run = run;
    let mut polls = 0;
    while !run.status.is_final() {
        tokio::time::sleep(poll).await;
        run = client.get(&format!("v1/runs/{}", run.run_id)).await?;
        polls += 1;
    }
    let latency = started.elapsed();
    if run.status != RunStatus::Succeeded {
        anyhow::bail!(
            "run {} of flow {flow} ended {:?}: {}",
            run.run_id,
            run.status,
            run.details
        );
    }
    Ok((latency, run, polls))
}

/// From the run's log: seconds from the run's start to its first and to
/// its last `action_completed` entry. The driver carries out every queued
/// action start before it handles any event, so the first completion comes
/// after all the Map's actions were started (the log's `action_started`
/// entries carry the time the state asked for them, not when the driver
/// started them).
async fn phases(client: &Client, run: &RunInfo) -> anyhow::Result<(f64, f64)> {
    let (mut first, mut last) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut after: Option<u64> = None;
    loop {
        let path = match after {
            Some(seq) => format!("v1/runs/{}/log?limit=1000&after={seq}", run.run_id),
            None => format!("v1/runs/{}/log?limit=1000", run.run_id),
        };
        let page: RunLog = client.get(&path).await?;
        for e in page.entries.iter().filter(|e| e.code == "action_completed") {
            let at = (e.time - run.start_time).num_microseconds().unwrap_or(0) as f64 / 1e6;
            first = first.min(at);
            last = last.max(at);
        }
        after = page.entries.last().map(|e| e.seq);
        if !page.has_next_page || after.is_none() {
            return Ok((first, last));
        }
    }
}

/// Submits one task and waits for its result on the stream (as
/// `bench_compute` measures single-task latency).
async fn single(
    client: &Client,
    function: FunctionId,
    endpoint: EndpointId,
) -> anyhow::Result<Duration> {
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
            if task.state != TaskState::Success {
                anyhow::bail!("task {} ended {:?}", task.id, task.state);
            }
            return Ok(started.elapsed());
        }
    }
    anyhow::bail!("stream closed without a result")
}

/// Submits `n` tasks in one batch and waits until all are final: the time
/// and how many did not succeed.
async fn batch(
    client: &Client,
    function: FunctionId,
    endpoint: EndpointId,
    n: usize,
) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let submitted = client
        .submit_batch(&BatchSubmit {
            function_id: function,
            endpoint_id: endpoint,
            tasks: vec![TaskArgs::new(); n],
            walltime_secs: None,
            max_retries: None,
            user_endpoint_config: None,
        })
        .await?;
    let mut stream = client.stream_batch(submitted.batch_id).await?;
    let mut failed = 0u64;
    while let Some(event) = stream.next().await? {
        match event {
            StreamEvent::Task { task } => {
                if task.state != TaskState::Success {
                    failed += 1;
                }
            }
            StreamEvent::Done { .. } => return Ok((started.elapsed(), failed)),
        }
    }
    anyhow::bail!("stream closed before the batch finished")
}
