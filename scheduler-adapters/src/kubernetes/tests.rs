//! The provider against a fake Kubernetes API server (axum on a loopback
//! port) that keeps pods in memory and answers with the real JSON shapes of
//! Pod, PodList and Status objects.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};

use super::*;
use crate::testing::spec;

const TOKEN: &str = "fake-service-account-token";

#[derive(Clone, Default)]
struct Fake {
    pods: Arc<Mutex<Vec<Value>>>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Json<Value>) {
    (
        code,
        Json(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        })),
    )
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

/// The blocks a selector names: `KEY in (a,b)` or `KEY=a`.
fn selected(selector: &str) -> Vec<String> {
    let rest = selector.trim_start_matches(BLOCK_LABEL).trim();
    if let Some(list) = rest.strip_prefix("in") {
        list.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|s| s.trim().to_owned())
            .collect()
    } else {
        vec![rest.trim_start_matches('=').to_owned()]
    }
}

async fn create(
    State(fake): State<Fake>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    Json(mut pod): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    if namespace == "locked" {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "pods is forbidden: User \"system:serviceaccount:lattice:agent\" cannot create resource \"pods\" in API group \"\" in the namespace \"locked\"",
        );
    }
    let image = pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
    pod["metadata"]["namespace"] = json!(namespace);
    pod["metadata"]["uid"] = json!(format!("uid-{name}"));
    pod["metadata"]["creationTimestamp"] = json!("2024-05-01T10:00:00Z");
    pod["status"] = if image.contains("nosuch") {
        json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2024-05-01T10:00:00Z"}],
            "hostIP": "10.0.0.7",
            "podIP": "10.244.1.9",
            "startTime": "2024-05-01T10:00:00Z",
            "containerStatuses": [{
                "name": "worker",
                "state": {"waiting": {
                    "reason": "ImagePullBackOff",
                    "message": format!("Back-off pulling image \"{image}\"")
                }},
                "lastState": {},
                "ready": false,
                "restartCount": 0,
                "image": image,
                "imageID": "",
                "started": false
            }],
            "qosClass": "BestEffort"
        })
    } else {
        json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-05-01T10:00:02Z"}],
            "hostIP": "10.0.0.7",
            "podIP": "10.244.1.8",
            "startTime": "2024-05-01T10:00:00Z",
            "containerStatuses": [{
                "name": "worker",
                "state": {"running": {"startedAt": "2024-05-01T10:00:01Z"}},
                "lastState": {},
                "ready": true,
                "restartCount": 0,
                "image": image,
                "imageID": "docker-pullable://example@sha256:0123",
                "started": true
            }],
            "qosClass": "Burstable"
        })
    };
    fake.pods.lock().unwrap().push(pod.clone());
    (StatusCode::CREATED, Json(pod))
}

async fn list(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let blocks = selected(query.get("labelSelector").map(String::as_str).unwrap_or(""));
    let items: Vec<Value> = fake
        .pods
        .lock()
        .unwrap()
        .iter()
        .filter(|p| {
            blocks
                .iter()
                .any(|b| p["metadata"]["labels"][BLOCK_LABEL].as_str() == Some(b))
        })
        .cloned()
        .collect();
    (
        StatusCode::OK,
        Json(
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "4711"}, "items": items}),
        ),
    )
}

async fn delete(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let blocks = selected(query.get("labelSelector").map(String::as_str).unwrap_or(""));
    let mut pods = fake.pods.lock().unwrap();
    let (gone, kept): (Vec<Value>, Vec<Value>) = pods.drain(..).partition(|p| {
        blocks
            .iter()
            .any(|b| p["metadata"]["labels"][BLOCK_LABEL].as_str() == Some(b))
    });
    *pods = kept;
    (
        StatusCode::OK,
        Json(json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": gone})),
    )
}

async fn start_fake() -> (String, Fake) {
    let fake = Fake::default();
    let app = Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/pods",
            post(create).get(list).delete(delete),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, fake)
}

fn provider(
    url: &str,
    dir: &tempfile::TempDir,
    namespace: &str,
    image: &str,
) -> KubernetesProvider {
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    KubernetesProvider::new(KubernetesConfig {
        api_server: url.to_owned(),
        namespace: namespace.to_owned(),
        image: image.to_owned(),
        service_account: Some("lattice-worker".into()),
        cpu_request: Some("500m".into()),
        memory_limit: Some("1Gi".into()),
        token_file: Some(token),
        ..KubernetesConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn pods_run_fail_with_the_image_pull_reason_and_are_deleted() {
    let (url, fake) = start_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let good = provider(&url, &dir, "science", "ghcr.io/example/lattice:1");

    let job = good.submit(&spec("b1", 2, 3)).await.unwrap();
    assert_eq!(job, "b1");
    {
        let pods = fake.pods.lock().unwrap();
        assert_eq!(pods.len(), 2, "one pod per node");
        let pod = &pods[0];
        assert_eq!(pod["metadata"]["name"], "lattice-b1-0");
        assert_eq!(pod["metadata"]["namespace"], "science");
        assert_eq!(pod["spec"]["serviceAccountName"], "lattice-worker");
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["resources"]["requests"]["cpu"], "500m");
        assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
        assert_eq!(
            container["command"][2],
            "for i in $(seq 1 3); do lattice worker --dispatcher login1:9000 --capacity 1 --block-id b1 & done; wait"
        );
        // A failing worker_init line's stderr ends the container's log,
        // which becomes the termination message the pod state shows.
        assert_eq!(
            container["terminationMessagePolicy"],
            "FallbackToLogsOnError"
        );
    }
    let mut with_init = spec("b4", 1, 1);
    with_init.worker_init = vec!["export OMP_NUM_THREADS=1".into()];
    let pod = good.pod(&with_init, 0);
    let script = pod["spec"]["containers"][0]["command"][2].as_str().unwrap();
    assert!(
        script.contains("lattice_init_step='1 (`export OMP_NUM_THREADS=1`)'\n{\nexport OMP_NUM_THREADS=1\n} || exit\n")
            && script.ends_with("\nfor i in $(seq 1 1); do lattice worker --dispatcher login1:9000 --capacity 1 --block-id b4 & done; wait"),
        "{script}"
    );
    assert!(
        !script.contains("lattice_init_report=/"),
        "stderr stays on the log: {script}"
    );

    let bad = provider(&url, &dir, "science", "registry.example/nosuch:1");
    let stuck = bad.submit(&spec("b2", 1, 1)).await.unwrap();

    let states = good
        .status(&["b1".to_owned(), stuck.clone(), "b3".to_owned()])
        .await
        .unwrap();
    assert_eq!(states["b1"], BlockState::Running);
    assert_eq!(
        states["b2"],
        BlockState::Failed {
            message: "pod lattice-b2-0: ImagePullBackOff: Back-off pulling image \"registry.example/nosuch:1\"".into()
        }
    );
    assert_eq!(states["b3"], BlockState::Completed, "no pods: gone");

    good.cancel(&["b1".to_owned()]).await.unwrap();
    assert_eq!(fake.pods.lock().unwrap().len(), 1);
    assert_eq!(
        good.status(&["b1".to_owned()]).await.unwrap()["b1"],
        BlockState::Cancelled
    );
}

#[tokio::test]
async fn api_refusals_carry_the_api_message() {
    let (url, _fake) = start_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let locked = provider(&url, &dir, "locked", "ghcr.io/example/lattice:1");
    let err = locked.submit(&spec("b1", 1, 1)).await.unwrap_err();
    assert!(matches!(err, ProviderError::Refused(_)));
    assert!(
        err.to_string().starts_with(
            "kubernetes API 403: pods is forbidden: User \"system:serviceaccount:lattice:agent\""
        ),
        "{err}"
    );
}
