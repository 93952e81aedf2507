//! The flows pipeline end to end on `lattice dev` through the real binary:
//! transfer a directory from the `local` collection to a `cluster`
//! collection hosted by another agent, `ls` it, `Map` a compute function
//! over its files (two at a time), ingest the results into a search
//! index, grant a group read access, wait for approval, succeed. Then the
//! same flow with the service killed (SIGKILL) mid-`Map` and restarted, on
//! SQLite and on PostgreSQL with RabbitMQ: the run finishes once and each
//! file was processed exactly once (the function appends each file's name
//! to a ledger outside the service's reach). The tasks run on an agent
//! process of their own, as on a real site; `lattice dev`'s own endpoint
//! would die with the service and rerun the tasks it was running.

use std::path::Path;
use std::time::{Duration, Instant};

use lattice_client::Client;
use lattice_protocol::compute::{FunctionRegister, FunctionSpec};
use lattice_service::testing::{
    postgres_addr, require_service, tcp_reachable, test_amqp_url, TestSchema,
};
use lattice_tests::platform::{DevOptions, DevPlatform};
use serde_json::{json, Value};

const LATTICE: &str = env!("CARGO_BIN_EXE_lattice");
const FILES: usize = 8;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn definition() -> Value {
    json!({
        "StartAt": "Move",
        "States": {
            "Move": {"Type": "Action", "ActionUrl": "/v1/actions/transfer",
                "Parameters": {
                    "source_endpoint_id": "local", "destination_endpoint_id": "cluster",
                    "DATA": [{"source_path": "/run1/", "destination_path": "/in/run1/", "recursive": true}],
                    "label": "pipeline"},
                "ResultPath": "$.moved", "Next": "List"},
            "List": {"Type": "Action", "ActionUrl": "/v1/actions/ls",
                "Parameters": {"endpoint_id": "cluster", "path": "/in/run1/"},
                "ResultPath": "$.listing", "Next": "Analyse"},
            "Analyse": {"Type": "Map", "ItemsPath": "$.listing.details.DATA", "MaxConcurrency": 2,
                "Parameters": {"name.$": "$.item.name"},
                "Iterator": {"StartAt": "Run", "States": {
                    "Run": {"Type": "Action", "ActionUrl": "/v1/actions/compute",
                        "Parameters": {"endpoint_id": "@ENDPOINT", "function_id": "@FUNCTION",
                                       "args": {"name.$": "$.name"}},
                        "ResultPath": "$.task", "End": true}}},
                "ResultPath": "$.analysed", "Next": "Index"},
            "Index": {"Type": "Action", "ActionUrl": "/v1/actions/search_ingest",
                "Parameters": {"index_id": "@INDEX", "subject": "cluster:/in/run1/",
                    "visible_to": ["@GROUP"],
                    "content": {"outputs.$": "$.analysed[*].task.details.results[0].result.stdout"}},
                "ResultPath": "$.indexed", "Next": "Share"},
            "Share": {"Type": "Action", "ActionUrl": "/v1/actions/set_access_rule",
                "Parameters": {"collection": "cluster", "path": "/in/run1/", "principal": "@GROUP", "permissions": "r"},
                "ResultPath": "$.shared", "Next": "Approve"},
            "Approve": {"Type": "Action", "ActionUrl": "/v1/actions/approval",
                "Parameters": {"message": "publish run1?", "options": ["publish", "hold"]},
                "ResultPath": "$.approval", "End": true}
        }
    })
}

/// The definition with the ids of this platform's things filled in.
fn fill(definition: &Value, ids: &[(&str, String)]) -> Value {
    let mut text = definition.to_string();
    for (marker, id) in ids {
        text = text.replace(marker, id);
    }
    serde_json::from_str(&text).unwrap()
}

async fn wait_run(client: &Client, run: &str, statuses: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if let Ok(info) = client.get::<Value>(&format!("/v1/runs/{run}")).await {
            if statuses.contains(&info["status"].as_str().unwrap_or_default()) {
                return info;
            }
        }
        assert!(
            Instant::now() < deadline,
            "run {run} never reached {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ledger_lines(ledger: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// Runs the pipeline; with `kill_mid_map`, kills the service once some but
/// not all files were processed, and starts it again.
fn pipeline(mut platform: DevPlatform, kill_mid_map: bool) {
    let rt = runtime();
    let scratch = tempfile::tempdir().unwrap();
    let cluster_root = scratch.path().join("cluster");
    std::fs::create_dir_all(&cluster_root).unwrap();
    let ledger = scratch.path().join("ledger.txt");
    let source = platform.local_collection_root().join("run1");
    std::fs::create_dir_all(&source).unwrap();
    for i in 0..FILES {
        std::fs::write(source.join(format!("f{i}.dat")), format!("sample {i}\n")).unwrap();
    }
    let _cluster = platform.agent_with_collection("cluster", &cluster_root);
    // The tasks run on an agent of their own, which outlives the service:
    // `lattice dev`'s own endpoint dies with it, and a task whose worker
    // dies is run again (at least once), which is compute's contract, not
    // the flow's.
    let _workers = platform.agent("workers", 2);
    let client = platform.client();
    let (run, function) = rt.block_on(async {
        // Each task: note the file in the ledger, then take a moment.
        let command = format!(
            "echo {{name}} >> {}; sleep 1; cat {}/in/run1/{{name}}",
            ledger.display(),
            cluster_root.display()
        );
        let function = client
            .register_function(&FunctionRegister {
                name: Some("analyse".into()),
                description: None,
                spec: FunctionSpec::Shell { command },
            })
            .await
            .unwrap()
            .id;
        let deadline = Instant::now() + Duration::from_secs(60);
        let endpoint = loop {
            let online = client.endpoints().await.unwrap().into_iter().find(|e| {
                e.name == "workers" && serde_json::to_value(e.status).unwrap() == json!("online")
            });
            if let Some(e) = online {
                break e.id;
            }
            assert!(
                Instant::now() < deadline,
                "the workers endpoint never came online"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let group: Value = client
            .post("/v1/groups", &json!({"name": "project"}))
            .await
            .unwrap();
        let group = format!("group:{}", group["id"].as_str().unwrap());
        let index: Value = client
            .post("/v1/search/indexes", &json!({"display_name": "runs"}))
            .await
            .unwrap();
        let index = index["id"].as_str().unwrap().to_owned();
        // The cluster collection must be announced before the flow names it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.collection("cluster").await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the cluster collection never appeared"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let definition = fill(
            &definition(),
            &[
                ("@ENDPOINT", endpoint.to_string()),
                ("@FUNCTION", function.to_string()),
                ("@INDEX", index.clone()),
                ("@GROUP", group.clone()),
            ],
        );
        let flow: Value = client
            .post(
                "/v1/flows",
                &json!({"definition": definition, "title": "pipeline"}),
            )
            .await
            .unwrap();
        let run: Value = client
            .post(
                &format!("/v1/flows/{}/run", flow["id"].as_str().unwrap()),
                &json!({"body": {}, "label": "run1"}),
            )
            .await
            .unwrap();
        (run["run_id"].as_str().unwrap().to_owned(), function)
    });

    if kill_mid_map {
        let deadline = Instant::now() + Duration::from_secs(120);
        while ledger_lines(&ledger).len() < 2 {
            assert!(Instant::now() < deadline, "the Map never started");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            ledger_lines(&ledger).len() < FILES,
            "killed too late to be mid-Map"
        );
        platform.kill();
        platform.restart();
    }

    let client = platform.client();
    rt.block_on(async {
        let waiting = wait_run(&client, &run, &["INACTIVE", "FAILED", "SUCCEEDED"]).await;
        assert_eq!(waiting["status"], json!("INACTIVE"), "{waiting}");
        let approved: Value = client
            .post(
                &format!("/v1/runs/{run}/approve"),
                &json!({"option": "publish"}),
            )
            .await
            .unwrap();
        assert_ne!(approved["status"], json!("FAILED"), "{approved}");
        let done = wait_run(&client, &run, &["SUCCEEDED", "FAILED"]).await;
        assert_eq!(done["status"], json!("SUCCEEDED"), "{done}");
        let output = &done["details"]["output"];
        assert_eq!(output["moved"]["status"], json!("SUCCEEDED"), "{output}");
        assert_eq!(
            output["listing"]["details"]["DATA"]
                .as_array()
                .unwrap()
                .len(),
            FILES
        );
        let analysed = output["analysed"].as_array().unwrap();
        assert_eq!(analysed.len(), FILES);
        for item in analysed {
            let stdout = item["task"]["details"]["results"][0]["result"]["stdout"]
                .as_str()
                .unwrap();
            assert!(stdout.starts_with("sample "), "{item}");
        }
        assert_eq!(output["indexed"]["status"], json!("SUCCEEDED"), "{output}");
        assert_eq!(output["shared"]["status"], json!("SUCCEEDED"), "{output}");
        assert_eq!(output["approval"]["details"]["option"], json!("publish"));

        // Each file processed once: one task per file, one ledger line per file.
        let tasks: Vec<_> = client
            .list_tasks(None, None, Some(1000))
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.function_id == function)
            .collect();
        assert_eq!(tasks.len(), FILES, "{tasks:?}");
        let mut expected: Vec<String> = (0..FILES).map(|i| format!("f{i}.dat")).collect();
        expected.sort();
        assert_eq!(ledger_lines(&ledger), expected);
        // The run finished once: one flow_succeeded in its log.
        let log: Value = client
            .get(&format!("/v1/runs/{run}/log?limit=1000"))
            .await
            .unwrap();
        let ends = log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["code"] == "flow_succeeded")
            .count();
        assert_eq!(ends, 1, "{log}");
        // The transfer landed, the rule exists.
        assert!(cluster_root.join("in/run1/f0.dat").exists());
    });
}

fn dev(options: DevOptions) -> DevPlatform {
    DevPlatform::start(
        LATTICE.as_ref(),
        DevOptions {
            local_workers: Some(2),
            ..options
        },
    )
}

#[test]
fn pipeline_runs_end_to_end() {
    pipeline(dev(DevOptions::default()), false);
}

#[test]
fn pipeline_survives_a_killed_service_on_sqlite() {
    pipeline(dev(DevOptions::default()), true);
}

#[test]
fn pipeline_survives_a_killed_service_on_postgres_and_rabbitmq() {
    let test = "flows_pipeline::pipeline_survives_a_killed_service_on_postgres_and_rabbitmq";
    if !require_service(test, tcp_reachable(&postgres_addr()))
        || !require_service(test, tcp_reachable("127.0.0.1:5672"))
    {
        return;
    }
    let rt = runtime();
    let schema = rt
        .block_on(TestSchema::create())
        .expect("a PostgreSQL schema");
    let platform = dev(DevOptions {
        database_url: Some(schema.url_with_search_path()),
        amqp_url: Some(test_amqp_url()),
        ..DevOptions::default()
    });
    pipeline(platform, true);
    let _ = rt.block_on(schema.drop_schema());
}
