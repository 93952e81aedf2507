//! Search end to end: the service in-process with the real OpenID Connect
//! provider and three people who log in through it (alice owns the index,
//! bob writes to it, carol is in alice's group), on the real engines:
//! tantivy with the SQLite store, the PostgreSQL engine with the
//! PostgreSQL store (`backend_suite!`; PostgreSQL scenarios skip unless it
//! is reachable or `LATTICE_REQUIRE_SERVICES=1`).

use std::collections::BTreeSet;
use std::time::Duration;

use lattice_tests::Answer;
use reqwest::Method;
use serde_json::{json, Value};

use crate::scene::{Person, Trio};
use crate::Backend;

struct Scene(Trio);

impl std::ops::Deref for Scene {
    type Target = Trio;
    fn deref(&self) -> &Trio {
        &self.0
    }
}

impl Scene {
    async fn start(backend: Backend, test: &str) -> Option<Self> {
        Trio::start(backend, test, |config| {
            // The engine follows the store: tantivy with SQLite,
            // PostgreSQL with PostgreSQL.
            config.search.engine = Some(match backend {
                Backend::Sqlite => lattice_service::config::SearchEngineKind::Tantivy,
                Backend::Postgres => lattice_service::config::SearchEngineKind::Postgres,
            });
            config.search.dir = config.data_dir.join("search");
        })
        .await
        .map(Self)
    }

    async fn cleanup(self) {
        self.0.cleanup().await;
    }

    /// `who` creates an index; returns its id.
    async fn index(&self, who: &Person, name: &str) -> String {
        let answer = self
            .post(
                Some(who),
                "/v1/search/indexes",
                json!({"display_name": name, "description": "test"}),
            )
            .await;
        assert_eq!(answer.status, 201, "{answer:?}");
        assert_eq!(answer.body["my_role"], json!("owner"), "{answer:?}");
        answer.str("id").to_owned()
    }

    /// Submits an ingest of `entries` as `who`; returns the answer.
    async fn ingest(&self, who: Option<&Person>, index: &str, entries: Value) -> Answer {
        self.post(
            who,
            &format!("/v1/search/indexes/{index}/ingest"),
            json!({"ingest_type": "GMetaList", "ingest_data": {"gmeta": entries}}),
        )
        .await
    }

    /// Waits until a task is final; returns its document.
    async fn task(&self, who: &Person, task: &str) -> Value {
        for _ in 0..600 {
            let answer = self
                .get(Some(who), &format!("/v1/search/tasks/{task}"))
                .await;
            assert_eq!(answer.status, 200, "{answer:?}");
            if matches!(answer.str("state"), "success" | "failed") {
                return answer.body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("search task {task} did not finish");
    }

    /// Ingests as `who` and waits; returns the task document.
    async fn ingest_and_wait(&self, who: &Person, index: &str, entries: Value) -> Value {
        let answer = self.ingest(Some(who), index, entries).await;
        assert_eq!(answer.status, 202, "{answer:?}");
        assert_eq!(answer.body["state"], json!("pending"), "{answer:?}");
        self.task(who, answer.str("task_id")).await
    }

    async fn query(&self, who: Option<&Person>, index: &str, body: Value) -> Answer {
        self.post(who, &format!("/v1/search/indexes/{index}/query"), body)
            .await
    }
}

fn entry(subject: &str, content: Value, visible_to: &[&str]) -> Value {
    json!({"subject": subject, "content": content, "visible_to": visible_to})
}

/// The subjects of a query answer's hits.
fn subjects(answer: &Answer) -> BTreeSet<String> {
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["gmeta"]
        .as_array()
        .expect("gmeta")
        .iter()
        .map(|s| s["subject"].as_str().unwrap().to_owned())
        .collect()
}

/// `(value, count)` of the terms facet named `name`.
fn buckets(answer: &Answer, name: &str) -> Vec<(String, u64)> {
    let facet = answer.body["facet_results"]
        .as_array()
        .expect("facet_results")
        .iter()
        .find(|f| f["name"] == json!(name))
        .unwrap_or_else(|| panic!("no facet {name}: {answer:?}"));
    facet["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| {
            (
                b["value"].as_str().unwrap().to_owned(),
                b["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

// ---- scenarios ---------------------------------------------------------

/// Each caller sees exactly the entries whose `visible_to` names one of
/// their principals, in hits, totals and facets; group membership is
/// resolved at query time.
async fn visibility_decides_hits_totals_and_facets(scene: &Scene) {
    let (alice, bob, carol) = (&scene.alice, &scene.bob, &scene.carol);
    let index = scene.index(alice, "Beamline 7").await;
    let lab = scene
        .post(Some(alice), "/v1/groups", json!({"name": "search lab"}))
        .await;
    assert_eq!(lab.status, 201, "{lab:?}");
    let lab = lab.str("id").to_owned();
    let added = scene
        .post(
            Some(alice),
            &format!("/v1/groups/{lab}/members"),
            json!({"actions": [{"action": "add", "identity": carol.id}]}),
        )
        .await;
    assert_eq!(added.body["results"][0]["ok"], json!(true), "{added:?}");

    let bob_principal = format!("identity:{}", bob.id);
    let lab_principal = format!("group:{lab}");
    let task = scene
        .ingest_and_wait(
            alice,
            &index,
            json!([
                entry(
                    "public",
                    json!({"title": "silicon wafer alpha", "kind": "xrd", "size": 10}),
                    &["public"]
                ),
                entry(
                    "members",
                    json!({"title": "silicon powder beta", "kind": "xrd", "size": 20}),
                    &["all_authenticated_users"]
                ),
                entry(
                    "bobs",
                    json!({"title": "silicon crystal gamma", "kind": "saxs", "size": 30}),
                    &[bob_principal.as_str()]
                ),
                entry(
                    "labs",
                    json!({"title": "silicon film delta", "kind": "saxs", "size": 40}),
                    &[lab_principal.as_str()]
                ),
            ]),
        )
        .await;
    assert_eq!(task["state"], json!("success"), "{task}");
    assert_eq!(task["entries_applied"], json!(4), "{task}");

    let request = json!({"q": "silicon", "facets": [{"field_name": "kind", "type": "terms"}]});
    let anonymous = scene.query(None, &index, request.clone()).await;
    assert_eq!(subjects(&anonymous), set(&["public"]));
    assert_eq!(anonymous.body["total"], json!(1));
    assert_eq!(buckets(&anonymous, "kind"), [("xrd".to_owned(), 1)]);

    let as_bob = scene.query(Some(bob), &index, request.clone()).await;
    assert_eq!(subjects(&as_bob), set(&["public", "members", "bobs"]));
    assert_eq!(as_bob.body["total"], json!(3));
    assert_eq!(
        buckets(&as_bob, "kind"),
        [("xrd".to_owned(), 2), ("saxs".to_owned(), 1)]
    );

    let as_carol = scene.query(Some(carol), &index, request.clone()).await;
    assert_eq!(subjects(&as_carol), set(&["public", "members", "labs"]));
    assert_eq!(as_carol.body["total"], json!(3));

    // The GET form and the subject lookup follow the same rules.
    let get = scene
        .get(None, &format!("/v1/search/indexes/{index}/query?q=silicon"))
        .await;
    assert_eq!(subjects(&get), set(&["public"]));
    let hidden = scene
        .get(
            Some(carol),
            &format!("/v1/search/indexes/{index}/subject?subject=bobs"),
        )
        .await;
    hidden.assert_error(404, "not_found");
    let shown = scene
        .get(
            Some(bob),
            &format!("/v1/search/indexes/{index}/subject?subject=bobs"),
        )
        .await;
    assert_eq!(shown.status, 200, "{shown:?}");
    assert!(
        shown.body["entries"][0].get("visible_to").is_none(),
        "only writers and up see visible_to: {shown:?}"
    );

    // Removing carol from the group hides the group's entries at once.
    let removed = scene
        .post(
            Some(alice),
            &format!("/v1/groups/{lab}/members"),
            json!({"actions": [{"action": "remove", "identity": carol.id}]}),
        )
        .await;
    assert_eq!(removed.body["results"][0]["ok"], json!(true), "{removed:?}");
    let as_carol = scene.query(Some(carol), &index, request.clone()).await;
    assert_eq!(subjects(&as_carol), set(&["public", "members"]));
    assert_eq!(buckets(&as_carol, "kind"), [("xrd".to_owned(), 2)]);

    // Only admins and owners may bypass visibility.
    let bypass = json!({"q": "silicon", "bypass_visibility": true});
    let as_owner = scene.query(Some(alice), &index, bypass.clone()).await;
    assert_eq!(as_owner.body["total"], json!(4), "{as_owner:?}");
    scene
        .query(Some(bob), &index, bypass.clone())
        .await
        .assert_error(403, "forbidden");
    scene
        .query(None, &index, bypass)
        .await
        .assert_error(403, "forbidden");
}

/// Owners manage roles; writers ingest but cannot change roles; others
/// cannot ingest; the last owner stays.
async fn roles_decide_who_writes(scene: &Scene) {
    let (alice, bob, carol) = (&scene.alice, &scene.bob, &scene.carol);
    let index = scene.index(alice, "roles").await;
    let roles = format!("/v1/search/indexes/{index}/roles");
    let bob_writer = scene
        .post(
            Some(alice),
            &roles,
            json!({"principal": format!("identity:{}", bob.id), "role": "writer"}),
        )
        .await;
    assert_eq!(bob_writer.status, 201, "{bob_writer:?}");

    let one = json!([entry("bob-1", json!({"title": "from bob"}), &["public"])]);
    let task = scene.ingest_and_wait(bob, &index, one.clone()).await;
    assert_eq!(task["state"], json!("success"), "{task}");
    // A writer cannot change roles.
    scene
        .post(
            Some(bob),
            &roles,
            json!({"principal": format!("identity:{}", carol.id), "role": "writer"}),
        )
        .await
        .assert_error(403, "forbidden");
    // Someone without a role cannot ingest; nobody anonymous either.
    scene
        .ingest(Some(carol), &index, one.clone())
        .await
        .assert_error(403, "forbidden");
    scene
        .ingest(None, &index, one)
        .await
        .assert_error(401, "unauthorized");
    // Unknown principals are refused.
    scene
        .post(
            Some(alice),
            &roles,
            json!({"principal": "identity:00000000-0000-4000-8000-000000000000", "role": "writer"}),
        )
        .await
        .assert_error(404, "not_found");
    // The last owner cannot be removed.
    let listed = scene.get(Some(alice), &roles).await;
    let owner_role = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == json!("owner"))
        .expect("owner role")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    scene
        .call(
            Some(alice),
            Method::DELETE,
            &format!("{roles}/{owner_role}"),
            None,
        )
        .await
        .assert_error(409, "conflict");
    // The writer sees its tasks; carol does not see bob's task.
    let tasks = scene
        .get(Some(bob), &format!("/v1/search/indexes/{index}/tasks"))
        .await;
    assert_eq!(tasks.status, 200, "{tasks:?}");
    let task_id = tasks.body[0]["task_id"].as_str().unwrap().to_owned();
    scene
        .get(Some(carol), &format!("/v1/search/tasks/{task_id}"))
        .await
        .assert_error(404, "not_found");
    // The index is listed for those with a role only.
    let listed = scene.get(Some(bob), "/v1/search/indexes").await;
    assert!(listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["id"] == json!(index)));
    let listed = scene.get(Some(carol), "/v1/search/indexes").await;
    assert!(!listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["id"] == json!(index)));
}

/// A bad entry fails the task, naming it, while the good ones apply.
async fn rejected_entries_fail_the_task_and_are_named(scene: &Scene) {
    let alice = &scene.alice;
    let index = scene.index(alice, "rejections").await;
    let task = scene
        .ingest_and_wait(
            alice,
            &index,
            json!([
                entry("good-1", json!({"size": 1}), &["public"]),
                entry(
                    "ghost",
                    json!({"size": 2}),
                    &["identity:00000000-0000-4000-8000-000000000000"]
                ),
                entry("conflict", json!({"size": "big"}), &["public"]),
                entry("bad-principal", json!({"size": 3}), &["user:bob"]),
                entry("good-2", json!({"size": 4}), &["public"]),
            ]),
        )
        .await;
    assert_eq!(task["state"], json!("failed"), "{task}");
    assert_eq!(task["entries_total"], json!(5), "{task}");
    assert_eq!(task["entries_applied"], json!(2), "{task}");
    let rejected = task["rejected"].as_array().unwrap();
    let named: Vec<(u64, &str)> = rejected
        .iter()
        .map(|r| {
            (
                r["position"].as_u64().unwrap(),
                r["subject"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        named,
        [(1, "ghost"), (2, "conflict"), (3, "bad-principal")],
        "{task}"
    );
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{task}"
    );
    assert!(
        rejected[1]["reason"].as_str().unwrap().contains("size"),
        "{task}"
    );
    let found = scene.query(None, &index, json!({})).await;
    assert_eq!(subjects(&found), set(&["good-1", "good-2"]));
}

/// An index's tasks apply in submission order.
async fn tasks_apply_in_submission_order(scene: &Scene) {
    let alice = &scene.alice;
    let index = scene.index(alice, "order").await;
    let first = scene
        .ingest(
            Some(alice),
            &index,
            json!([entry("s", json!({"version": 1}), &["public"])]),
        )
        .await;
    assert_eq!(first.status, 202, "{first:?}");
    let delete = scene
        .call(
            Some(alice),
            Method::DELETE,
            &format!("/v1/search/indexes/{index}/subject?subject=s"),
            None,
        )
        .await;
    assert_eq!(delete.status, 202, "{delete:?}");
    let again = scene
        .ingest(
            Some(alice),
            &index,
            json!([entry("s", json!({"version": 2}), &["public"])]),
        )
        .await;
    assert_eq!(again.status, 202, "{again:?}");
    let last = scene.task(alice, again.str("task_id")).await;
    assert_eq!(last["state"], json!("success"), "{last}");
    for answer in [&first, &delete] {
        let task = scene.task(alice, answer.str("task_id")).await;
        assert_eq!(task["state"], json!("success"), "{task}");
    }
    let subject = scene
        .get(
            None,
            &format!("/v1/search/indexes/{index}/subject?subject=s"),
        )
        .await;
    assert_eq!(subject.status, 200, "{subject:?}");
    assert_eq!(subject.body["entries"][0]["content"]["version"], json!(2));

    // And a delete after an ingest leaves nothing.
    let ingest = scene
        .ingest(
            Some(alice),
            &index,
            json!([entry("t", json!({"version": 1}), &["public"])]),
        )
        .await;
    assert_eq!(ingest.status, 202);
    let delete = scene
        .post(
            Some(alice),
            &format!("/v1/search/indexes/{index}/subjects/delete"),
            json!({"subjects": ["t"]}),
        )
        .await;
    assert_eq!(delete.status, 202, "{delete:?}");
    let task = scene.task(alice, delete.str("task_id")).await;
    assert_eq!(task["entries_applied"], json!(1), "{task}");
    scene
        .get(
            None,
            &format!("/v1/search/indexes/{index}/subject?subject=t"),
        )
        .await
        .assert_error(404, "not_found");
}

/// A deleted index stops answering and taking entries, and comes back.
async fn deleted_indexes_can_be_restored(scene: &Scene) {
    let (alice, bob) = (&scene.alice, &scene.bob);
    let index = scene.index(alice, "lifecycle").await;
    let task = scene
        .ingest_and_wait(
            alice,
            &index,
            json!([entry("kept", json!({"n": 1}), &["public"])]),
        )
        .await;
    assert_eq!(task["state"], json!("success"), "{task}");
    let path = format!("/v1/search/indexes/{index}");
    scene
        .call(Some(bob), Method::DELETE, &path, None)
        .await
        .assert_error(403, "forbidden");
    let deleted = scene.call(Some(alice), Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(deleted.body["status"], json!("deleted"));
    assert!(deleted.body["purge_after"].is_string(), "{deleted:?}");
    scene
        .query(None, &index, json!({}))
        .await
        .assert_error(404, "not_found");
    scene
        .get(Some(bob), &path)
        .await
        .assert_error(404, "not_found");
    scene
        .ingest(
            Some(alice),
            &index,
            json!([entry("x", json!({"n": 2}), &["public"])]),
        )
        .await
        .assert_error(409, "conflict");
    let restored = scene
        .post(Some(alice), &format!("{path}/restore"), json!({}))
        .await;
    assert_eq!(restored.status, 200, "{restored:?}");
    assert_eq!(restored.body["status"], json!("open"));
    let found = scene.query(None, &index, json!({})).await;
    assert_eq!(subjects(&found), set(&["kept"]));
}

/// Bad input gets a clear 4xx in the JSON error shape.
async fn bad_input_is_refused_clearly(scene: &Scene) {
    let alice = &scene.alice;
    let index = scene.index(alice, "bad input").await;
    let task = scene
        .ingest_and_wait(
            alice,
            &index,
            json!([entry("a", json!({"size": 1, "title": "x"}), &["public"])]),
        )
        .await;
    assert_eq!(task["state"], json!("success"), "{task}");
    let ingest_url = scene
        .platform
        .service
        .endpoint(&format!("/v1/search/indexes/{index}/ingest"));
    let http = &scene.platform.service.http;

    let malformed = http
        .post(ingest_url.clone())
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .body("{\"ingest_type\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body["code"], json!("bad_request"), "{body}");

    // The service answers 413 before it reads the whole body and closes
    // the connection, so a client still writing may see a broken pipe
    // instead of the answer. Over a raw socket, read while writing.
    let answer = oversized_post(&ingest_url, &alice.token, 11 * 1024 * 1024).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    let syntax = scene
        .query(
            None,
            &index,
            json!({"q": "title:(x AND", "mode": "advanced"}),
        )
        .await;
    assert_eq!(syntax.status, 400, "{syntax:?}");
    assert_eq!(syntax.body["code"], json!("bad_request"));
    assert!(
        syntax.body["position"].is_u64(),
        "the position is named: {syntax:?}"
    );

    scene
        .query(None, "00000000-0000-4000-8000-000000000000", json!({}))
        .await
        .assert_error(404, "not_found");
    scene
        .query(
            None,
            &index,
            json!({"filters": [{"type": "match_any", "field_name": "nope", "values": ["x"]}]}),
        )
        .await
        .assert_error(400, "bad_request");
    scene
        .query(None, &index, json!({"limit": 1_000_000_000u64}))
        .await
        .assert_error(400, "bad_request");
    scene
        .get(
            None,
            &format!("/v1/search/indexes/{index}/query?offset=9999&limit=10"),
        )
        .await
        .assert_error(400, "bad_request");
    scene
        .get(
            Some(alice),
            "/v1/search/tasks/00000000-0000-4000-8000-000000000000",
        )
        .await
        .assert_error(404, "not_found");
    scene
        .ingest(Some(alice), &index, json!([]))
        .await
        .assert_error(400, "bad_request");
}

backend_suite!(
    "search";
    visibility_decides_hits_totals_and_facets,
    roles_decide_who_writes,
    rejected_entries_fail_the_task_and_are_named,
    tasks_apply_in_submission_order,
    deleted_indexes_can_be_restored,
    bad_input_is_refused_clearly,
);

/// POSTs `size` bytes of JSON whitespace to `url` over a raw socket and
/// returns what the service answered (read while the body is still being
/// written; write errors after the answer are expected).
async fn oversized_post(url: &url::Url, token: &str, size: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = format!(
        "{}:{}",
        url.host_str().expect("host"),
        url.port().expect("port")
    );
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n",
        url.path()
    );
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len());
            write.write_all(&chunk[..n]).await?;
            left -= n;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut answer = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 8192];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .expect("an answer within a minute");
    writer.abort();
    String::from_utf8_lossy(&answer).into_owned()
}
