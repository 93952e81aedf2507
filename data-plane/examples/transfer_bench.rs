//! Runs Lattice transfers for `bench/transfer.sh` (and by hand).
//!
//! ```text
//! transfer_bench identity DIR                       # prints the fingerprint of DIR's agent identity
//! transfer_bench receive --identity DIR --peer FP --credential C --listen ADDR \
//!                --root DIR --path P --state DIR --id ID [options]
//! transfer_bench send    --identity DIR --peer FP --credential C --to ADDR \
//!                --root DIR --path P --id ID [options]
//! transfer_bench loopback --src-root DIR --src-path P --dst-root DIR --dst-path P [options]
//! options: --recursive --no-verify --connections N --streams N --chunk-mib N --sync-level L
//! ```
//! Each prints one JSON line: its report (counters, event count, seconds).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use lattice_data_plane::{
    run_destination, run_source, AgentIdentity, Collection, Credential, DestinationTask,
    EndpointConfig, Fingerprint, SourceTask, TransferEndpoint, TransferFailure, TransferReport,
    TransferSpec, Tuning,
};

struct Args {
    flags: HashMap<String, String>,
}

impl Args {
    fn parse(args: &[String]) -> Args {
        let mut flags = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            let key = args[i].trim_start_matches("--").to_string();
            if matches!(key.as_str(), "recursive" | "no-verify") {
                flags.insert(key, "true".into());
                i += 1;
            } else {
                flags.insert(key, args.get(i + 1).cloned().unwrap_or_default());
                i += 2;
            }
        }
        Args { flags }
    }
    fn get(&self, key: &str) -> String {
        self.flags
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("missing --{key}"))
    }
    fn opt(&self, key: &str) -> Option<String> {
        self.flags.get(key).cloned()
    }
    fn has(&self, key: &str) -> bool {
        self.flags.contains_key(key)
    }
    fn spec(&self, src: String, dst: String) -> TransferSpec {
        let defaults = Tuning::default();
        let mut spec = TransferSpec {
            transfer_id: self.opt("id").unwrap_or_else(|| "bench".into()),
            source_path: src,
            destination_path: dst,
            recursive: self.has("recursive"),
            options: Default::default(),
            tuning: Tuning {
                connections: self
                    .opt("connections")
                    .map_or(defaults.connections, |v| v.parse().unwrap()),
                streams_per_connection: self
                    .opt("streams")
                    .map_or(defaults.streams_per_connection, |v| v.parse().unwrap()),
                chunk_size: self
                    .opt("chunk-mib")
                    .map_or(defaults.chunk_size, |v| v.parse::<u64>().unwrap() << 20),
                ..defaults
            },
        };
        spec.options.verify_checksum = !self.has("no-verify");
        spec.options.sync_level = self.opt("sync-level").map(|l| l.parse().unwrap());
        spec
    }
}

fn endpoint_config(listen: &str) -> EndpointConfig {
    let env = |k: &str| std::env::var(k).ok();
    let defaults = EndpointConfig::default();
    EndpointConfig {
        listen: listen.parse().unwrap(),
        initial_mtu: env("LATTICE_INITIAL_MTU")
            .map_or(defaults.initial_mtu, |v| v.parse().unwrap()),
        mtu_upper_bound: env("LATTICE_MTU_UPPER")
            .map_or(defaults.mtu_upper_bound, |v| v.parse().unwrap()),
        segmentation_offload: env("LATTICE_NO_GSO").is_none(),
        accept_timeout: std::time::Duration::from_secs(120),
        ..EndpointConfig::default()
    }
}

fn print(kind: &str, started: Instant, result: &Result<TransferReport, TransferFailure>) {
    let seconds = started.elapsed().as_secs_f64();
    let line = match result {
        Ok(r) => {
            serde_json::json!({"side": kind, "ok": true, "seconds": seconds, "counters": r.counters, "events": r.events.len()})
        }
        Err(f) => {
            serde_json::json!({"side": kind, "ok": false, "seconds": seconds, "error": f.error, "events": f.report.events})
        }
    };
    println!("{line}");
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = argv.first().cloned() else {
        eprintln!("usage: transfer_bench identity|receive|send|loopback ...");
        std::process::exit(2);
    };
    let args = Args::parse(&argv[1..]);
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if command == "identity" {
        let identity = AgentIdentity::load_or_generate(&PathBuf::from(&argv[1])).unwrap();
        println!("{}", identity.fingerprint());
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ok = runtime.block_on(async move {
        match command.as_str() {
            "receive" => {
                let identity =
                    AgentIdentity::load_or_generate(&PathBuf::from(args.get("identity"))).unwrap();
                let endpoint =
                    TransferEndpoint::bind(identity, endpoint_config(&args.get("listen"))).unwrap();
                let task = DestinationTask::new(
                    args.spec(String::new(), args.get("path")),
                    Collection::open(args.get("root")).unwrap(),
                    Fingerprint::parse(&args.get("peer")).unwrap(),
                    Credential(args.get("credential")),
                    args.get("state"),
                );
                eprintln!("listening on {}", endpoint.local_addr());
                let started = Instant::now();
                let result = run_destination(&endpoint, task, None).await;
                print("destination", started, &result);
                result.is_ok()
            }
            "send" => {
                let identity =
                    AgentIdentity::load_or_generate(&PathBuf::from(args.get("identity"))).unwrap();
                let endpoint =
                    TransferEndpoint::bind(identity, endpoint_config("0.0.0.0:0")).unwrap();
                let to: SocketAddr = args.get("to").parse().unwrap();
                let task = SourceTask::new(
                    args.spec(args.get("path"), String::new()),
                    Collection::open(args.get("root")).unwrap(),
                    to,
                    Fingerprint::parse(&args.get("peer")).unwrap(),
                    Credential(args.get("credential")),
                );
                let started = Instant::now();
                let result = run_source(&endpoint, task, None).await;
                print("source", started, &result);
                result.is_ok()
            }
            "loopback" => {
                let src_ep = TransferEndpoint::bind(
                    AgentIdentity::generate().unwrap(),
                    endpoint_config("127.0.0.1:0"),
                )
                .unwrap();
                let dst_ep = TransferEndpoint::bind(
                    AgentIdentity::generate().unwrap(),
                    endpoint_config("127.0.0.1:0"),
                )
                .unwrap();
                let spec = args.spec(args.get("src-path"), args.get("dst-path"));
                let credential = Credential::generate();
                let state = tempfile::tempdir().unwrap();
                let dst = DestinationTask::new(
                    spec.clone(),
                    Collection::open(args.get("dst-root")).unwrap(),
                    src_ep.fingerprint(),
                    credential.clone(),
                    state.path(),
                );
                let src = SourceTask::new(
                    spec,
                    Collection::open(args.get("src-root")).unwrap(),
                    dst_ep.local_addr(),
                    dst_ep.fingerprint(),
                    credential,
                );
                let started = Instant::now();
                let (d, s) = tokio::join!(
                    run_destination(&dst_ep, dst, None),
                    run_source(&src_ep, src, None)
                );
                print("destination", started, &d);
                print("source", started, &s);
                d.is_ok() && s.is_ok()
            }
            other => panic!("unknown command {other}"),
        }
    });
    std::process::exit(if ok { 0 } else { 1 });
}
