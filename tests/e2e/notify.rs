//! Notifications end to end: a real SMTP server (aiosmtpd, started here,
//! writing a Maildir) receives the email of a transfer that paused and then
//! failed; webhook receivers written here (axum) check signatures, answer
//! 500 once, or never answer; a second identity gets 404s; bad input gets
//! 400s naming the field. Every scenario on SQLite and PostgreSQL.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use lattice_data_plane::TestHooks;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::data::{start_agent, until_online, wait_for, write};
use crate::scene::{Person, Trio};
use crate::Backend;

/// Where the CI puts aiosmtpd (`.ci/smtp.sh`); `LATTICE_SMTP_PYTHON` overrides.
const SMTP_PYTHON: &str = "/var/cache/lattice/smtp-venv/bin/python";

/// The SMTP server: a child `python -m aiosmtpd` storing every message in
/// a Maildir.
struct Smtp {
    child: std::process::Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Smtp {
    /// Starts aiosmtpd, or says why it cannot.
    fn start() -> Result<Self, String> {
        let python = std::env::var("LATTICE_SMTP_PYTHON").unwrap_or_else(|_| SMTP_PYTHON.into());
        if !Path::new(&python).exists() {
            return Err(format!(
                "no interpreter with aiosmtpd at {python} (run .ci/smtp.sh, or set LATTICE_SMTP_PYTHON)"
            ));
        }
        let check = std::process::Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .output()
            .map_err(|e| format!("running {python}: {e}"))?;
        if !check.status.success() {
            return Err(format!("{python} has no aiosmtpd (run .ci/smtp.sh)"));
        }
        let port = lattice_tests::free_port();
        let maildir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let child = std::process::Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            // A directory the handler creates (it does not fill in an
            // existing empty one).
            .arg(maildir.path().join("mail"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("starting aiosmtpd: {e}"))?;
        let smtp = Self {
            child,
            port,
            maildir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("aiosmtpd did not listen within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(smtp)
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far.
    fn messages(&self) -> Vec<Mail> {
        let dir = self.maildir.path().join("mail/new");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .map(|raw| Mail::parse(&String::from_utf8_lossy(&raw)))
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A received message: headers (lowercased names, unfolded) and its body
/// decoded from quoted-printable if it was sent so.
#[derive(Debug)]
struct Mail {
    headers: BTreeMap<String, String>,
    body: String,
}

impl Mail {
    fn parse(raw: &str) -> Self {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
        let mut headers = BTreeMap::new();
        let mut last: Option<String> = None;
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(name) = &last {
                    let value: &mut String = headers.get_mut(name).expect("header");
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            if let Some((name, value)) = line.split_once(':') {
                let name = name.trim().to_lowercase();
                headers.insert(name.clone(), value.trim().to_owned());
                last = Some(name);
            }
        }
        let quoted = headers
            .get("content-transfer-encoding")
            .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"));
        let body = if quoted {
            quoted_printable(body)
        } else {
            body.to_owned()
        };
        Self { headers, body }
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Scene {
    trio: Trio,
    /// `None`: aiosmtpd is not installed here (the email scenario skips,
    /// or fails with LATTICE_REQUIRE_SERVICES=1).
    smtp: Result<Smtp, String>,
}

impl std::ops::Deref for Scene {
    type Target = Trio;
    fn deref(&self) -> &Trio {
        &self.trio
    }
}

/// How long a webhook receiver has to answer in these scenarios.
const WEBHOOK_TIMEOUT_SECS: u64 = 4;

impl Scene {
    async fn start(backend: Backend, test: &str) -> Option<Self> {
        let smtp = Smtp::start();
        let smtp_url = smtp.as_ref().ok().map(Smtp::url);
        let trio = Trio::start(backend, test, |config| {
            config.notify.smtp_url = smtp_url;
            config.notify.mail_from = "Lattice <lattice@example.org>".into();
            config.notify.allow_private_webhooks = true;
            config.notify.webhook_retry_base_ms = 300;
            config.notify.webhook_timeout_secs = WEBHOOK_TIMEOUT_SECS;
            config.notify.webhook_max_attempts = 3;
        })
        .await?;
        Some(Self { trio, smtp })
    }

    async fn cleanup(self) {
        self.trio.cleanup().await;
    }

    /// Creates a webhook for `who`; returns (id, secret).
    async fn webhook(&self, who: &Person, url: &str, events: &[&str]) -> (String, String) {
        let answer = self
            .post(
                Some(who),
                "/v1/webhooks",
                json!({"url": url, "events": events}),
            )
            .await;
        assert_eq!(answer.status.as_u16(), 201, "{answer:?}");
        (answer.str("id").to_owned(), answer.str("secret").to_owned())
    }

    async fn deliveries(&self, who: &Person, webhook: &str) -> Vec<Value> {
        let answer = self
            .get(Some(who), &format!("/v1/webhooks/{webhook}/deliveries"))
            .await;
        assert!(answer.status.is_success(), "{answer:?}");
        answer.body["deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// What a receiver got: each request's headers and body.
#[derive(Clone, Default)]
pub(crate) struct Inbox(Arc<Mutex<Vec<(HeaderMap, Bytes, Instant)>>>);

impl Inbox {
    /// The JSON bodies received so far, in order.
    pub(crate) fn bodies(&self) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body, _)| serde_json::from_slice(body).unwrap_or(Value::Null))
            .collect()
    }
}

/// Webhook receivers on one loopback port: `/ok` answers 204, `/flaky`
/// answers 500 the first time and 204 after, `/hang` never answers.
pub(crate) struct Receiver {
    pub(crate) base: String,
    pub(crate) ok: Inbox,
    flaky: Inbox,
    hang: Inbox,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        let (ok, flaky, hang) = (Inbox::default(), Inbox::default(), Inbox::default());
        async fn record(inbox: &Inbox, headers: HeaderMap, body: Bytes) -> usize {
            let mut list = inbox.0.lock().unwrap();
            list.push((headers, body, Instant::now()));
            list.len()
        }
        let app = axum::Router::new()
            .route(
                "/ok",
                post(
                    |State(i): State<Inbox>, h: HeaderMap, b: Bytes| async move {
                        record(&i, h, b).await;
                        StatusCode::NO_CONTENT
                    },
                )
                .with_state(ok.clone()),
            )
            .route(
                "/flaky",
                post(
                    |State(i): State<Inbox>, h: HeaderMap, b: Bytes| async move {
                        match record(&i, h, b).await {
                            1 => StatusCode::INTERNAL_SERVER_ERROR,
                            _ => StatusCode::NO_CONTENT,
                        }
                    },
                )
                .with_state(flaky.clone()),
            )
            .route(
                "/hang",
                post(
                    |State(i): State<Inbox>, h: HeaderMap, b: Bytes| async move {
                        record(&i, h, b).await;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        StatusCode::NO_CONTENT
                    },
                )
                .with_state(hang.clone()),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base,
            ok,
            flaky,
            hang,
            _server: server,
        }
    }
}

/// Checks a delivery as a receiver must: the HMAC-SHA256 of
/// `timestamp.body` under the secret, hex, after `v1=`.
fn signature_ok(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let (Some(ts), Some(sig)) = (
        headers
            .get("lattice-timestamp")
            .and_then(|v| v.to_str().ok()),
        headers
            .get("lattice-signature")
            .and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let Some(hex_sig) = sig.strip_prefix("v1=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

async fn a_paused_then_failed_transfer_sends_email_and_webhooks(scene: &Scene) {
    let test = "notify::a_paused_then_failed_transfer_sends_email_and_webhooks";
    let smtp = match &scene.smtp {
        Ok(smtp) => Some(smtp),
        Err(reason) => {
            lattice_service::testing::require_service(test, Err(reason.clone()));
            None
        }
    };
    let alice = &scene.alice;
    let receiver = Receiver::start().await;
    let (hook, secret) = scene
        .webhook(
            alice,
            &format!("{}/ok", receiver.base),
            &["transfer.failed", "transfer.inactive"],
        )
        .await;
    let service = &scene.platform.service;
    let src = start_agent(service, &alice.token, "src", TestHooks::default()).await;
    let mut dst = start_agent(service, &alice.token, "dst", TestHooks::default()).await;
    write(&src.root().join("f"), b"payload");
    dst.stop().await;
    until_online(service, &alice.token, "dst", false).await;
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(3);
    let answer = scene
        .post(
            Some(alice),
            "/v1/transfers",
            json!({
                "source_collection": "src",
                "destination_collection": "dst",
                "items": [{"source_path": "/f", "destination_path": "/f"}],
                "label": "nightly",
                "deadline": deadline,
            }),
        )
        .await;
    assert!(answer.status.is_success(), "{answer:?}");
    let id = answer.str("id").to_owned();
    let link = format!("{}v1/transfers/{id}", service.url);

    // The webhook: one signed delivery per event, paused then failed.
    let got = wait_for("two webhook deliveries", || async {
        let list = receiver.ok.0.lock().unwrap().clone();
        (list.len() >= 2).then_some(list)
    })
    .await;
    let kinds: Vec<String> = got
        .iter()
        .map(|(headers, body, _)| {
            assert!(
                signature_ok(&secret, headers, body),
                "signature of {headers:?}"
            );
            assert!(!signature_ok("whsec_wrong", headers, body));
            let event: Value = serde_json::from_slice(body).expect("JSON event");
            assert_eq!(event["link"], json!(link), "{event}");
            assert_eq!(event["data"]["transfer_id"], json!(id), "{event}");
            assert_eq!(
                headers.get("lattice-event").unwrap().to_str().unwrap(),
                event["kind"].as_str().unwrap()
            );
            event["kind"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds, ["transfer.inactive", "transfer.failed"]);
    let log = wait_for("both deliveries logged as succeeded", || async {
        let list = scene.deliveries(alice, &hook).await;
        (list.len() == 2 && list.iter().all(|d| d["status"] == json!("succeeded"))).then_some(list)
    })
    .await;
    assert_eq!(log[0]["attempts"][0]["status_code"], json!(204), "{log:?}");

    // The email: to alice's address, with the subject and the link.
    let Some(smtp) = smtp else {
        return;
    };
    let subject = format!("Transfer \"nightly\" ({id}) failed");
    let mails = wait_for("the failure email", || async {
        let mails = smtp.messages();
        mails
            .iter()
            .any(|m| m.header("subject") == subject)
            .then_some(mails)
    })
    .await;
    let failed = mails
        .iter()
        .find(|m| m.header("subject") == subject)
        .unwrap();
    assert_eq!(failed.header("to"), "alice@example.org", "{failed:?}");
    assert!(
        failed.header("from").contains("lattice@example.org"),
        "{failed:?}"
    );
    assert!(failed.body.contains(&link), "{}", failed.body);
    assert!(failed.body.contains("deadline"), "{}", failed.body);
    assert!(
        mails
            .iter()
            .any(|m| m.header("subject") == format!("Transfer \"nightly\" ({id}) is paused")),
        "the pause is mailed too (default preferences): {mails:?}"
    );

    // Preferences: without transfer.failed by email, the next failure
    // sends no email (its webhook delivery still happens).
    let prefs = scene
        .put(
            Some(alice),
            "/v1/notifications/preferences",
            json!({"email": ["approval.requested"]}),
        )
        .await;
    assert!(prefs.status.is_success(), "{prefs:?}");
    assert_eq!(prefs.body["email"], json!(["approval.requested"]));
    assert_eq!(prefs.body["email_enabled"], json!(true));
    assert_eq!(prefs.body["email_address"], json!("alice@example.org"));
    let before = smtp.messages().len();
    let answer = scene
        .post(
            Some(alice),
            "/v1/transfers",
            json!({
                "source_collection": "src",
                "destination_collection": "dst",
                "items": [{"source_path": "/f", "destination_path": "/f"}],
                "deadline": chrono::Utc::now() + chrono::Duration::seconds(1),
            }),
        )
        .await;
    let second = answer.str("id").to_owned();
    wait_for("the second failure's webhook", || async {
        let list = receiver.ok.0.lock().unwrap().clone();
        list.iter()
            .any(|(_, body, _)| {
                String::from_utf8_lossy(body).contains(&second)
                    && String::from_utf8_lossy(body).contains("transfer.failed")
            })
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.messages().len(), before, "no email after opting out");
}

async fn a_500_is_retried_and_a_silent_receiver_blocks_nobody(scene: &Scene) {
    let alice = &scene.alice;
    let receiver = Receiver::start().await;
    let (hang, _) = scene
        .webhook(
            alice,
            &format!("{}/hang", receiver.base),
            &["transfer.failed"],
        )
        .await;
    let (flaky, secret) = scene
        .webhook(
            alice,
            &format!("{}/flaky", receiver.base),
            &["transfer.failed"],
        )
        .await;
    // The silent receiver's delivery goes first and hangs; the flaky one's
    // must not wait for it.
    let queued = Instant::now();
    let test = scene
        .post(Some(alice), &format!("/v1/webhooks/{hang}/test"), json!({}))
        .await;
    assert_eq!(test.status.as_u16(), 202, "{test:?}");
    wait_for("the silent receiver to be called", || async {
        (!receiver.hang.0.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    let test = scene
        .post(
            Some(alice),
            &format!("/v1/webhooks/{flaky}/test"),
            json!({}),
        )
        .await;
    assert_eq!(test.status.as_u16(), 202, "{test:?}");
    let got = wait_for("the flaky receiver's retry", || async {
        let list = receiver.flaky.0.lock().unwrap().clone();
        (list.len() >= 2).then_some(list)
    })
    .await;
    let elapsed = got[1].2.duration_since(queued);
    assert!(
        elapsed < Duration::from_secs(WEBHOOK_TIMEOUT_SECS),
        "the flaky receiver's second attempt came {elapsed:?} after queueing: it waited for the silent one"
    );
    for (headers, body, _) in &got {
        assert!(signature_ok(&secret, headers, body));
        // Each attempt is signed afresh; the delivery id stays.
        assert_eq!(
            headers.get("lattice-delivery"),
            got[0].0.get("lattice-delivery")
        );
    }
    let log = wait_for("the flaky delivery logged", || async {
        let list = scene.deliveries(alice, &flaky).await;
        (list.len() == 1 && list[0]["status"] == json!("succeeded")).then_some(list)
    })
    .await;
    let codes: Vec<Value> = log[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, [json!(500), json!(204)], "{log:?}");
    assert_eq!(log[0]["event"], json!("ping"));
    // The silent one times out and is retried, each attempt logged with
    // no status code and the reason.
    let log = wait_for("the silent delivery's first attempt logged", || async {
        let list = scene.deliveries(alice, &hang).await;
        let attempts = list.first()?["attempts"].as_array()?.clone();
        (!attempts.is_empty()).then_some(attempts)
    })
    .await;
    assert_eq!(log[0]["status_code"], Value::Null, "{log:?}");
    assert!(
        log[0]["error"].as_str().unwrap_or("").contains("no answer"),
        "{log:?}"
    );
}

async fn webhooks_are_their_owners_alone(scene: &Scene) {
    let (alice, bob) = (&scene.alice, &scene.bob);
    let (hook, _) = scene
        .webhook(
            alice,
            "https://hooks.example.org/lattice",
            &["flow_run.failed"],
        )
        .await;
    for path in [
        format!("/v1/webhooks/{hook}"),
        format!("/v1/webhooks/{hook}/deliveries"),
    ] {
        scene
            .get(Some(bob), &path)
            .await
            .assert_error(404, "not_found");
    }
    scene
        .delete(Some(bob), &format!("/v1/webhooks/{hook}"))
        .await
        .assert_error(404, "not_found");
    scene
        .post(Some(bob), &format!("/v1/webhooks/{hook}/test"), json!({}))
        .await
        .assert_error(404, "not_found");
    let bobs = scene.get(Some(bob), "/v1/webhooks").await;
    assert_eq!(bobs.body["webhooks"], json!([]), "{bobs:?}");
    let shown = scene
        .get(Some(alice), &format!("/v1/webhooks/{hook}"))
        .await;
    assert!(shown.status.is_success(), "{shown:?}");
    assert_eq!(shown.body.get("secret"), None, "the secret is shown once");
    assert_eq!(shown.body["events"], json!(["flow_run.failed"]));
    scene
        .get(None, "/v1/webhooks")
        .await
        .assert_error(401, "unauthorized");
    let deleted = scene
        .delete(Some(alice), &format!("/v1/webhooks/{hook}"))
        .await;
    assert_eq!(deleted.status.as_u16(), 204, "{deleted:?}");
    scene
        .get(Some(alice), &format!("/v1/webhooks/{hook}"))
        .await
        .assert_error(404, "not_found");
}

async fn bad_webhooks_and_preferences_are_400s_naming_the_field(scene: &Scene) {
    let alice = &scene.alice;
    let long = format!("https://example.org/{}", "a".repeat(3000));
    for (body, status, field) in [
        (
            json!({"url": "ftp://example.org/x", "events": ["transfer.failed"]}),
            400,
            "url",
        ),
        (
            json!({"url": "not a url", "events": ["transfer.failed"]}),
            400,
            "url",
        ),
        (
            json!({"url": "https://u:p@example.org/", "events": ["transfer.failed"]}),
            400,
            "url",
        ),
        (
            json!({"url": "https://example.org/x", "events": ["transfer.done"]}),
            400,
            "events[0]",
        ),
        (
            json!({"url": "https://example.org/x", "events": []}),
            400,
            "events",
        ),
        (
            json!({"url": "https://example.org/x", "events": ["ping"]}),
            400,
            "events[0]",
        ),
        (
            json!({"url": long, "events": ["transfer.failed"]}),
            413,
            "url",
        ),
        (json!({"url": "https://example.org/x"}), 400, "events"),
        (
            json!({"url": "https://example.org/x", "events": ["transfer.failed"], "colour": 1}),
            400,
            "colour",
        ),
    ] {
        let answer = scene.post(Some(alice), "/v1/webhooks", body.clone()).await;
        assert_eq!(answer.status.as_u16(), status, "{body}: {answer:?}");
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field),
            "{body}: `{message}` names no `{field}`"
        );
    }
    let answer = scene
        .put(
            Some(alice),
            "/v1/notifications/preferences",
            json!({"email": ["transfer.failed", "nope"]}),
        )
        .await;
    answer.assert_error(400, "bad_request");
    assert!(
        answer
            .str("message")
            .starts_with("email[1]: unknown event kind `nope`"),
        "{answer:?}"
    );
    let defaults = scene
        .get(Some(alice), "/v1/notifications/preferences")
        .await;
    assert!(defaults.body["email"]
        .as_array()
        .unwrap()
        .contains(&json!("transfer.failed")));
}

backend_suite!(
    "notify";
    a_paused_then_failed_transfer_sends_email_and_webhooks,
    a_500_is_retried_and_a_silent_receiver_blocks_nobody,
    webhooks_are_their_owners_alone,
    bad_webhooks_and_preferences_are_400s_naming_the_field,
);
