//! Production over TLS through the real `lattice` binary: `lattice service`
//! serving HTTPS itself (`--tls-cert`, `--tls-key`) and behind nginx
//! terminating TLS, with a certificate from a CA the test makes. On each:
//! the CLI logs in through the real OpenID Connect provider and runs
//! `whoami`, trusting the CA through each of `--ca-file`, `LATTICE_CA_FILE`
//! and `SSL_CERT_FILE`; two agents register and connect over `wss://` (one
//! trusting through the environment, one through `ca_file` in its config
//! file); a 1,000-task batch runs and its results stream back over `wss://`;
//! a transfer between the two agents is orchestrated; the Python SDK's
//! Executor gets results.
//!
//! Refusals: no trusted CA, an expired certificate and a wrong host name
//! (each swapped in while the service runs, which also shows the
//! certificate is reloaded without a restart), and `http://` / `ws://` to
//! the TLS port. Each is one clear message and a non-zero exit.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lattice_tests::platform::{eventually, succeeded as ok};
use lattice_tests::tls::{install_pair, nginx_bin, CertFiles, Nginx, TestPki};
use lattice_tests::{browser_login, free_port, require_service, OidcProvider};
use serde_json::Value;
use url::Url;

const LATTICE: &str = env!("CARGO_BIN_EXE_lattice");
/// Hang guard for anything that waits.
const PATIENCE: Duration = Duration::from_secs(120);

/// How a command is told to trust the test CA.
#[derive(Clone, Copy, Debug)]
enum TrustBy {
    Flag,
    LatticeCaFile,
    SslCertFile,
    Nothing,
}

/// One deployment: the service (TLS itself, or plain behind nginx), the
/// identity provider, and the CLI's config dir.
struct Deployment {
    /// `https://127.0.0.1:PORT/`: what clients use.
    url: Url,
    pki: TestPki,
    /// The files the service serves (when it terminates TLS itself).
    served: Option<CertFiles>,
    dir: tempfile::TempDir,
    service: Child,
    _nginx: Option<Nginx>,
    _provider: OidcProvider,
}

impl Deployment {
    /// `behind_nginx`: plain service, nginx terminating TLS; else the
    /// service serves TLS itself. `None`: skipped (no provider or nginx).
    async fn start(test: &str, behind_nginx: bool) -> Option<Self> {
        let nginx_bin = if behind_nginx {
            match nginx_bin() {
                Ok(bin) => Some(bin),
                Err(reason) => {
                    require_service(test, Err(reason));
                    return None;
                }
            }
        } else {
            None
        };
        let pki = TestPki::new().expect("test PKI");
        let dir = tempfile::tempdir().expect("temp dir");
        // nginx's port stays bound here until nginx starts: the identity
        // provider and the service start first, and a port that was only
        // probed free could be handed to either of them (nginx would then
        // fail to bind while its readiness probe saw their listener).
        let public_reservation = behind_nginx
            .then(|| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"));
        let service_port = loop {
            let port = free_port();
            if public_reservation
                .as_ref()
                .is_none_or(|r| r.local_addr().map(|a| a.port()).ok() != Some(port))
            {
                break port;
            }
        };
        let public_port = match &public_reservation {
            Some(reservation) => reservation.local_addr().expect("reserved port").port(),
            None => service_port,
        };
        let url = Url::parse(&format!("https://127.0.0.1:{public_port}/")).unwrap();
        let provider =
            OidcProvider::start(test, &url.join("v1/auth/oidc/callback").unwrap()).await?;
        let oidc = provider.service_config();

        let mut command = Command::new(LATTICE);
        command
            .arg("service")
            .arg("--listen")
            .arg(format!("127.0.0.1:{service_port}"))
            .arg("--data-dir")
            .arg(dir.path().join("service"))
            .arg("--public-url")
            .arg(url.as_str())
            .arg("--oidc-issuer")
            .arg(&oidc.issuer)
            .arg("--oidc-client-id")
            .arg(&oidc.client_id)
            .env("LATTICE_OIDC_CLIENT_SECRET", &oidc.client_secret)
            .env("LATTICE_LOG", "warn");
        clean_env(&mut command);
        let served = if behind_nginx {
            None
        } else {
            // Copies, so the test can swap certificates under the service.
            let served = CertFiles {
                cert: dir.path().join("served.pem"),
                key: dir.path().join("served-key.pem"),
            };
            install_pair(&pki.server, &served).unwrap();
            command
                .arg("--tls-cert")
                .arg(&served.cert)
                .arg("--tls-key")
                .arg(&served.key);
            Some(served)
        };
        let service = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start `lattice service`");
        drop(public_reservation);
        let nginx = nginx_bin.map(|bin| {
            Nginx::start(
                &bin,
                public_port,
                &pki.server,
                &format!("127.0.0.1:{service_port}"),
            )
            .expect("start nginx")
        });
        let deployment = Self {
            url,
            pki,
            served,
            dir,
            service,
            _nginx: nginx,
            _provider: provider,
        };
        deployment.wait_healthy().await;
        Some(deployment)
    }

    /// A reqwest client that trusts the test CA (the test's own browser).
    fn https(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.pki.ca).unwrap()).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    async fn wait_healthy(&self) {
        let http = self.https();
        let health = self.url.join("v1/health").unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            match http.get(health.clone()).send().await {
                Ok(r) if r.status().is_success() => return,
                other => assert!(
                    Instant::now() < deadline,
                    "{health} not healthy in time: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn config_home(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// The CLI with the saved profile, trusting the CA as told.
    fn command(&self, trust: TrustBy) -> Command {
        let mut command = Command::new(LATTICE);
        clean_env(&mut command);
        command
            .env("XDG_CONFIG_HOME", self.config_home())
            .env("LATTICE_LOG", "warn")
            .stdin(Stdio::null());
        match trust {
            TrustBy::Flag => {
                command.arg("--ca-file").arg(&self.pki.ca);
            }
            TrustBy::LatticeCaFile => {
                command.env("LATTICE_CA_FILE", &self.pki.ca);
            }
            TrustBy::SslCertFile => {
                command.env("SSL_CERT_FILE", &self.pki.ca);
            }
            TrustBy::Nothing => {}
        }
        command
    }

    fn cli(&self, trust: TrustBy, args: &[&str]) -> Output {
        self.command(trust)
            .args(args)
            .output()
            .expect("run the lattice CLI")
    }

    /// `lattice login --no-local-server`, completed by the test's browser.
    async fn login(&self, username: &str) {
        let mut child = self
            .command(TrustBy::LatticeCaFile)
            .env("LATTICE_URL", self.url.as_str())
            .args(["login", "--no-local-server", "--timeout", "60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start `lattice login`");
        let stderr = child.stderr.take().unwrap();
        let (found, link) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.trim().strip_prefix("http") {
                    let _ = found.send(format!("http{url}"));
                }
            }
        });
        let authorize = link
            .recv_timeout(PATIENCE)
            .expect("`lattice login` printed no authorize URL");
        let login = browser_login(&authorize, username).await.unwrap();
        assert!(
            login.callback_url.as_str().starts_with(self.url.as_str()),
            "the provider sends the browser back to the https URL: {}",
            login.callback_url
        );
        let back = self.https().get(login.callback_url).send().await.unwrap();
        assert!(back.status().is_success(), "callback: {}", back.status());
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let out = ok(output);
        assert!(out.contains(username), "{out}");
    }

    /// `lattice agent` as its own process, trusting the CA as told.
    fn agent(&self, name: &str, trust: TrustBy, collection: &Path) -> Child {
        self.command(trust)
            .args(["agent", "--name", name, "--workers", "2", "--state-dir"])
            .arg(self.dir.path().join("agents").join(name))
            .arg("--collection")
            .arg(format!("{name}={}", collection.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start `lattice agent`")
    }

    /// `lattice whoami` with the service's URL changed to `http://`: refused.
    fn whoami_over_plain_http(&self) -> String {
        let mut plain = self.url.clone();
        plain.set_scheme("http").unwrap();
        refused(
            self.command(TrustBy::Flag)
                .env("LATTICE_URL", plain.as_str())
                .arg("whoami")
                .output()
                .unwrap(),
        )
    }

    /// `lattice endpoint configure` + `start`, trusting the CA only through
    /// `ca_file` in the config file it wrote.
    fn configured_agent(&self, name: &str, collection: &Path) -> Child {
        ok(self.cli(
            TrustBy::Nothing,
            &["endpoint", "configure", name, "--workers", "1"],
        ));
        let path = self
            .config_home()
            .join("lattice/endpoints")
            .join(name)
            .join("config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let example = "# ca_file = \"/etc/pki/site-ca.pem\"";
        assert!(
            text.contains(example),
            "the template shows ca_file:\n{text}"
        );
        let text = text.replace(
            example,
            &format!("ca_file = {:?}", self.pki.ca.display().to_string()),
        ) + &format!(
            "\n[[collections]]\nname = {name:?}\nroot = {:?}\n",
            collection.display().to_string()
        );
        std::fs::write(&path, text).unwrap();
        self.command(TrustBy::Nothing)
            .args(["endpoint", "start", name])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start `lattice endpoint start`")
    }

    /// Waits until `lattice endpoint show NAME` says online.
    fn wait_online(&self, name: &str) {
        eventually(&format!("endpoint {name} online"), || {
            let output = self.cli(
                TrustBy::Flag,
                &["endpoint", "show", name, "--format", "json"],
            );
            output.status.success()
                && serde_json::from_slice::<Value>(&output.stdout)
                    .map(|v| v["status"] == "online")
                    .unwrap_or(false)
        });
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = self.service.kill();
        let _ = self.service.wait();
    }
}

/// Nothing from the developer's shell leaks into a child.
fn clean_env(command: &mut Command) {
    for name in [
        "LATTICE_URL",
        "LATTICE_TOKEN",
        "LATTICE_CA_FILE",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "LATTICE_CONFIG",
    ] {
        command.env_remove(name);
    }
}

/// A refused command: non-zero, one line of stderr, which is returned.
#[track_caller]
fn refused(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "expected a refusal, got success: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one clear message: {stderr}"
    );
    stderr
}

/// Everything a deployment must do over TLS.
async fn works_over_tls(deployment: &Deployment) {
    deployment.login("ada").await;
    for trust in [TrustBy::Flag, TrustBy::LatticeCaFile, TrustBy::SslCertFile] {
        let out = ok(deployment.cli(trust, &["whoami", "--format", "json"]));
        let me: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(me["identity"]["username"], "ada", "{trust:?}: {out}");
    }

    // Two agents over wss://, each trusting the CA its own way.
    let roots = deployment.dir.path().join("collections");
    let (root_a, root_b) = (roots.join("a"), roots.join("b"));
    std::fs::create_dir_all(&root_a).unwrap();
    std::fs::create_dir_all(&root_b).unwrap();
    let mut agent_a = deployment.agent("tls-a", TrustBy::LatticeCaFile, &root_a);
    let mut agent_b = deployment.configured_agent("tls-b", &root_b);
    deployment.wait_online("tls-a");
    deployment.wait_online("tls-b");

    // 1,000 tasks; `task wait --batch` follows the result stream (wss://).
    let function = ok(deployment.cli(
        TrustBy::SslCertFile,
        &[
            "function", "register", "--shell", "echo {n}", "--name", "echo",
        ],
    ));
    let args = deployment.dir.path().join("args.jsonl");
    let lines: String = (0..1000).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    std::fs::write(&args, lines).unwrap();
    let submitted = ok(deployment.cli(
        TrustBy::LatticeCaFile,
        &[
            "task",
            "submit-batch",
            function.trim(),
            "--endpoint",
            "tls-a",
            "--args-file",
            args.to_str().unwrap(),
            "--format",
            "json",
        ],
    ));
    let batch: Value = serde_json::from_str(&submitted).unwrap();
    let batch_id = batch["batch_id"].as_str().unwrap().to_owned();
    let waited = ok(deployment.cli(
        TrustBy::Flag,
        &[
            "task",
            "wait",
            "--batch",
            &batch_id,
            "--timeout",
            "300",
            "--format",
            "json",
        ],
    ));
    let status: Value = serde_json::from_str(&waited).unwrap();
    assert_eq!(status["total"], 1000, "{status}");
    assert_eq!(status["success"], 1000, "{status}");

    // A transfer from one agent to the other, orchestrated over TLS.
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root_a.join("data.bin"), &payload).unwrap();
    let transfer = ok(deployment.cli(
        TrustBy::LatticeCaFile,
        &["transfer", "tls-a:/data.bin", "tls-b:/data.bin"],
    ));
    ok(deployment.cli(
        TrustBy::Flag,
        &["transfer", "wait", transfer.trim(), "--timeout", "120"],
    ));
    assert!(
        std::fs::read(root_b.join("data.bin")).unwrap() == payload,
        "the transferred file differs"
    );

    python_sdk(deployment);

    let _ = agent_a.kill();
    let _ = agent_b.kill();
    let _ = agent_a.wait();
    let _ = agent_b.wait();
}

/// The SDK's Executor over https:// and wss://, trusting through
/// `LATTICE_CA_FILE` and then `SSL_CERT_FILE`; refused without either.
fn python_sdk(deployment: &Deployment) {
    let Some(python) = sdk_python() else {
        return;
    };
    let script = r#"
import sys
from lattice import Executor, ShellFunction
with Executor(endpoint_id="tls-a") as ex:
    futures = [ex.submit(ShellFunction("echo {n}"), n=n) for n in range(5)]
    print(",".join(f.result().stdout.strip() for f in futures))
"#;
    let profile = deployment.config_home().join("lattice/profile.json");
    let token = serde_json::from_slice::<Value>(&std::fs::read(profile).unwrap()).unwrap()
        ["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = |var: Option<&str>| {
        let mut command = Command::new(&python);
        clean_env(&mut command);
        command
            .args(["-c", script])
            .env("LATTICE_URL", deployment.url.as_str())
            .env("LATTICE_TOKEN", &token)
            .stdin(Stdio::null());
        if let Some(var) = var {
            command.env(var, &deployment.pki.ca);
        }
        command.output().expect("run python")
    };
    for var in ["LATTICE_CA_FILE", "SSL_CERT_FILE"] {
        let out = ok(run(Some(var)));
        assert_eq!(out.trim(), "0,1,2,3,4", "{var}");
    }
    let output = run(None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("certificate") && stderr.contains("LATTICE_CA_FILE"),
        "{stderr}"
    );
}

/// A Python that imports the SDK (the venv `.ci/python.sh` makes, or
/// `LATTICE_PYTHON`); `None` skips (or fails under LATTICE_REQUIRE_SERVICES=1).
fn sdk_python() -> Option<PathBuf> {
    let candidates = std::env::var_os("LATTICE_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/var/cache/lattice/venv/bin/python")]);
    for python in candidates {
        let imports = Command::new(&python)
            .args(["-c", "import lattice, httpx, websockets"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if imports {
            return Some(python);
        }
    }
    require_service(
        "python_sdk_over_tls",
        Err("no Python with the SDK installed (run .ci/python.sh or set LATTICE_PYTHON)".into()),
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_serves_tls_itself() {
    let Some(deployment) = Deployment::start("the_service_serves_tls_itself", false).await else {
        return;
    };
    works_over_tls(&deployment).await;
    refusals(&deployment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_behind_nginx_terminating_tls() {
    let Some(deployment) =
        Deployment::start("the_service_behind_nginx_terminating_tls", true).await
    else {
        return;
    };
    works_over_tls(&deployment).await;

    // Plain http:// to nginx's TLS port: nginx's 400, said in words.
    let stderr = deployment.whoami_over_plain_http();
    assert!(
        stderr.contains("serves TLS on this port") && stderr.contains(deployment.url.as_str()),
        "{stderr}"
    );
}

/// What must be refused, with one message naming the problem each.
async fn refusals(deployment: &Deployment) {
    let host = format!("127.0.0.1:{}", deployment.url.port().unwrap());

    // No trusted CA: unknown issuer, and how to trust one.
    let stderr = refused(deployment.cli(TrustBy::Nothing, &["whoami"]));
    assert!(
        stderr.contains(&host) && stderr.contains("unknown issuer"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--ca-file") && stderr.contains("LATTICE_CA_FILE"),
        "{stderr}"
    );

    // A CA file that is not one: a usage error naming it.
    let bogus = deployment.dir.path().join("bogus.pem");
    std::fs::write(&bogus, "hello").unwrap();
    let output = deployment
        .command(TrustBy::Nothing)
        .arg("--ca-file")
        .arg(&bogus)
        .arg("whoami")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bogus.pem"));

    // http:// and ws:// to the TLS port: told to use https:// / wss://.
    let stderr = deployment.whoami_over_plain_http();
    assert!(
        stderr.contains("serves TLS on this port") && stderr.contains(deployment.url.as_str()),
        "{stderr}"
    );
    let mut ws = deployment.url.join("v1/agent/connect").unwrap();
    ws.set_scheme("ws").unwrap();
    let error = match lattice_client::websocket::connect(ws.as_str(), None).await {
        Ok(_) => panic!("a ws:// upgrade on the TLS port must be refused"),
        Err(e) => e,
    };
    let text = lattice_client::websocket::describe_error(&ws, &error);
    assert!(
        text.contains("serves TLS on this port") && text.contains("wss://"),
        "{text}"
    );

    // Certificates swapped while the service runs: each refused in words,
    // then the good one again, all without a restart.
    let served = deployment.served.as_ref().expect("the service serves TLS");
    let swaps: [(&CertFiles, &str); 3] = [
        (&deployment.pki.expired, "has expired"),
        (
            &deployment.pki.wrong_name,
            "is not valid for the name 127.0.0.1",
        ),
        (&deployment.pki.untrusted, "unknown issuer"),
    ];
    for (pair, expected) in swaps {
        install_pair(pair, served).unwrap();
        let mut last = String::new();
        eventually(&format!("refused with `{expected}`"), || {
            let output = deployment.cli(TrustBy::Flag, &["whoami"]);
            last = String::from_utf8_lossy(&output.stderr).into_owned();
            !output.status.success() && last.contains(expected)
        });
        assert!(last.contains(&host), "{last}");
        assert_eq!(last.trim().lines().count(), 1, "{last}");
    }
    install_pair(&deployment.pki.server, served).unwrap();
    eventually("the renewed certificate is served", || {
        deployment.cli(TrustBy::Flag, &["whoami"]).status.success()
    });
}
