//! Collections, file operations and managed transfers through the REST API:
//! the service in-process on a real socket, two real endpoint agents
//! in-process (`run_agent` with `[[collections]]`), each hosting a temporary
//! directory, and data moving agent to agent over QUIC. Every scenario runs
//! on SQLite and on PostgreSQL (`backend_suite!`; PostgreSQL scenarios skip
//! unless it is reachable or `LATTICE_REQUIRE_SERVICES=1`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_data_plane::TestHooks;
use lattice_endpoint_agent::{
    run_agent, AgentConfig, CollectionConfig, Credentials, EndpointCredential,
};
use lattice_protocol::EndpointId;
use lattice_tests::{require_service, Answer, ServiceListener, TestService};
use serde_json::{json, Value};

use crate::{Backend, Store};

/// Hang guard for anything that waits on agents.
const PATIENCE: Duration = Duration::from_secs(60);

struct Scene {
    service: TestService,
    token: String,
    /// A second identity, for owner-only checks.
    other_token: String,
    store: Store,
}

pub(crate) struct Agent {
    endpoint_id: EndpointId,
    collection: String,
    root: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), lattice_endpoint_agent::AgentError>>>,
    state_dir: PathBuf,
    credential: EndpointCredential,
    /// Fault injection for the attempts this agent sends.
    hooks: TestHooks,
    _state: tempfile::TempDir,
}

impl Agent {
    pub(crate) fn root(&self) -> &Path {
        self.root.path()
    }

    /// Stops the agent cleanly and waits for it.
    pub(crate) async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(PATIENCE, task).await;
        }
    }

    /// Starts the agent again with the same state and collection.
    fn start(&mut self) {
        let mut config = AgentConfig::new(
            Credentials::Preset(self.credential.clone()),
            self.state_dir.clone(),
        );
        config.workers = 0;
        config.heartbeat_interval = Duration::from_millis(500);
        config.shutdown_grace = Duration::from_secs(2);
        config.data.collections = vec![CollectionConfig {
            name: self.collection.clone(),
            root: self.root.path().to_owned(),
        }];
        config.data.listen = ([127, 0, 0, 1], 0).into();
        config.data.source_hooks = self.hooks.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(run_agent(config, async move {
            let _ = stopped.await;
        })));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Scene {
    async fn start(backend: Backend, test: &str) -> Option<Self> {
        let store = Store::open(backend, test).await?;
        let service = ServiceListener::bind()
            .await
            .start(|config| store.configure(config))
            .await;
        let token = |name: &'static str| {
            let store = service.state.store.clone();
            async move {
                lattice_service::auth::tokens::bootstrap_local_identity(
                    &store,
                    name,
                    chrono::Duration::hours(1),
                )
                .await
                .expect("a local identity")
                .1
                .access_token
            }
        };
        let (token, other_token) = (token("alice").await, token("bob").await);
        Some(Scene {
            service,
            token,
            other_token,
            store,
        })
    }

    async fn cleanup(self) {
        self.store.close_after(self.service).await;
    }

    async fn get(&self, path: &str) -> Answer {
        self.service.get(path, Some(&self.token)).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.service.post_json(path, Some(&self.token), &body).await
    }

    /// Registers endpoint `name` and runs its agent hosting collection `name`.
    async fn agent(&self, name: &str) -> Agent {
        self.agent_with_hooks(name, TestHooks::default()).await
    }

    /// [`Scene::agent`] whose sending side runs `hooks`.
    async fn agent_with_hooks(&self, name: &str, hooks: TestHooks) -> Agent {
        start_agent(&self.service, &self.token, name, hooks).await
    }

    async fn until_online(&self, collection: &str, online: bool) {
        until_online(&self.service, &self.token, collection, online).await;
    }

    /// Agents `src`, holding `/f`, and `dst`, stopped and seen offline.
    async fn offline_destination(&self) -> (Agent, Agent) {
        let src = self.agent("src").await;
        let mut dst = self.agent("dst").await;
        write(&src.root().join("f"), b"payload");
        dst.stop().await;
        self.until_online("dst", false).await;
        (src, dst)
    }

    /// Waits until the transfer is paused; returns its document.
    async fn paused(&self, id: &str) -> Value {
        wait_for("the transfer to pause", || async {
            let body = self.get(&format!("/v1/transfers/{id}")).await.body;
            (body["status"] == json!("paused")).then_some(body)
        })
        .await
    }

    async fn ls(&self, collection: &str, path: &str, depth: u32) -> Answer {
        self.post(
            &format!("/v1/collections/{collection}/ls"),
            json!({"path": path, "depth": depth}),
        )
        .await
    }

    async fn transfer(&self, body: Value) -> Answer {
        self.post("/v1/transfers", body).await
    }

    /// Waits until the transfer is final; returns its document.
    async fn finished(&self, id: &str) -> Value {
        let path = format!("/v1/transfers/{id}");
        wait_for(&format!("transfer {id} to finish"), || async {
            let answer = self.get(&path).await;
            assert!(answer.status.is_success(), "{answer:?}");
            ["succeeded", "failed", "cancelled"]
                .contains(&answer.body["status"].as_str().unwrap_or(""))
                .then_some(answer.body)
        })
        .await
    }

    async fn event_codes(&self, id: &str) -> Vec<String> {
        let answer = self.get(&format!("/v1/transfers/{id}/events")).await;
        assert!(answer.status.is_success(), "{answer:?}");
        answer
            .body
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["code"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

/// Registers endpoint `name` with `token`'s identity and runs its agent
/// in-process, hosting collection `name` at a fresh temporary directory;
/// returns once the collection is online.
pub(crate) async fn start_agent(
    service: &TestService,
    token: &str,
    name: &str,
    hooks: TestHooks,
) -> Agent {
    let answer = service
        .post_json("/v1/endpoints", Some(token), &json!({"name": name}))
        .await;
    assert!(answer.status.is_success(), "{answer:?}");
    let endpoint_id: EndpointId =
        serde_json::from_value(answer.body["endpoint"]["id"].clone()).expect("endpoint id");
    let credential = EndpointCredential {
        endpoint_id,
        agent_secret: answer.str("agent_secret").to_owned(),
        service_url: service.url.to_string(),
    };
    let state = tempfile::tempdir().expect("agent state dir");
    let mut agent = Agent {
        endpoint_id,
        collection: name.to_owned(),
        root: tempfile::tempdir().expect("collection root"),
        stop: None,
        task: None,
        state_dir: state.path().to_owned(),
        credential,
        hooks,
        _state: state,
    };
    agent.start();
    until_online(service, token, name, true).await;
    agent
}

/// Waits until `token`'s identity sees `collection` as `online` (or not).
pub(crate) async fn until_online(
    service: &TestService,
    token: &str,
    collection: &str,
    online: bool,
) {
    let path = format!("/v1/collections/{collection}");
    wait_for(&format!("{collection} online={online}"), || async {
        let answer = service.get(&path, Some(token)).await;
        (answer.status.is_success() && answer.body["online"] == json!(online)).then_some(())
    })
    .await;
}

pub(crate) async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

/// Every file and directory under `root`, relative, with file contents.
fn tree(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let rel = path.strip_prefix(root).expect("under root").to_owned();
            if path.is_dir() {
                out.insert(rel, None);
                stack.push(path);
            } else {
                out.insert(rel, Some(std::fs::read(&path).expect("read")));
            }
        }
    }
    out
}

fn odd_tree(root: &Path) {
    write(&root.join("a.txt"), b"alpha");
    write(
        &root.join("dir with space/ünïcødé.txt"),
        "ünïcødé".as_bytes(),
    );
    write(
        &root.join("dir with space/new\nline"),
        b"a newline in the name",
    );
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    write(&root.join("big.bin"), &big);
    for i in 0..30 {
        write(
            &root.join(format!("many/f{i:02}")),
            format!("file {i}").as_bytes(),
        );
    }
    std::fs::create_dir_all(root.join("empty dir")).expect("mkdir");
}

// ---- scenarios ---------------------------------------------------------

async fn collections_are_registered_and_owner_only(scene: &Scene) {
    let src = scene.agent("src").await;
    let list = scene.get("/v1/collections").await;
    assert!(list.status.is_success(), "{list:?}");
    let names: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["src"]);
    let show = scene.get("/v1/collections/src").await;
    assert_eq!(show.str("root"), src.root().display().to_string());
    assert_eq!(show.str("endpoint_name"), "src");
    assert_eq!(show.body["endpoint_id"], json!(src.endpoint_id));
    let id = show.str("id").to_owned();
    assert_eq!(
        scene
            .get(&format!("/v1/collections/{id}"))
            .await
            .str("name"),
        "src"
    );

    // Another identity sees nothing and may not use it.
    let other = scene
        .service
        .get("/v1/collections", Some(&scene.other_token))
        .await;
    assert_eq!(other.body, json!([]));
    scene
        .service
        .get(&format!("/v1/collections/{id}"), Some(&scene.other_token))
        .await
        .assert_error(403, "forbidden");
    scene
        .service
        .post_json(
            &format!("/v1/collections/{id}/ls"),
            Some(&scene.other_token),
            &json!({"path": "/"}),
        )
        .await
        .assert_error(403, "forbidden");
    scene
        .get("/v1/collections/nope")
        .await
        .assert_error(404, "not_found");
    scene
        .get(&format!("/v1/collections/{}", uuid_like()))
        .await
        .assert_error(404, "not_found");
    scene
        .ls("nope", "/", 1)
        .await
        .assert_error(404, "not_found");
}

fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".into()
}

async fn file_operations_handle_odd_names(scene: &Scene) {
    let src = scene.agent("src").await;
    let odd = "/dir with space/ünï\nline";
    let made = scene
        .post(
            "/v1/collections/src/mkdir",
            json!({"path": format!("{odd}/sub"), "parents": true}),
        )
        .await;
    assert!(made.status.is_success(), "{made:?}");
    assert_eq!(made.body["kind"], json!("dir"));
    assert!(src.root().join("dir with space/ünï\nline/sub").is_dir());
    write(
        &src.root().join("dir with space/ünï\nline/sub/data.bin"),
        b"0123456789",
    );

    let listing = scene.ls("src", "/", 4).await;
    assert!(listing.status.is_success(), "{listing:?}");
    let paths: Vec<&str> = listing.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/dir with space/ünï\nline/sub/data.bin"),
        "{paths:?}"
    );
    // Depth 1 does not descend.
    let shallow = scene.ls("src", "/", 1).await;
    assert_eq!(
        shallow.body["entries"].as_array().unwrap().len(),
        1,
        "{shallow:?}"
    );

    let stat = scene
        .post(
            "/v1/collections/src/stat",
            json!({"path": format!("{odd}/sub/data.bin")}),
        )
        .await;
    assert_eq!(stat.body["size"], json!(10), "{stat:?}");
    assert_eq!(stat.body["kind"], json!("file"));

    let renamed = scene
        .post(
            "/v1/collections/src/rename",
            json!({"from": format!("{odd}/sub/data.bin"), "to": "/top level.bin"}),
        )
        .await;
    assert!(renamed.status.is_success(), "{renamed:?}");
    assert_eq!(
        std::fs::read(src.root().join("top level.bin")).unwrap(),
        b"0123456789"
    );

    scene
        .post(
            "/v1/collections/src/mkdir",
            json!({"path": "/top level.bin"}),
        )
        .await
        .assert_error(409, "conflict");
    scene
        .post(
            "/v1/collections/src/delete",
            json!({"path": "/dir with space"}),
        )
        .await
        .assert_error(409, "conflict");
    let deleted = scene
        .post(
            "/v1/collections/src/delete",
            json!({"path": "/dir with space", "recursive": true}),
        )
        .await;
    assert_eq!(
        deleted.body,
        json!({"files": 0, "directories": 3}),
        "{deleted:?}"
    );
    assert!(!src.root().join("dir with space").exists());
    scene
        .post(
            "/v1/collections/src/stat",
            json!({"path": "/dir with space"}),
        )
        .await
        .assert_error(404, "not_found");
    scene
        .post(
            "/v1/collections/src/delete",
            json!({"path": "/"  , "recursive": true}),
        )
        .await
        .assert_error(400, "bad_request");
    scene
        .post("/v1/collections/src/ls", json!({"path": "/", "depth": 0}))
        .await
        .assert_error(400, "bad_request");
}

async fn hostile_paths_are_refused(scene: &Scene) {
    let src = scene.agent("src").await;
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("secret"), b"not yours");
    std::os::unix::fs::symlink(outside.path(), src.root().join("escape")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        src.root().join("secret-link"),
    )
    .unwrap();
    write(&src.root().join("inside"), b"fine");

    for path in ["..", "../", "/..", "a/../../etc", "/../etc/passwd"] {
        scene
            .ls("src", path, 1)
            .await
            .assert_error(400, "bad_request");
    }
    // An absolute path means the collection root, never the host's root.
    scene
        .post("/v1/collections/src/stat", json!({"path": "/etc/passwd"}))
        .await
        .assert_error(404, "not_found");
    // Symlinks leading out are refused by the kernel, for every operation.
    let message = scene
        .post(
            "/v1/collections/src/stat",
            json!({"path": "/escape/secret"}),
        )
        .await
        .assert_error(403, "forbidden");
    assert!(message.contains("outside"), "{message}");
    scene
        .ls("src", "/escape", 1)
        .await
        .assert_error(403, "forbidden");
    scene
        .post("/v1/collections/src/mkdir", json!({"path": "/escape/new"}))
        .await
        .assert_error(403, "forbidden");
    scene
        .post(
            "/v1/collections/src/rename",
            json!({"from": "/inside", "to": "/escape/stolen"}),
        )
        .await
        .assert_error(403, "forbidden");
    scene
        .post(
            "/v1/collections/src/rename",
            json!({"from": "/inside", "to": "../stolen"}),
        )
        .await
        .assert_error(400, "bad_request");
    scene
        .post(
            "/v1/collections/src/delete",
            json!({"path": "/escape/secret"}),
        )
        .await
        .assert_error(403, "forbidden");
    // `stat` reports a symlink itself (lstat), never what it points to.
    let link = scene
        .post("/v1/collections/src/stat", json!({"path": "/secret-link"}))
        .await;
    assert_eq!(link.body["kind"], json!("symlink"), "{link:?}");
    scene
        .ls("src", "/secret-link", 1)
        .await
        .assert_error(403, "forbidden");
    // A listing reports the symlink without following it; deleting it
    // removes the link, never the target.
    let listing = scene.ls("src", "/", 1).await;
    let kinds: BTreeMap<String, String> = listing.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(kinds["escape"], "symlink");
    let deleted = scene
        .post(
            "/v1/collections/src/delete",
            json!({"path": "/escape", "recursive": true}),
        )
        .await;
    assert!(deleted.status.is_success(), "{deleted:?}");
    assert_eq!(
        std::fs::read(outside.path().join("secret")).unwrap(),
        b"not yours"
    );
    // Transfers refuse `..` up front.
    scene
        .transfer(
            json!({"source_collection": "src", "destination_collection": "src",
            "items": [{"source_path": "/../etc", "destination_path": "/x", "recursive": true}]}),
        )
        .await
        .assert_error(400, "bad_request");
}

async fn an_offline_agent_is_a_clear_conflict(scene: &Scene) {
    let mut src = scene.agent("src").await;
    src.stop().await;
    scene.until_online("src", false).await;
    let message = scene.ls("src", "/", 1).await.assert_error(409, "conflict");
    assert!(message.contains("offline"), "{message}");
    // It comes back.
    src.start();
    scene.until_online("src", true).await;
    assert!(scene.ls("src", "/", 1).await.status.is_success());
}

async fn a_recursive_transfer_is_byte_identical(scene: &Scene) {
    let src = scene.agent("src").await;
    let dst = scene.agent("dst").await;
    odd_tree(src.root());
    let answer = scene
        .transfer(json!({
            "source_collection": "src",
            "destination_collection": "dst",
            "items": [{"source_path": "/", "destination_path": "/copy", "recursive": true}],
            "label": "tree",
        }))
        .await;
    assert_eq!(answer.status.as_u16(), 201, "{answer:?}");
    let id = answer.str("id").to_owned();
    let done = scene.finished(&id).await;
    assert_eq!(done["status"], json!("succeeded"), "{done}");
    assert_eq!(tree(src.root()), tree(&dst.root().join("copy")));
    let files = tree(src.root()).values().filter(|v| v.is_some()).count() as u64;
    assert_eq!(done["counters"]["files"], json!(files), "{done}");
    assert_eq!(
        done["counters"]["bytes_verified"],
        done["counters"]["bytes_transferred"]
    );
    assert_eq!(done["items_done"], json!(1));
    assert_eq!(done["label"], json!("tree"));
    let checksums = done["checksums"].as_array().expect("checksums");
    assert_eq!(checksums.len() as u64, files, "{done}");
    for (rel, data) in tree(src.root()) {
        let Some(data) = data else { continue };
        let rel = rel.to_string_lossy().into_owned();
        let sum = checksums
            .iter()
            .find(|c| c["path"] == json!(rel))
            .unwrap_or_else(|| panic!("no checksum for {rel:?}: {done}"));
        assert_eq!(sum["blake3"], json!(blake3_hex(&data)), "{rel:?}");
    }
    let codes = scene.event_codes(&id).await;
    assert_eq!(
        codes.first().map(String::as_str),
        Some("SUBMITTED"),
        "{codes:?}"
    );
    assert_eq!(
        codes.last().map(String::as_str),
        Some("SUCCEEDED"),
        "{codes:?}"
    );

    // The same transfer again with sync level `checksum` sends nothing.
    let again = scene
        .transfer(json!({
            "source_collection": "src",
            "destination_collection": "dst",
            "items": [{"source_path": "/", "destination_path": "/copy", "recursive": true}],
            "options": {"sync_level": "checksum"},
        }))
        .await;
    let done = scene.finished(again.str("id")).await;
    assert_eq!(done["status"], json!("succeeded"), "{done}");
    assert_eq!(done["counters"]["files"], json!(0), "{done}");
    assert_eq!(done["counters"]["files_skipped"], json!(files), "{done}");
}

/// The standard blake3 of the whole file (what `b3sum` prints); the engine
/// merges per-chunk values, so this checks that independently.
fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

async fn a_missing_source_fails_with_file_not_found(scene: &Scene) {
    let src = scene.agent("src").await;
    let _dst = scene.agent("dst").await;
    // The source agent is asked at submission: refused at once, named.
    let refused = scene
        .transfer(json!({
            "source_collection": "src",
            "destination_collection": "dst",
            "items": [{"source_path": "/does not exist", "destination_path": "/x"}],
        }))
        .await;
    assert_eq!(refused.status.as_u16(), 404, "{refused:?}");
    assert!(
        refused.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("items[0]: `/does not exist` does not exist")),
        "{refused:?}"
    );
    // Past the items looked at on submission, it is the task's fault.
    let mut items = Vec::new();
    for n in 0..lattice_service::transfers::submission::PROBED_ITEMS {
        write(&src.root().join(format!("f{n}")), b"f");
        items.push(json!({"source_path": format!("/f{n}"), "destination_path": format!("/f{n}")}));
    }
    items.push(json!({"source_path": "/does not exist", "destination_path": "/x"}));
    let answer = scene
        .transfer(json!({
            "source_collection": "src",
            "destination_collection": "dst",
            "items": items,
        }))
        .await;
    let id = answer.str("id").to_owned();
    let done = scene.finished(&id).await;
    assert_eq!(done["status"], json!("failed"), "{done}");
    let message = done["status_message"].as_str().unwrap_or("");
    assert!(message.contains("FILE_NOT_FOUND"), "{done}");
    let events = scene.get(&format!("/v1/transfers/{id}/events")).await.body;
    let fault = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["code"] == json!("FILE_NOT_FOUND"))
        .unwrap_or_else(|| panic!("no FILE_NOT_FOUND event: {events}"));
    assert_eq!(fault["fault"], json!(true));
    assert!(done["counters"]["faults"].as_u64().unwrap() >= 1, "{done}");
}

async fn submission_ids_make_resubmission_idempotent(scene: &Scene) {
    let src = scene.agent("src").await;
    let _dst = scene.agent("dst").await;
    write(&src.root().join("one"), b"1");
    let body = json!({
        "source_collection": "src",
        "destination_collection": "dst",
        "items": [{"source_path": "/one", "destination_path": "/one"}],
        "submission_id": "nightly-2026-11-23",
    });
    let first = scene.transfer(body.clone()).await;
    assert_eq!(first.status.as_u16(), 201, "{first:?}");
    let second = scene.transfer(body).await;
    assert_eq!(second.status.as_u16(), 200, "{second:?}");
    assert_eq!(first.str("id"), second.str("id"));
    let list = scene.get("/v1/transfers").await;
    assert_eq!(list.body.as_array().unwrap().len(), 1, "{list:?}");
    // Another identity's submission id space is its own, and it cannot see ours.
    scene
        .service
        .get(
            &format!("/v1/transfers/{}", first.str("id")),
            Some(&scene.other_token),
        )
        .await
        .assert_error(403, "forbidden");
    scene.finished(first.str("id")).await;
}

async fn a_transfer_to_an_offline_endpoint_pauses_and_can_be_cancelled(scene: &Scene) {
    let (_src, mut dst) = scene.offline_destination().await;
    let answer = scene
        .transfer(json!({
            "source_collection": "src",
            "destination_collection": "dst",
            "items": [{"source_path": "/f", "destination_path": "/f"}],
        }))
        .await;
    let id = answer.str("id").to_owned();
    let paused = scene.paused(&id).await;
    assert!(
        paused["status_message"]
            .as_str()
            .unwrap()
            .contains("offline"),
        "{paused}"
    );
    let cancelled = scene
        .post(&format!("/v1/transfers/{id}/cancel"), json!({}))
        .await;
    assert_eq!(
        cancelled.body["status"],
        json!("cancelled"),
        "{cancelled:?}"
    );
    scene
        .post(&format!("/v1/transfers/{id}/cancel"), json!({}))
        .await
        .assert_error(409, "conflict");
    // The endpoint returning does not revive it.
    dst.start();
    scene.until_online("dst", true).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!dst.root().join("f").exists());
    let codes = scene.event_codes(&id).await;
    assert!(codes.contains(&"PAUSED".to_owned()), "{codes:?}");
    assert_eq!(
        codes.last().map(String::as_str),
        Some("CANCELLED"),
        "{codes:?}"
    );
}

async fn an_offline_endpoint_pauses_then_resumes(scene: &Scene) {
    let (_src, mut dst) = scene.offline_destination().await;
    let answer = scene
        .transfer(json!({
            "source_collection": "src",
            "destination_collection": "dst",
            "items": [{"source_path": "/f", "destination_path": "/g"}],
        }))
        .await;
    let id = answer.str("id").to_owned();
    scene.paused(&id).await;
    dst.start();
    let done = scene.finished(&id).await;
    assert_eq!(done["status"], json!("succeeded"), "{done}");
    assert_eq!(std::fs::read(dst.root().join("g")).unwrap(), b"payload");
    let codes = scene.event_codes(&id).await;
    assert!(codes.contains(&"RESUMED".to_owned()), "{codes:?}");
}

async fn a_deadline_ends_a_paused_transfer(scene: &Scene) {
    let (_src, _dst) = scene.offline_destination().await;
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(2);
    let answer = scene
        .transfer(json!({
            "source_collection": "src",
            "destination_collection": "dst",
            "items": [{"source_path": "/f", "destination_path": "/f"}],
            "deadline": deadline,
        }))
        .await;
    let id = answer.str("id").to_owned();
    let done = scene.finished(&id).await;
    assert_eq!(done["status"], json!("failed"), "{done}");
    let codes = scene.event_codes(&id).await;
    assert_eq!(
        codes.last().map(String::as_str),
        Some("DEADLINE_EXCEEDED"),
        "{codes:?}"
    );
    assert!(chrono::Utc::now() >= deadline);
}

async fn bad_transfer_requests_are_4xx(scene: &Scene) {
    let _src = scene.agent("src").await;
    scene
        .transfer(json!({"source_collection": "src", "destination_collection": "src", "items": []}))
        .await
        .assert_error(400, "bad_request");
    scene
        .transfer(
            json!({"source_collection": "src", "destination_collection": "nope",
            "items": [{"source_path": "/a", "destination_path": "/b"}]}),
        )
        .await
        .assert_error(404, "not_found");
    scene
        .transfer(json!({"source_collection": "src", "destination_collection": "src",
            "items": [{"source_path": "/a", "destination_path": "/b"}], "options": {"sync_level": "sometimes"}}))
        .await
        .assert_error(400, "bad_request");
    scene
        .transfer(json!({"source_collection": "src", "destination_collection": "src",
            "items": [{"source_path": "/a", "destination_path": "/b"}], "deadline": "2001-01-01T00:00:00Z"}))
        .await
        .assert_error(400, "bad_request");
    for (tuning, field) in [
        (json!({"connections": 0}), "tuning.connections"),
        (json!({"connections": 17}), "tuning.connections"),
        (
            json!({"streams_per_connection": 65}),
            "tuning.streams_per_connection",
        ),
        (json!({"chunk_size": 3 << 20}), "tuning.chunk_size"),
        (json!({"chunk_size": 32 << 10}), "tuning.chunk_size"),
        (json!({"chunk_size": 2u64 << 30}), "tuning.chunk_size"),
    ] {
        let message = scene
            .transfer(
                json!({"source_collection": "src", "destination_collection": "src",
                "items": [{"source_path": "/a", "destination_path": "/b"}], "tuning": tuning}),
            )
            .await
            .assert_error(400, "bad_request");
        assert!(message.contains(field), "{tuning}: {message}");
    }
    scene
        .transfer(
            json!({"source_collection": "src", "destination_collection": "src",
            "items": [{"source_path": "/a", "destination_path": "/b"}], "tuning": {"window": 1}}),
        )
        .await
        .assert_error(400, "bad_request");
    scene
        .get(&format!("/v1/transfers/{}", uuid_like()))
        .await
        .assert_error(404, "not_found");
    scene
        .get("/v1/transfers/not-an-id")
        .await
        .assert_error(400, "bad_request");
}

/// A tmpfs of `size` mounted at `dir` (inside a collection root) for the
/// guard's lifetime. Needs root: `None` (SKIPPED) otherwise, unless
/// LATTICE_REQUIRE_SERVICES=1, which fails instead.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(test: &str, dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))
            .and_then(|out| {
                out.status.success().then_some(()).ok_or_else(|| {
                    format!(
                        "cannot mount a tmpfs (needs root): {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                })
            });
        require_service(test, mounted).then(|| Tmpfs(dir.to_owned()))
    }

    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount -o remount");
        assert!(status.success(), "remounting {:?} with size={size}", self.0);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&self.0)
            .status();
    }
}

/// Names left in `dir` (a full destination must not keep partial files).
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn a_full_destination_is_no_space_left(scene: &Scene) {
    let src = scene.agent("src").await;
    let dst = scene.agent("dst").await;
    let data: Vec<u8> = (0..24u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    write(&src.root().join("big.bin"), &data);
    let small = dst.root().join("small");
    let Some(tmpfs) = Tmpfs::mount("data::a_full_destination_is_no_space_left", &small, "4m")
    else {
        return;
    };
    let submit = |fail_on_quota: bool| {
        scene.transfer(json!({
            "source_collection": "src",
            "destination_collection": "dst",
            "items": [{"source_path": "/big.bin", "destination_path": "/small/big.bin"}],
            "options": {"fail_on_quota": fail_on_quota},
        }))
    };

    // With fail_on_quota: the task fails for good, and cleanly.
    let answer = submit(true).await;
    assert_eq!(answer.status.as_u16(), 201, "{answer:?}");
    let id = answer.str("id").to_owned();
    let done = scene.finished(&id).await;
    assert_eq!(done["status"], json!("failed"), "{done}");
    let message = done["status_message"].as_str().unwrap_or("");
    assert!(message.contains("NO_SPACE_LEFT"), "{done}");
    assert!(
        scene
            .event_codes(&id)
            .await
            .iter()
            .any(|c| c == "NO_SPACE_LEFT"),
        "{done}"
    );
    assert_eq!(names_in(&small), Vec::<String>::new(), "partial files left");

    // Without it: a retryable fault; the task stays active and retries,
    // then succeeds once there is room.
    let answer = submit(false).await;
    let id = answer.str("id").to_owned();
    wait_for("a NO_SPACE_LEFT event while the task retries", || async {
        scene
            .event_codes(&id)
            .await
            .iter()
            .any(|c| c == "NO_SPACE_LEFT")
            .then_some(())
    })
    .await;
    let info = scene.get(&format!("/v1/transfers/{id}")).await.body;
    assert_eq!(info["status"], json!("active"), "{info}");
    tmpfs.resize("64m");
    let done = scene.finished(&id).await;
    assert_eq!(done["status"], json!("succeeded"), "{done}");
    let copied = std::fs::read(small.join("big.bin")).expect("copied file");
    assert!(copied == data, "the copy differs from the source");
    assert_eq!(names_in(&small), vec!["big.bin".to_owned()]);
    drop(tmpfs);
}

async fn delete_tasks_remove_trees_and_report_counts(scene: &Scene) {
    let dst = scene.agent("dst").await;
    let root = dst.root();
    // 3 directories of 400 files, one name with a newline, a symlink out
    // (unlinked, never followed) and a file outside it that must survive.
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("keep"), b"keep");
    for d in 0..3 {
        for f in 0..400 {
            write(&root.join(format!("tree/d{d}/f {f}")), b"x");
        }
    }
    write(&root.join("tree/new\nline"), b"y");
    std::os::unix::fs::symlink(outside.path(), root.join("tree/out")).unwrap();
    write(&root.join("single"), b"z");

    let answer = scene
        .post(
            "/v1/deletes",
            json!({"collection": "dst", "items": [{"path": "/tree"}, {"path": "/single"}],
                   "recursive": true, "label": "cleanup"}),
        )
        .await;
    assert_eq!(answer.status.as_u16(), 201, "{answer:?}");
    assert_eq!(
        answer.body["kind"],
        json!({"type": "delete", "ignore_missing": false})
    );
    let id = answer.str("id").to_owned();
    let done = scene.finished(&id).await;
    assert_eq!(done["status"], json!("succeeded"), "{done}");
    // 1200 + the newline file + the symlink + /single; tree, d0..d2.
    assert_eq!(done["counters"]["files"], json!(1203), "{done}");
    assert_eq!(done["counters"]["directories"], json!(4), "{done}");
    assert_eq!(done["items_done"], json!(2), "{done}");
    assert!(!root.join("tree").exists() && !root.join("single").exists());
    assert_eq!(std::fs::read(outside.path().join("keep")).unwrap(), b"keep");
    let codes = scene.event_codes(&id).await;
    assert_eq!(codes, ["SUBMITTED", "SUCCEEDED"], "{codes:?}");

    // A missing path fails the task with FILE_NOT_FOUND, unless ignored.
    let missing = |ignore: bool| {
        scene.post(
            "/v1/deletes",
            json!({"collection": "dst", "items": [{"path": "/not here"}], "ignore_missing": ignore}),
        )
    };
    let id = missing(false).await.str("id").to_owned();
    let done = scene.finished(&id).await;
    assert_eq!(done["status"], json!("failed"), "{done}");
    assert!(
        done["status_message"]
            .as_str()
            .unwrap_or("")
            .contains("FILE_NOT_FOUND"),
        "{done}"
    );
    let id = missing(true).await.str("id").to_owned();
    let done = scene.finished(&id).await;
    assert_eq!(done["status"], json!("succeeded"), "{done}");
    assert_eq!(done["counters"]["files"], json!(0), "{done}");

    // A non-empty directory without `recursive` fails for good, and keeps it.
    write(&root.join("full/f"), b"f");
    let answer = scene
        .post(
            "/v1/deletes",
            json!({"collection": "dst", "items": [{"path": "/full"}]}),
        )
        .await;
    let done = scene.finished(answer.str("id")).await;
    assert_eq!(done["status"], json!("failed"), "{done}");
    assert!(
        done["status_message"]
            .as_str()
            .unwrap_or("")
            .contains("not empty"),
        "{done}"
    );
    assert!(root.join("full/f").exists());
}

async fn a_delete_task_waits_for_its_offline_agent(scene: &Scene) {
    let mut dst = scene.agent("dst").await;
    write(&dst.root().join("old/a"), b"a");
    dst.stop().await;
    scene.until_online("dst", false).await;
    let body = json!({"collection": "dst", "items": [{"path": "/old"}], "recursive": true,
                      "submission_id": "cleanup-1"});
    let answer = scene.post("/v1/deletes", body.clone()).await;
    assert_eq!(answer.status.as_u16(), 201, "{answer:?}");
    let id = answer.str("id").to_owned();
    wait_for("the delete to pause", || async {
        let body = scene.get(&format!("/v1/transfers/{id}")).await.body;
        (body["status"] == json!("paused")).then_some(())
    })
    .await;
    assert!(dst.root().join("old/a").exists());
    // Resubmitting is idempotent.
    let again = scene.post("/v1/deletes", body).await;
    assert_eq!(again.status.as_u16(), 200, "{again:?}");
    assert_eq!(again.str("id"), id);
    dst.start();
    let done = scene.finished(&id).await;
    assert_eq!(done["status"], json!("succeeded"), "{done}");
    assert!(!dst.root().join("old").exists());
    let codes = scene.event_codes(&id).await;
    assert!(
        codes.contains(&"PAUSED".to_owned()) && codes.contains(&"RESUMED".to_owned()),
        "{codes:?}"
    );
}

async fn bad_delete_requests_are_4xx(scene: &Scene) {
    let _dst = scene.agent("dst").await;
    let in_dst = |items: Value| json!({"collection": "dst", "items": items});
    let past_deadline = json!({"collection": "dst", "items": [{"path": "/a"}],
                               "deadline": "2000-01-01T00:00:00Z"});
    for (body, status, needle) in [
        (in_dst(json!([])), 400, "at least one"),
        (in_dst(json!([{"path": "/a/../.."}])), 400, ".."),
        (in_dst(json!([{"path": "/"}])), 400, "root"),
        (in_dst(json!([{"path": "/./"}])), 400, "root"),
        (in_dst(json!([{"path": ""}])), 400, "required"),
        (
            json!({"collection": "nowhere", "items": [{"path": "/a"}]}),
            404,
            "does not exist",
        ),
        (in_dst(json!([{"nope": "/a"}])), 400, "path"),
        (past_deadline, 400, "future"),
    ] {
        let answer = scene.post("/v1/deletes", body.clone()).await;
        let code = if status == 404 {
            "not_found"
        } else {
            "bad_request"
        };
        let message = answer.assert_error(status, code);
        assert!(message.contains(needle), "{body}: {message}");
    }
    let other = scene
        .service
        .post_json(
            "/v1/deletes",
            Some(&scene.other_token),
            &in_dst(json!([{"path": "/a"}])),
        )
        .await;
    // Another identity sees no `dst` of its own.
    other.assert_error(404, "not_found");
}

/// 40 MiB: five 8 MiB chunks at the engine's default tuning.
fn big_pattern(seed: u32) -> Vec<u8> {
    (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 24) as u8)
        .collect()
}

async fn a_chunk_corrupted_in_flight_is_detected_and_sent_again(scene: &Scene) {
    corrupt_one_chunk(scene, None).await;
}

/// The task's tuning reaches both engines: with 1 MiB chunks the one
/// corrupted chunk costs 1 MiB (not the default 8 MiB), over one connection.
async fn a_task_tuning_reaches_the_engine(scene: &Scene) {
    corrupt_one_chunk(scene, Some(1 << 20)).await;
}

/// Transfers a 40 MiB file whose third chunk is corrupted once in flight.
async fn corrupt_one_chunk(scene: &Scene, chunk_size: Option<u64>) {
    let once = Arc::new(AtomicBool::new(true));
    let hooks = TestHooks {
        corrupt_chunk: Some(Arc::new(move |_, index| {
            index == 2 && once.swap(false, Ordering::SeqCst)
        })),
        ..TestHooks::default()
    };
    let src = scene.agent_with_hooks("src", hooks).await;
    let dst = scene.agent("dst").await;
    let data = big_pattern(1);
    write(&src.root().join("big.bin"), &data);
    let mut request = json!({
        "source_collection": "src",
        "destination_collection": "dst",
        "items": [{"source_path": "/big.bin", "destination_path": "/big.bin"}],
    });
    if let Some(size) = chunk_size {
        request["tuning"] = json!({"chunk_size": size, "connections": 1});
    }
    let answer = scene.transfer(request.clone()).await;
    assert_eq!(
        answer.body["tuning"],
        request.get("tuning").cloned().unwrap_or(json!({}))
    );
    let id = answer.str("id").to_owned();
    let done = scene.finished(&id).await;
    assert_eq!(done["status"], json!("succeeded"), "{done}");
    let copied = std::fs::read(dst.root().join("big.bin")).unwrap();
    assert!(copied == data, "the copy differs from the source");
    assert_eq!(
        done["checksums"][0]["blake3"],
        json!(blake3_hex(&data)),
        "{done}"
    );
    let codes = scene.event_codes(&id).await;
    assert_eq!(
        codes.iter().filter(|c| *c == "VERIFY_CHECKSUM").count(),
        1,
        "one VERIFY_CHECKSUM event: {codes:?}"
    );
    assert_eq!(done["counters"]["faults"], json!(1), "{done}");
    assert_eq!(
        done["counters"]["bytes_transferred"],
        json!(data.len() as u64 + chunk_size.unwrap_or(8 << 20)),
        "the corrupted chunk is sent twice: {done}"
    );
}

async fn a_source_changed_during_its_transfer_is_read_again(scene: &Scene) {
    // The collection root exists only once the agent does: the hook learns
    // the file's path afterwards.
    let target: Arc<std::sync::Mutex<Option<PathBuf>>> = Arc::default();
    let once = Arc::new(AtomicBool::new(true));
    let hooks = TestHooks {
        after_chunk_sent: Some(Arc::new({
            let target = target.clone();
            move |_, index| {
                let path = target.lock().unwrap().clone();
                if let Some(path) =
                    path.filter(|_| index == 0 && once.swap(false, Ordering::SeqCst))
                {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .unwrap();
                    f.write_all(&[7u8; 100_000]).unwrap();
                }
            }
        })),
        ..TestHooks::default()
    };
    let src = scene.agent_with_hooks("src", hooks).await;
    let dst = scene.agent("dst").await;
    let path = src.root().join("growing.bin");
    *target.lock().unwrap() = Some(path.clone());
    write(&path, &big_pattern(2));
    let answer = scene
        .transfer(json!({
            "source_collection": "src",
            "destination_collection": "dst",
            "items": [{"source_path": "/growing.bin", "destination_path": "/growing.bin"}],
        }))
        .await;
    let id = answer.str("id").to_owned();
    let done = scene.finished(&id).await;
    assert_eq!(done["status"], json!("succeeded"), "{done}");
    let now = std::fs::read(&path).unwrap();
    assert_eq!(now.len(), (40 << 20) + 100_000);
    let copied = std::fs::read(dst.root().join("growing.bin")).unwrap();
    assert!(copied == now, "the copy is not the file as it ended up");
    assert_eq!(
        done["checksums"][0]["blake3"],
        json!(blake3_hex(&now)),
        "{done}"
    );
    let codes = scene.event_codes(&id).await;
    assert!(codes.iter().any(|c| c == "FILE_SIZE_CHANGED"), "{codes:?}");
}

async fn a_vanished_source_file_is_skipped_or_fails(scene: &Scene) {
    // Removes the file named `gone` just before the source opens it.
    let tree: Arc<std::sync::Mutex<Option<PathBuf>>> = Arc::default();
    let hooks = TestHooks {
        before_read: Some(Arc::new({
            let tree = tree.clone();
            move |rel| {
                if let Some(tree) = tree.lock().unwrap().clone() {
                    if rel.ends_with("gone") {
                        let _ = std::fs::remove_file(tree.join(rel));
                    }
                }
            }
        })),
        ..TestHooks::default()
    };
    let src = scene.agent_with_hooks("src", hooks).await;
    let dst = scene.agent("dst").await;
    *tree.lock().unwrap() = Some(src.root().join("tree"));
    for skip in [true, false] {
        write(&src.root().join("tree/keep"), b"kept");
        write(&src.root().join("tree/sub/gone"), b"vanishes");
        let destination = format!("/copy-{skip}");
        let answer = scene
            .transfer(json!({
                "source_collection": "src",
                "destination_collection": "dst",
                "items": [{"source_path": "/tree", "destination_path": destination, "recursive": true}],
                "options": {"skip_source_errors": skip},
            }))
            .await;
        let id = answer.str("id").to_owned();
        let done = scene.finished(&id).await;
        let codes = scene.event_codes(&id).await;
        assert!(codes.iter().any(|c| c == "FILE_NOT_FOUND"), "{codes:?}");
        if skip {
            assert_eq!(done["status"], json!("succeeded"), "{done}");
            assert_eq!(done["counters"]["files"], json!(1), "{done}");
            assert_eq!(done["counters"]["files_skipped"], json!(1), "{done}");
            let copy = dst.root().join("copy-true");
            assert_eq!(std::fs::read(copy.join("keep")).unwrap(), b"kept");
            assert!(!copy.join("sub/gone").exists());
            let events = scene.get(&format!("/v1/transfers/{id}/events")).await.body;
            let event = events
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["code"] == json!("FILE_NOT_FOUND"))
                .cloned()
                .unwrap();
            assert_eq!(event["path"], json!("sub/gone"), "{event}");
        } else {
            assert_eq!(done["status"], json!("failed"), "{done}");
            let message = done["status_message"].as_str().unwrap_or("");
            assert!(message.contains("FILE_NOT_FOUND"), "{done}");
        }
    }
}

/// The partial files under `root` and the restart journals of `agent`.
fn leftovers(root: &Path, agent: &Agent) -> (Vec<String>, Vec<String>) {
    let partials = names_in(root)
        .into_iter()
        .filter(|n| n.starts_with(lattice_data_plane::PARTIAL_PREFIX))
        .collect();
    let journals_dir = agent.state_dir.join("data").join("journals");
    let journals = if journals_dir.exists() {
        names_in(&journals_dir)
    } else {
        Vec::new()
    };
    (partials, journals)
}

/// A transfer the service gives up on (cancelled, past its deadline)
/// while a file is half-written leaves neither the partial file nor the
/// restart journal at the destination: no retry would resume them.
async fn an_abandoned_transfer_leaves_nothing_behind(scene: &Scene) {
    // Pace the source (reads run on the blocking pool): 40 chunks of 1 MiB
    // on two streams at 200 ms a chunk take 4 s.
    let hooks = TestHooks {
        before_read: Some(Arc::new(|_| std::thread::sleep(Duration::from_millis(200)))),
        ..TestHooks::default()
    };
    let src = scene.agent_with_hooks("src", hooks).await;
    let dst = scene.agent("dst").await;
    write(&src.root().join("big.bin"), &big_pattern(3));
    for how in ["cancel", "deadline"] {
        let destination = format!("/{how}.bin");
        let mut body = json!({
            "source_collection": "src",
            "destination_collection": "dst",
            "items": [{"source_path": "/big.bin", "destination_path": destination}],
            "tuning": {"connections": 1, "streams_per_connection": 2, "chunk_size": 1 << 20},
        });
        if how == "deadline" {
            let at = chrono::Utc::now() + chrono::Duration::seconds(2);
            body["deadline"] = json!(at);
        }
        let answer = scene.transfer(body).await;
        assert_eq!(answer.status.as_u16(), 201, "{answer:?}");
        let id = answer.str("id").to_owned();
        if how == "cancel" {
            wait_for("a partial file and its journal", || async {
                let (partials, journals) = leftovers(dst.root(), &dst);
                (!partials.is_empty() && !journals.is_empty()).then_some(())
            })
            .await;
            let cancelled = scene
                .post(&format!("/v1/transfers/{id}/cancel"), json!({}))
                .await;
            assert!(cancelled.status.is_success(), "{cancelled:?}");
        }
        let done = scene.finished(&id).await;
        let expected = if how == "cancel" {
            "cancelled"
        } else {
            "failed"
        };
        assert_eq!(done["status"], json!(expected), "{done}");
        assert_eq!(done["items_done"], json!(0), "{done}");
        if how == "deadline" {
            // Part of the file was written before the deadline (a cancel
            // comes once a partial file was seen, before progress is reported).
            assert!(
                done["counters"]["bytes_transferred"].as_u64().unwrap() > 0,
                "{done}"
            );
        }
        wait_for(
            "the destination to discard the partial file and journal",
            || async {
                let (partials, journals) = leftovers(dst.root(), &dst);
                (partials.is_empty() && journals.is_empty()).then_some(())
            },
        )
        .await;
        assert!(!dst.root().join(&destination[1..]).exists());
        if how == "deadline" {
            let codes = scene.event_codes(&id).await;
            assert!(codes.iter().any(|c| c == "DEADLINE_EXCEEDED"), "{codes:?}");
        }
    }
}

backend_suite!(
    "data";
    collections_are_registered_and_owner_only,
    file_operations_handle_odd_names,
    hostile_paths_are_refused,
    an_offline_agent_is_a_clear_conflict,
    a_recursive_transfer_is_byte_identical,
    a_missing_source_fails_with_file_not_found,
    submission_ids_make_resubmission_idempotent,
    a_transfer_to_an_offline_endpoint_pauses_and_can_be_cancelled,
    an_offline_endpoint_pauses_then_resumes,
    a_deadline_ends_a_paused_transfer,
    bad_transfer_requests_are_4xx,
    a_full_destination_is_no_space_left,
    delete_tasks_remove_trees_and_report_counts,
    a_delete_task_waits_for_its_offline_agent,
    bad_delete_requests_are_4xx,
    a_chunk_corrupted_in_flight_is_detected_and_sent_again,
    a_task_tuning_reaches_the_engine,
    a_source_changed_during_its_transfer_is_read_again,
    a_vanished_source_file_is_skipped_or_fails,
    an_abandoned_transfer_leaves_nothing_behind,
);
