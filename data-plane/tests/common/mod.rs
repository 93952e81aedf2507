//! Shared harness of the transfer tests: two endpoints on loopback, two
//! collections, a state dir, and a UDP proxy the test can cut.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lattice_data_plane::{
    run_destination, run_source, AgentIdentity, Collection, Credential, DestinationTask,
    EndpointConfig, SourceTask, TestHooks, TransferEndpoint, TransferFailure, TransferReport,
    TransferSpec, Tuning,
};
use tokio::net::UdpSocket;

/// Hang guard only: every test transfer finishes in well under this.
pub const HANG_GUARD: Duration = Duration::from_secs(120);

pub struct Pair {
    pub source: TransferEndpoint,
    pub destination: TransferEndpoint,
    pub src_dir: tempfile::TempDir,
    pub dst_dir: tempfile::TempDir,
    pub state_dir: tempfile::TempDir,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn test_endpoint_config() -> EndpointConfig {
    EndpointConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        idle_timeout: Duration::from_millis(1500),
        keep_alive: Duration::from_millis(300),
        accept_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        ..EndpointConfig::default()
    }
}

impl Pair {
    pub fn new() -> Pair {
        init_tracing();
        Pair {
            source: TransferEndpoint::bind(
                AgentIdentity::generate().unwrap(),
                test_endpoint_config(),
            )
            .unwrap(),
            destination: TransferEndpoint::bind(
                AgentIdentity::generate().unwrap(),
                test_endpoint_config(),
            )
            .unwrap(),
            src_dir: tempfile::tempdir().unwrap(),
            dst_dir: tempfile::tempdir().unwrap(),
            state_dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn src(&self) -> &Path {
        self.src_dir.path()
    }

    pub fn dst(&self) -> &Path {
        self.dst_dir.path()
    }

    pub async fn run(&self, spec: &TransferSpec) -> Outcome {
        self.run_with(spec, TestHooks::default(), None).await
    }

    /// Runs both sides; `via` replaces the destination address (a proxy).
    pub async fn run_with(
        &self,
        spec: &TransferSpec,
        hooks: TestHooks,
        via: Option<SocketAddr>,
    ) -> Outcome {
        self.run_into(spec, hooks, via, self.dst()).await
    }

    pub async fn run_into(
        &self,
        spec: &TransferSpec,
        hooks: TestHooks,
        via: Option<SocketAddr>,
        dst_root: &Path,
    ) -> Outcome {
        let credential = Credential::generate();
        let destination = DestinationTask::new(
            spec.clone(),
            Collection::open(dst_root).unwrap(),
            self.source.fingerprint(),
            credential.clone(),
            self.state_dir.path(),
        );
        let source = SourceTask::new(
            spec.clone(),
            Collection::open(self.src()).unwrap(),
            via.unwrap_or_else(|| self.destination.local_addr()),
            self.destination.fingerprint(),
            credential,
        )
        .with_test_hooks(hooks);
        let (dst, src) = tokio::time::timeout(HANG_GUARD, async {
            tokio::join!(
                run_destination(&self.destination, destination, None),
                run_source(&self.source, source, None)
            )
        })
        .await
        .expect("transfer hung");
        Outcome { src, dst }
    }
}

pub struct Outcome {
    pub src: Result<TransferReport, TransferFailure>,
    pub dst: Result<TransferReport, TransferFailure>,
}

impl Outcome {
    pub fn ok(self) -> (TransferReport, TransferReport) {
        match (self.src, self.dst) {
            (Ok(s), Ok(d)) => (s, d),
            (s, d) => panic!(
                "transfer failed:\nsource: {:?}\ndestination: {:?}",
                s.err().map(|e| (e.error, e.report.events)),
                d.err().map(|e| (e.error, e.report.events))
            ),
        }
    }
}

pub fn spec(id: &str, src: &str, dst: &str, recursive: bool) -> TransferSpec {
    TransferSpec {
        transfer_id: id.to_string(),
        source_path: src.to_string(),
        destination_path: dst.to_string(),
        recursive,
        options: Default::default(),
        tuning: small_tuning(),
    }
}

/// Small chunks so that a few MiB exercise chunking, batching and resume.
pub fn small_tuning() -> Tuning {
    Tuning {
        connections: 2,
        streams_per_connection: 2,
        chunk_size: 64 << 10,
        small_file_limit: 16 << 10,
        batch_files: 8,
        batch_bytes: 64 << 10,
    }
}

pub fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Every regular file and directory under `root`, relative, with contents.
pub fn tree(root: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Option<Vec<u8>>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                out.push((rel, None));
                walk(root, &path, out);
            } else if ft.is_file() {
                out.push((rel, Some(std::fs::read(&path).unwrap())));
            }
        }
    }
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A loopback UDP proxy for one client; `cut()` drops every packet from then on.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    pub forwarded: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(target).await.unwrap();
        let addr = front.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let (cut2, forwarded2) = (cut.clone(), forwarded.clone());
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let mut a = vec![0u8; 65_536];
            let mut b = vec![0u8; 65_536];
            loop {
                tokio::select! {
                    Ok((n, from)) = front.recv_from(&mut a) => {
                        client = Some(from);
                        if !cut2.load(Ordering::SeqCst) {
                            forwarded2.fetch_add(n as u64, Ordering::Relaxed);
                            let _ = back.send(&a[..n]).await;
                        }
                    }
                    Ok(n) = back.recv(&mut b) => {
                        if let (Some(to), false) = (client, cut2.load(Ordering::SeqCst)) {
                            let _ = front.send_to(&b[..n], to).await;
                        }
                    }
                }
            }
        });
        Proxy {
            addr,
            cut,
            forwarded,
            task,
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    pub fn cutter(&self) -> Arc<AtomicBool> {
        self.cut.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
