//! The real `lattice` binary as a platform: `lattice dev` (service, local
//! identity, optionally the `local` endpoint) and separate `lattice agent`
//! processes, each in its own temporary config and data dirs, so a test can
//! kill -9 and restart any of them.
//!
//! The binary is passed in by the test (`env!("CARGO_BIN_EXE_lattice")` in
//! `cli/tests/`, where cargo guarantees it is freshly built).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lattice_client::{Client, Profile};

/// How long a started process gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What `lattice dev` is started with.
#[derive(Clone, Debug, Default)]
pub struct DevOptions {
    /// Start the `local` endpoint with this many workers (None: `--no-endpoint`).
    pub local_workers: Option<u32>,
    pub database_url: Option<String>,
    pub amqp_url: Option<String>,
}

/// A `lattice dev` process and the directories it uses.
pub struct DevPlatform {
    bin: PathBuf,
    dir: tempfile::TempDir,
    options: DevOptions,
    child: Option<Child>,
    /// `127.0.0.1:PORT`, fixed after the first start so agents can reconnect.
    listen: String,
    pub url: String,
    pub token: String,
}

impl DevPlatform {
    pub fn start(bin: &Path, options: DevOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut platform = Self {
            bin: bin.to_owned(),
            dir,
            options,
            child: None,
            listen: "127.0.0.1:0".into(),
            url: String::new(),
            token: String::new(),
        };
        platform.spawn();
        platform
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn profile_path(&self) -> PathBuf {
        self.config_dir().join("lattice").join("profile.json")
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.profile_path());
        let mut command = Command::new(&self.bin);
        command
            .arg("dev")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(&self.listen)
            .env("XDG_CONFIG_HOME", self.config_dir())
            .env("LATTICE_LOG", "warn")
            .env_remove("LATTICE_URL")
            .env_remove("LATTICE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        match self.options.local_workers {
            Some(workers) => {
                command.arg("--workers").arg(workers.to_string());
            }
            None => {
                command.arg("--no-endpoint");
            }
        }
        if let Some(url) = &self.options.database_url {
            command.arg("--database-url").arg(url);
        }
        if let Some(url) = &self.options.amqp_url {
            command.arg("--amqp-url").arg(url);
        }
        let child = command.spawn().expect("start `lattice dev`");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(profile)) = Profile::load(&self.profile_path()) {
                self.url = profile.url;
                self.token = profile.access_token;
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("`lattice dev` exited early with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "`lattice dev` did not write its profile within {READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.listen = self.url.trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + READY_TIMEOUT;
        while std::net::TcpStream::connect(&self.listen).is_err() {
            assert!(
                Instant::now() < deadline,
                "`lattice dev` is not listening on {}",
                self.listen
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A REST client with the dev identity's token.
    pub fn client(&self) -> Client {
        Client::new(&self.url, Some(self.token.clone())).expect("client")
    }

    /// Runs the CLI against this platform.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env("XDG_CONFIG_HOME", self.config_dir())
            .env("LATTICE_LOG", "warn")
            .env_remove("LATTICE_URL")
            .env_remove("LATTICE_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("run the lattice CLI")
    }

    /// Runs the CLI against this platform as another identity: with
    /// `LATTICE_TOKEN` (and no profile).
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env("XDG_CONFIG_HOME", self.dir.path().join("other-config"))
            .env("LATTICE_LOG", "warn")
            .env("LATTICE_URL", &self.url)
            .env("LATTICE_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .expect("run the lattice CLI")
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same address and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts an agent process for endpoint `name` using this platform's profile.
    pub fn agent(&self, name: &str, workers: u32) -> AgentProcess {
        AgentProcess::start(self, name, workers, Vec::new())
    }

    /// Starts an agent process (no workers) for endpoint `name` that hosts
    /// collection `name` at `root` (`--collection NAME=ROOT`).
    pub fn agent_with_collection(&self, name: &str, root: &Path) -> AgentProcess {
        let collection = format!("{name}={}", root.display());
        AgentProcess::start(self, name, 0, vec!["--collection".into(), collection])
    }

    /// The root of the `local` collection that `lattice dev` hosts.
    pub fn local_collection_root(&self) -> PathBuf {
        self.data_dir().join("collections").join("local")
    }
}

impl Drop for DevPlatform {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            // SIGINT first so the local endpoint stops its workers.
            interrupt(child, Duration::from_secs(15));
        }
    }
}

/// A `lattice agent` process.
pub struct AgentProcess {
    bin: PathBuf,
    config_dir: PathBuf,
    state_dir: PathBuf,
    name: String,
    workers: u32,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl AgentProcess {
    fn start(platform: &DevPlatform, name: &str, workers: u32, extra_args: Vec<String>) -> Self {
        let mut agent = Self {
            bin: platform.bin.clone(),
            config_dir: platform.config_dir(),
            state_dir: platform.dir.path().join("agents").join(name),
            name: name.to_owned(),
            workers,
            extra_args,
            child: None,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .arg("agent")
            .arg("--name")
            .arg(&self.name)
            .arg("--workers")
            .arg(self.workers.to_string())
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.extra_args)
            .env("XDG_CONFIG_HOME", &self.config_dir)
            .env("LATTICE_LOG", "warn")
            .env_remove("LATTICE_URL")
            .env_remove("LATTICE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start `lattice agent`");
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL the agent (its workers lose their dispatcher and exit).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGINT: a clean stop.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            interrupt(child, Duration::from_secs(20));
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Signal {
    Interrupt,
}

/// SIGINT `child`; SIGKILL it if it has not exited within `grace`.
fn interrupt(mut child: Child, grace: Duration) {
    send_signal(child.id(), Signal::Interrupt);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn send_signal(pid: u32, signal: Signal) {
    let signal = match signal {
        Signal::Interrupt => "-INT",
    };
    let _ = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status();
}

/// The stdout of a command that must have succeeded; otherwise fails the
/// test with its exit code, stdout and stderr.
#[track_caller]
pub fn succeeded(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The exit code and stderr of a command that must have failed; otherwise
/// fails the test with its stdout.
#[track_caller]
pub fn failed(output: Output) -> (i32, String) {
    assert!(
        !output.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls `condition` every 100 ms until it holds; fails the test naming
/// `what` after two minutes. For processes and services of other
/// threads, where a fixed sleep would be either too short or too long.
#[track_caller]
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !condition() {
        assert!(Instant::now() < deadline, "not within 120 s: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
