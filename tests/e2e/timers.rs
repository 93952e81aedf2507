//! Timers end to end: the service in-process with the real OpenID Connect
//! provider and three people, on both back ends (`backend_suite!`).
//! Flow timers over flows of Pass and Wait states show ticking, skipping
//! while the previous run goes, pause and resume, the service pausing a
//! timer whose owner lost the starter role, refusals to strangers and bad
//! input. `two_replicas_tick_once` runs two services on one PostgreSQL
//! schema with one timer. Transfer timers and a restart across a due time
//! run on `lattice dev` in `cli/tests/timers.rs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::scene::{Person, Trio};
use crate::Backend;

struct Scene {
    trio: Trio,
}

impl std::ops::Deref for Scene {
    type Target = Trio;
    fn deref(&self) -> &Trio {
        &self.trio
    }
}

impl Scene {
    async fn start(backend: Backend, test: &str) -> Option<Self> {
        let trio = Trio::start(backend, test, |config| {
            config.timers.min_interval_secs = 1;
            // The webhook receiver of `lost_access_pauses_the_timer`.
            config.notify.allow_private_webhooks = true;
        })
        .await?;
        Some(Self { trio })
    }

    async fn cleanup(self) {
        self.trio.cleanup().await;
    }
}

/// `who` creates a flow from `states` (starting at the first key given in
/// `start_at`) with `extra` fields; its id.
async fn flow(trio: &Trio, who: &Person, start_at: &str, states: Value, extra: Value) -> String {
    let mut body = json!({
        "definition": {"StartAt": start_at, "States": states},
        "title": "timed flow",
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let answer = trio.post(Some(who), "/v1/flows", body).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    answer.str("id").to_owned()
}

fn pass_flow() -> Value {
    json!({"Done": {"Type": "Pass", "Result": {"ok": true}, "End": true}})
}

/// A flow whose runs take `seconds`.
fn waiting_flow(seconds: u64) -> Value {
    json!({
        "Hold": {"Type": "Wait", "Seconds": seconds, "Next": "Done"},
        "Done": {"Type": "Pass", "End": true}
    })
}

/// `who` creates a flow timer; the answer's body.
async fn flow_timer(trio: &Trio, who: &Person, flow: &str, schedule: Value) -> Value {
    let answer = trio
        .post(
            Some(who),
            "/v1/timers",
            json!({
                "name": "every second",
                "timer_type": "flow",
                "flow_id": flow,
                "schedule": schedule,
                "body": {"body": {"n": 1}, "tags": ["timed"]},
            }),
        )
        .await;
    assert_eq!(answer.status, 201, "{answer:?}");
    answer.body
}

/// The timer's ticks, oldest first.
async fn ticks(trio: &Trio, who: &Person, timer: &str) -> Vec<Value> {
    let answer = trio
        .get(Some(who), &format!("/v1/timers/{timer}/runs?limit=1000"))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let mut runs = answer.body["runs"].as_array().expect("runs").clone();
    runs.reverse();
    runs
}

/// Waits until `condition` holds for the timer (its document); the timer.
async fn wait_timer(
    trio: &Trio,
    who: &Person,
    timer: &str,
    what: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..600 {
        let answer = trio.get(Some(who), &format!("/v1/timers/{timer}")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        if condition(&answer.body) {
            return answer.body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timer {timer} never got to: {what}");
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

/// Three ticks a second apart start three runs, each recorded with the run
/// it started; then the timer has ended. Only its owner sees any of it.
async fn recurring_timer_runs_and_ends(scene: &Scene) {
    let flow = flow(scene, &scene.alice, "Done", pass_flow(), json!({})).await;
    let timer = flow_timer(
        scene,
        &scene.alice,
        &flow,
        json!({"type": "recurring", "interval_seconds": 1,
               "end": {"condition": "iterations", "count": 3}}),
    )
    .await;
    let id = timer["id"].as_str().unwrap().to_owned();
    assert_eq!(timer["status"], "active");
    assert_eq!(timer["owner"], format!("identity:{}", scene.alice.id));
    // The start defaulted to now and is stored.
    assert!(timer["schedule"]["start"].is_string(), "{timer}");

    let ended = wait_timer(scene, &scene.alice, &id, "ended", |t| {
        t["status"] == "ended"
    })
    .await;
    assert_eq!(ended["number_of_runs"], 3, "{ended}");
    assert!(ended.get("next_run").is_none(), "{ended}");
    // Every run it started finishes; each tick names its own run.
    let mut runs = Vec::new();
    for _ in 0..200 {
        let list = ticks(scene, &scene.alice, &id).await;
        if list.iter().all(|r| r["status"] == "succeeded") {
            runs = list;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(runs.len(), 3, "{runs:?}");
    let start = time(&ended["schedule"]["start"]);
    let mut started = std::collections::HashSet::new();
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run["seq"], i as u64 + 1);
        let offset = time(&run["due_at"]) - start;
        assert_eq!(
            offset.num_milliseconds() % 1000,
            0,
            "ticks sit on the grid: {runs:?}"
        );
        if i > 0 {
            assert!(
                time(&run["due_at"]) > time(&runs[i - 1]["due_at"]),
                "{runs:?}"
            );
        }
        assert!(time(&run["ran_at"]) >= time(&run["due_at"]));
        let resource = run["resource_id"].as_str().unwrap();
        let run_id = resource.strip_prefix("run:").expect("a flow run");
        assert!(started.insert(run_id.to_owned()), "one run per tick");
        let flow_run = scene
            .get(Some(&scene.alice), &format!("/v1/runs/{run_id}"))
            .await;
        assert_eq!(flow_run.status, 200, "{flow_run:?}");
        assert_eq!(flow_run.body["status"], "SUCCEEDED");
        assert_eq!(flow_run.body["label"], "every second");
        assert_eq!(flow_run.body["tags"], json!(["timed"]));
    }

    // Bob and carol see nothing of it, and can change nothing.
    for stranger in [&scene.bob, &scene.carol] {
        for path in [format!("/v1/timers/{id}"), format!("/v1/timers/{id}/runs")] {
            let answer = scene.get(Some(stranger), &path).await;
            assert_eq!(answer.status, 404, "{path}: {answer:?}");
        }
        for action in ["pause", "resume"] {
            let answer = scene
                .post(
                    Some(stranger),
                    &format!("/v1/timers/{id}/{action}"),
                    json!({}),
                )
                .await;
            assert_eq!(answer.status, 404, "{action}: {answer:?}");
        }
        let answer = scene
            .delete(Some(stranger), &format!("/v1/timers/{id}"))
            .await;
        assert_eq!(answer.status, 404, "{answer:?}");
        let renamed = scene
            .call(
                Some(stranger),
                reqwest::Method::PATCH,
                &format!("/v1/timers/{id}"),
                Some(json!({"name": "mine now"})),
            )
            .await;
        assert_eq!(renamed.status, 404, "{renamed:?}");
        let list = scene.get(Some(stranger), "/v1/timers").await;
        assert_eq!(list.status, 200);
        assert_eq!(list.body["timers"], json!([]), "{list:?}");
    }
    let anonymous = scene.get(None, &format!("/v1/timers/{id}")).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    // Ended: nothing to resume; still there to read.
    let resume = scene
        .post(
            Some(&scene.alice),
            &format!("/v1/timers/{id}/resume"),
            json!({}),
        )
        .await;
    assert_eq!(resume.status, 409, "{resume:?}");
    let mine = scene
        .get(Some(&scene.alice), "/v1/timers?status=ended")
        .await;
    assert_eq!(mine.body["timers"].as_array().unwrap().len(), 1, "{mine:?}");
}

/// Runs of 5 s every second: ticks while a run goes are skipped and
/// recorded; a paused timer does not tick; resuming runs the missed tick
/// once, at once.
async fn skips_pauses_and_resumes(scene: &Scene) {
    let flow = flow(scene, &scene.alice, "Hold", waiting_flow(5), json!({})).await;
    let timer = flow_timer(
        scene,
        &scene.alice,
        &flow,
        json!({"type": "recurring", "interval_seconds": 1}),
    )
    .await;
    let id = timer["id"].as_str().unwrap().to_owned();
    wait_timer(scene, &scene.alice, &id, "two skips", |t| {
        t["number_of_skips"].as_u64() >= Some(2)
    })
    .await;
    let list = ticks(scene, &scene.alice, &id).await;
    assert_eq!(
        list[0]["status"], "active",
        "the first run still goes: {list:?}"
    );
    // Every tick since the first was held back by its run, not only the
    // one right after it.
    assert!(
        list[1..].iter().all(|r| r["status"] == "skipped"),
        "{list:?}"
    );
    let skipped: Vec<&Value> = list.iter().filter(|r| r["status"] == "skipped").collect();
    assert!(skipped.len() >= 2, "{list:?}");
    assert!(skipped.iter().all(|r| r.get("resource_id").is_none()));
    assert!(skipped[0]["details"]["skipped"]
        .as_str()
        .unwrap()
        .contains("was still going"));

    let paused = scene
        .post(
            Some(&scene.alice),
            &format!("/v1/timers/{id}/pause"),
            json!({}),
        )
        .await;
    assert_eq!(paused.status, 200, "{paused:?}");
    assert_eq!(paused.body["status"], "inactive");
    assert_eq!(paused.body["inactive_reason"]["cause"], "user");
    assert!(paused.body.get("next_run").is_none());
    let at_pause = ticks(scene, &scene.alice, &id).await.len();
    // Wait until the first run is over and two more ticks were due.
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let while_paused = ticks(scene, &scene.alice, &id).await;
    assert_eq!(
        while_paused.len(),
        at_pause,
        "a paused timer ticked: {while_paused:?}"
    );
    assert!(
        while_paused
            .iter()
            .all(|r| r["status"] != "active" && r["status"] != "pending"),
        "{while_paused:?}"
    );

    let resumed_at = Utc::now();
    let resumed = scene
        .post(
            Some(&scene.alice),
            &format!("/v1/timers/{id}/resume"),
            json!({}),
        )
        .await;
    assert_eq!(resumed.status, 200, "{resumed:?}");
    assert_eq!(resumed.body["status"], "active");
    assert!(resumed.body.get("inactive_reason").is_none());
    let after = wait_timer(scene, &scene.alice, &id, "the missed tick", |t| {
        t["number_of_runs"].as_u64() >= Some(2)
    })
    .await;
    let list = ticks(scene, &scene.alice, &id).await;
    let catch_up = &list[at_pause];
    assert_ne!(catch_up["status"], "skipped", "{list:?}");
    assert!(
        time(&catch_up["due_at"]) < resumed_at,
        "the tick run at resume is the one missed while paused: {catch_up}"
    );
    // One catch-up, not one per missed tick: the rest are skipped or later.
    let ran_since: Vec<&Value> = list[at_pause..]
        .iter()
        .filter(|r| r["status"] != "skipped")
        .collect();
    assert_eq!(ran_since.len(), 1, "{list:?}");
    assert_eq!(
        after["number_of_runs"].as_u64(),
        paused.body["number_of_runs"].as_u64().map(|n| n + 1),
        "{list:?}"
    );

    let deleted = scene
        .delete(Some(&scene.alice), &format!("/v1/timers/{id}"))
        .await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(deleted.body["status"], "deleted");
    let count = ticks(scene, &scene.alice, &id).await.len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ticks(scene, &scene.alice, &id).await.len(), count);
    let listed = scene.get(Some(&scene.alice), "/v1/timers").await;
    assert!(
        !listed.body["timers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id.as_str()),
        "deleted timers are not listed by default"
    );
    let pause_deleted = scene
        .post(
            Some(&scene.alice),
            &format!("/v1/timers/{id}/pause"),
            json!({}),
        )
        .await;
    assert_eq!(pause_deleted.status, 409, "{pause_deleted:?}");
}

/// Bob may start alice's flow and makes a timer of it; when alice takes
/// the starter role away, the next tick fails and the service pauses the
/// timer (cause `access`) instead of failing at every tick, and tells bob
/// (his webhook for `timer.inactive` gets the event).
async fn lost_access_pauses_the_timer(scene: &Scene) {
    let receiver = crate::notify::Receiver::start().await;
    let hook_url = format!("{}/ok", receiver.base);
    let hook = scene
        .post(
            Some(&scene.bob),
            "/v1/webhooks",
            json!({"url": hook_url, "events": ["timer.inactive"]}),
        )
        .await;
    assert_eq!(hook.status, 201, "{hook:?}");
    let bob_principal = format!("identity:{}", scene.bob.id);
    let flow = flow(
        scene,
        &scene.alice,
        "Done",
        pass_flow(),
        json!({"flow_starters": [bob_principal]}),
    )
    .await;
    // Carol may not start it, so she may not make a timer of it either.
    let refused = scene
        .post(
            Some(&scene.carol),
            "/v1/timers",
            json!({"timer_type": "flow", "flow_id": flow,
                   "schedule": {"type": "recurring", "interval_seconds": 1},
                   "body": {"body": {}}}),
        )
        .await;
    assert_eq!(refused.status, 404, "{refused:?}");

    let timer = flow_timer(
        scene,
        &scene.bob,
        &flow,
        json!({"type": "recurring", "interval_seconds": 1}),
    )
    .await;
    let id = timer["id"].as_str().unwrap().to_owned();
    wait_timer(scene, &scene.bob, &id, "a run", |t| {
        t["number_of_runs"].as_u64() >= Some(1)
    })
    .await;
    let update = scene
        .put(
            Some(&scene.alice),
            &format!("/v1/flows/{flow}"),
            json!({"flow_starters": []}),
        )
        .await;
    assert_eq!(update.status, 200, "{update:?}");
    let paused = wait_timer(scene, &scene.bob, &id, "paused by the service", |t| {
        t["status"] == "inactive"
    })
    .await;
    assert_eq!(paused["inactive_reason"]["cause"], "access", "{paused}");
    assert_eq!(paused["number_of_errors"], 1, "{paused}");
    assert!(
        paused["last_error"].as_str().unwrap().contains("run "),
        "{paused}"
    );
    let list = ticks(scene, &scene.bob, &id).await;
    let failed: Vec<&Value> = list.iter().filter(|r| r["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{list:?}");
    assert!(failed[0]["error"].is_string());
    for _ in 0..200 {
        if !receiver.ok.bodies().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = receiver.ok.bodies();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["kind"], "timer.inactive", "{events:?}");
    assert_eq!(events[0]["data"]["timer_id"], id.as_str(), "{events:?}");
    assert_eq!(events[0]["data"]["name"], "every second", "{events:?}");
    assert!(
        events[0]["link"].as_str().unwrap().contains(&id),
        "{events:?}"
    );
    // Alice owns the flow, not the timer: she does not see it.
    let alice_sees = scene
        .get(Some(&scene.alice), &format!("/v1/timers/{id}"))
        .await;
    assert_eq!(alice_sees.status, 404);
}

/// Bad input: a 4xx naming the problem, and nothing created.
async fn bad_input_is_refused(scene: &Scene) {
    let flow = flow(scene, &scene.alice, "Done", pass_flow(), json!({})).await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"timer_type": "flow", "flow_id": flow, "body": {"body": {}},
                   "schedule": {"type": "recurring", "interval_seconds": 0}}),
            400,
            "below this service's minimum",
        ),
        (
            json!({"timer_type": "flow", "flow_id": flow, "body": {"body": {}},
                   "schedule": {"type": "recurring", "interval_seconds": 60,
                                "start": "2027-06-02T00:00:00Z",
                                "end": {"condition": "time", "datetime": "2027-06-01T00:00:00Z"}}}),
            400,
            "not after the start",
        ),
        (
            json!({"timer_type": "flow", "flow_id": flow, "body": {"body": {}},
                   "schedule": {"type": "recurring", "interval_seconds": 60,
                                "end": {"condition": "iterations", "count": 0}}}),
            400,
            "at least 1",
        ),
        (
            json!({"timer_type": "flow", "flow_id": flow, "body": {"body": {}},
                   "schedule": {"type": "once", "datetime": "2001-01-01T00:00:00Z"}}),
            400,
            "in the past",
        ),
        (
            json!({"timer_type": "flow", "flow_id": "00000000-0000-0000-0000-000000000001",
                   "body": {"body": {}}, "schedule": {"type": "once"}}),
            404,
            "does not exist",
        ),
        (
            json!({"timer_type": "flow", "body": {"body": {}}, "schedule": {"type": "once"}}),
            400,
            "flow_id",
        ),
        (
            json!({"timer_type": "flow", "flow_id": flow, "schedule": {"type": "once"},
                   "body": {"body": {}, "request_id": "mine"}}),
            400,
            "request_id",
        ),
        (
            json!({"timer_type": "transfer", "flow_id": flow, "schedule": {"type": "once"},
                   "body": {}}),
            400,
            "only a flow timer",
        ),
        (
            json!({"timer_type": "transfer", "schedule": {"type": "once"},
                   "body": {"source_collection": "a", "destination_collection": "b"}}),
            400,
            "DATA",
        ),
        (
            json!({"timer_type": "task", "schedule": {"type": "once"}, "body": {"args": {}}}),
            400,
            "compute action body",
        ),
        (
            json!({"timer_type": "fortnightly", "schedule": {"type": "once"}, "body": {}}),
            400,
            "timer_type",
        ),
        (
            json!({"timer_type": "flow", "flow_id": flow, "schedule": {"type": "once"},
                   "body": "not an object"}),
            400,
            "body",
        ),
        (
            json!({"timer_type": "flow", "flow_id": flow, "schedule": {"type": "once"},
                   "name": "", "body": {"body": {}}}),
            400,
            "name",
        ),
        (
            json!({"timer_type": "flow", "flow_id": flow, "schedule": {"type": "once"},
                   "body": {"body": {}, "blob": "x".repeat(300 * 1024)}}),
            413,
            "at most",
        ),
    ];
    for (body, status, words) in cases {
        let answer = scene
            .post(Some(&scene.alice), "/v1/timers", body.clone())
            .await;
        assert_eq!(answer.status, status, "{body}: {answer:?}");
        let message = answer.body["error"]["message"]
            .as_str()
            .or(answer.body["message"].as_str())
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.contains(words) || answer.body.to_string().contains(words),
            "{words:?} not in {answer:?}"
        );
    }
    let none = scene
        .get(
            Some(&scene.alice),
            "/v1/timers?status=active,inactive,ended,deleted",
        )
        .await;
    assert_eq!(
        none.body["timers"],
        json!([]),
        "nothing was created: {none:?}"
    );
    let bad_status = scene
        .get(Some(&scene.alice), "/v1/timers?status=sleeping")
        .await;
    assert_eq!(bad_status.status, 400, "{bad_status:?}");
    let bad_id = scene.get(Some(&scene.alice), "/v1/timers/not-an-id").await;
    assert_eq!(bad_id.status, 400, "{bad_id:?}");
    let unknown = scene
        .get(
            Some(&scene.alice),
            "/v1/timers/00000000-0000-0000-0000-000000000002",
        )
        .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let no_token = scene
        .post(
            None,
            "/v1/timers",
            json!({"timer_type": "flow", "schedule": {"type": "once"}, "body": {}}),
        )
        .await;
    assert_eq!(no_token.status, 401, "{no_token:?}");

    // A once timer in the future: renamed, listed by name, paged runs empty.
    let timer = scene
        .post(
            Some(&scene.alice),
            "/v1/timers",
            json!({"timer_type": "flow", "flow_id": flow, "body": {"body": {}},
                   "schedule": {"type": "once", "datetime": "2027-06-01T12:00:00Z"}}),
        )
        .await;
    assert_eq!(timer.status, 201, "{timer:?}");
    assert_eq!(timer.body["name"], "flow once");
    assert_eq!(timer.body["next_run"], "2027-06-01T12:00:00Z");
    let id = timer.str("id").to_owned();
    let renamed = scene
        .call(
            Some(&scene.alice),
            reqwest::Method::PATCH,
            &format!("/v1/timers/{id}"),
            Some(json!({"name": "  launch day "})),
        )
        .await;
    assert_eq!(renamed.status, 200, "{renamed:?}");
    assert_eq!(renamed.body["name"], "launch day");
    let found = scene
        .get(Some(&scene.alice), "/v1/timers?name=LAUNCH")
        .await;
    assert_eq!(
        found.body["timers"].as_array().unwrap().len(),
        1,
        "{found:?}"
    );
    let runs = scene
        .get(Some(&scene.alice), &format!("/v1/timers/{id}/runs?limit=0"))
        .await;
    assert_eq!(runs.status, 400, "{runs:?}");
}

backend_suite!(
    "timers";
    recurring_timer_runs_and_ends,
    skips_pauses_and_resumes,
    lost_access_pauses_the_timer,
    bad_input_is_refused,
);

/// Two replicas on one PostgreSQL schema and one timer ticking every
/// second: every tick is recorded once, each due time once, and exactly
/// one flow run was started per tick that ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_tick_once() {
    let test = "timers::two_replicas_tick_once";
    let Some(trio) = Trio::start(Backend::Postgres, test, |config| {
        config.timers.min_interval_secs = 1;
    })
    .await
    else {
        return;
    };
    let database_url = trio.platform.service.state.config.database_url.clone();
    let second = lattice_tests::ServiceListener::bind()
        .await
        .start(|config| {
            config.database_url = database_url;
            config.timers.min_interval_secs = 1;
        })
        .await;
    let flow = flow(&trio, &trio.alice, "Done", pass_flow(), json!({})).await;
    let timer = flow_timer(
        &trio,
        &trio.alice,
        &flow,
        json!({"type": "recurring", "interval_seconds": 1,
               "end": {"condition": "iterations", "count": 6}}),
    )
    .await;
    let id = timer["id"].as_str().unwrap().to_owned();
    // The second replica answers for the same timer.
    let seen = second
        .send(
            reqwest::Method::GET,
            &format!("/v1/timers/{id}"),
            Some(&trio.alice.token),
            None,
        )
        .await;
    assert_eq!(seen.status, 200, "{seen:?}");
    wait_timer(&trio, &trio.alice, &id, "ended", |t| t["status"] == "ended").await;
    // The last tick is claimed (and the timer ended) before its run starts.
    let mut list = Vec::new();
    for _ in 0..200 {
        list = ticks(&trio, &trio.alice, &id).await;
        if list.iter().all(|r| r["status"] == "succeeded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        list.len(),
        6,
        "no skips with instant runs, no doubles: {list:?}"
    );
    let mut due: Vec<DateTime<Utc>> = list.iter().map(|r| time(&r["due_at"])).collect();
    due.dedup();
    assert_eq!(due.len(), 6, "each due time once: {list:?}");
    let runs = trio
        .get(
            Some(&trio.alice),
            &format!("/v1/runs?flow_id={flow}&limit=100"),
        )
        .await;
    assert_eq!(runs.status, 200, "{runs:?}");
    assert_eq!(
        runs.body["runs"].as_array().unwrap().len(),
        6,
        "one flow run per tick: {runs:?}"
    );
    drop(second);
    trio.cleanup().await;
}
