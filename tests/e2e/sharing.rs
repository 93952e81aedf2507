//! Groups and sharing end to end: the service in-process with the real
//! OpenID Connect provider, three people who log in through it (alice,
//! bob, carol) plus a client identity, and real agents hosting
//! collections. Every scenario runs on SQLite and on PostgreSQL
//! (`backend_suite!`; PostgreSQL scenarios skip unless it is reachable or
//! `LATTICE_REQUIRE_SERVICES=1`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lattice_data_plane::TestHooks;
use lattice_tests::Answer;
use reqwest::Method;
use serde_json::{json, Value};

use crate::data::{start_agent, wait_for, write, Agent};
use crate::scene::{login, Person, Trio};
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
        // carol logs in too; some scenarios add dave later (email invitations).
        Trio::start(backend, test, |_| {}).await.map(Self)
    }

    async fn cleanup(self) {
        self.0.cleanup().await;
    }

    async fn ls(&self, who: Option<&Person>, collection: &str, path: &str) -> Answer {
        self.post(
            who,
            &format!("/v1/collections/{collection}/ls"),
            json!({"path": path, "depth": 1}),
        )
        .await
    }

    /// Applies membership actions as `who`; returns the per-action results.
    async fn members(&self, who: &Person, group: &str, actions: Value) -> Vec<Value> {
        let answer = self
            .post(
                Some(who),
                &format!("/v1/groups/{group}/members"),
                json!({"actions": actions}),
            )
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body["results"].as_array().expect("results").clone()
    }

    async fn group(&self, who: &Person, body: Value) -> String {
        let answer = self.post(Some(who), "/v1/groups", body).await;
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.str("id").to_owned()
    }

    async fn rule(&self, who: &Person, collection: &str, body: Value) -> Answer {
        self.post(
            Some(who),
            &format!("/v1/collections/{collection}/acl"),
            body,
        )
        .await
    }

    /// `who` adds a rule giving `principal` `permissions` on `path` of
    /// `collection`; asserts it is created and returns its id.
    async fn grant(
        &self,
        who: &Person,
        collection: &str,
        principal: &str,
        path: &str,
        permissions: &str,
    ) -> String {
        let body = json!({"principal": principal, "path": path, "permissions": permissions});
        let rule = self.rule(who, collection, body).await;
        assert_eq!(rule.status, 201, "{rule:?}");
        rule.str("id").to_owned()
    }

    /// `who` adds `identity` to `group`; asserts it succeeds.
    async fn add_member(&self, who: &Person, group: &str, identity: &str) {
        let action = json!([{"action": "add", "identity": identity}]);
        let results = self.members(who, group, action).await;
        assert!(ok(&results[0]), "{results:?}");
    }

    /// How many access rules `who` sees on `collection`.
    async fn rule_count(&self, who: &Person, collection: &str) -> usize {
        self.get(Some(who), &format!("/v1/collections/{collection}/acl"))
            .await
            .body
            .as_array()
            .unwrap()
            .len()
    }

    async fn agent(&self, who: &Person, name: &str, hooks: TestHooks) -> Agent {
        start_agent(&self.platform.service, &who.token, name, hooks).await
    }
}

fn ok(result: &Value) -> bool {
    result["ok"] == json!(true)
}

fn error_code(result: &Value) -> &str {
    result["error"]["code"].as_str().unwrap_or("")
}

// ---- scenarios ---------------------------------------------------------

async fn group_memberships_follow_their_rules(scene: &Scene) {
    let (alice, bob, carol) = (&scene.alice, &scene.bob, &scene.carol);
    let lab = scene.group(alice, json!({"name": "Ocean Lab"})).await;

    // Batch: invite bob, invite an email nobody used yet, and an invalid
    // action; each answers on its own.
    let results = scene
        .members(
            alice,
            &lab,
            json!([
                {"action": "invite", "identity": bob.id},
                {"action": "invite", "email": "dave@example.org", "role": "manager"},
                {"action": "invite", "email": "not an email"},
                {"action": "add", "identity": "00000000-0000-4000-8000-000000000000"},
            ]),
        )
        .await;
    assert!(ok(&results[0]) && ok(&results[1]), "{results:?}");
    assert_eq!(error_code(&results[2]), "bad_request", "{results:?}");
    assert_eq!(error_code(&results[3]), "not_found", "{results:?}");
    assert!(
        results[2]["member"].is_null(),
        "an error is never hidden inside a success"
    );

    // bob sees the invitation, accepts, and is an active member.
    let show = scene.get(Some(bob), &format!("/v1/groups/{lab}")).await;
    assert_eq!(show.body["my_status"], "invited", "{show:?}");
    let accepted = scene
        .members(bob, &lab, json!([{"action": "accept"}]))
        .await;
    assert!(ok(&accepted[0]), "{accepted:?}");
    assert_eq!(accepted[0]["member"]["status"], "active");

    // A member cannot add, promote themselves or see the audit trail.
    let refused = scene
        .members(
            bob,
            &lab,
            json!([
                {"action": "add", "identity": carol.id},
                {"action": "change_role", "identity": bob.id, "role": "admin"},
            ]),
        )
        .await;
    assert_eq!(error_code(&refused[0]), "forbidden", "{refused:?}");
    assert_eq!(error_code(&refused[1]), "forbidden", "{refused:?}");
    scene
        .get(Some(bob), &format!("/v1/groups/{lab}/audit"))
        .await
        .assert_error(403, "forbidden");

    // The private group does not exist for carol (404, not 403).
    scene
        .get(Some(carol), &format!("/v1/groups/{lab}"))
        .await
        .assert_error(404, "not_found");

    // The last admin cannot leave.
    let leave = scene
        .members(alice, &lab, json!([{"action": "leave"}]))
        .await;
    assert_eq!(error_code(&leave[0]), "conflict", "{leave:?}");

    // An email invitation is claimed at the first login with that verified
    // address (the provider gives every account NAME@example.org).
    let dave = login(&scene.platform, "dave").await;
    let mine = scene.get(Some(&dave), "/v1/groups").await;
    let listed = mine.body.as_array().expect("groups");
    assert_eq!(listed.len(), 1, "{mine:?}");
    assert_eq!(listed[0]["my_status"], "invited");
    assert_eq!(listed[0]["my_role"], "manager");
    assert!(ok(&scene
        .members(&dave, &lab, json!([{"action": "accept"}]))
        .await[0]));

    // Subgroups: a cycle is refused and changes nothing.
    let students = scene
        .group(
            alice,
            json!({"name": "Ocean Lab students", "parent_id": lab}),
        )
        .await;
    let cycle = scene
        .call(
            Some(alice),
            Method::PATCH,
            &format!("/v1/groups/{lab}"),
            Some(json!({"parent_id": students})),
        )
        .await;
    cycle.assert_error(409, "conflict");
    let lab_now = scene.get(Some(alice), &format!("/v1/groups/{lab}")).await;
    assert!(lab_now.body["parent_id"].is_null(), "{lab_now:?}");
    // bob is no admin of the lab: he cannot hang a group under it.
    scene
        .post(
            Some(bob),
            "/v1/groups",
            json!({"name": "bob's", "parent_id": lab}),
        )
        .await
        .assert_error(403, "forbidden");

    // Join requests follow the policy.
    let open = scene
        .group(alice, json!({"name": "Open", "policies": {"visibility": "authenticated", "join_requests": true}}))
        .await;
    let request = scene
        .members(carol, &open, json!([{"action": "request"}]))
        .await;
    assert_eq!(request[0]["member"]["status"], "pending", "{request:?}");
    let approve = scene
        .members(
            alice,
            &open,
            json!([{"action": "approve", "identity": carol.id}]),
        )
        .await;
    assert_eq!(approve[0]["member"]["status"], "active", "{approve:?}");
    // A private group takes no requests from those who cannot see it.
    scene
        .post(
            Some(carol),
            &format!("/v1/groups/{lab}/members"),
            json!({"actions": [{"action": "request"}]}),
        )
        .await
        .assert_error(404, "not_found");

    // Every change is in the audit trail, with who made it.
    let audit = scene
        .get(Some(alice), &format!("/v1/groups/{lab}/audit"))
        .await;
    let actions: Vec<&str> = audit
        .body
        .as_array()
        .expect("audit")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or(""))
        .collect();
    assert!(
        actions.starts_with(&[
            "group.create",
            "member.invite",
            "member.invite",
            "member.accept"
        ]),
        "{actions:?}"
    );
    assert!(audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["actor"] == json!(bob.id)));
}

async fn access_rules_decide_every_file_operation(scene: &Scene) {
    let (alice, bob, carol) = (&scene.alice, &scene.bob, &scene.carol);
    let results = scene.agent(alice, "results", TestHooks::default()).await;
    write(&results.root().join("shared/a.txt"), b"shared");
    write(&results.root().join("shared-private/b.txt"), b"private");
    write(&results.root().join("pub/c.txt"), b"for everyone logged in");
    write(&results.root().join("open/d.txt"), b"for anyone");

    // Nothing is shared yet.
    scene
        .ls(Some(bob), "results", "/shared")
        .await
        .assert_error(404, "not_found");
    let id = scene
        .get(Some(alice), "/v1/collections/results")
        .await
        .str("id")
        .to_owned();
    scene
        .ls(Some(bob), &id, "/shared")
        .await
        .assert_error(403, "forbidden");

    // A group rule: read under /shared/ for the lab's effective members.
    let lab = scene.group(alice, json!({"name": "lab"})).await;
    let students = scene
        .group(alice, json!({"name": "students", "parent_id": lab}))
        .await;
    scene.add_member(alice, &lab, &bob.id).await;
    scene.add_member(alice, &students, &carol.id).await;
    let rule_id = scene
        .grant(alice, "results", &format!("group:{lab}"), "/shared/", "r")
        .await;

    // bob reads inside, by name now that it is shared with him; nothing
    // else: not the sibling with a common prefix, not the root, no writes.
    let listing = scene.ls(Some(bob), "results", "/shared").await;
    assert_eq!(listing.status, 200, "{listing:?}");
    assert_eq!(listing.body["entries"][0]["name"], "a.txt");
    scene
        .ls(Some(bob), "results", "/shared-private")
        .await
        .assert_error(403, "forbidden");
    scene
        .ls(Some(bob), "results", "/")
        .await
        .assert_error(403, "forbidden");
    scene
        .post(
            Some(bob),
            "/v1/collections/results/mkdir",
            json!({"path": "/shared/new"}),
        )
        .await
        .assert_error(403, "forbidden");
    assert!(!results.root().join("shared/new").exists());
    // carol is a member of a subgroup: an effective member of the lab.
    assert_eq!(scene.ls(Some(carol), &id, "/shared").await.status, 200);
    // The collection shows up in bob's list.
    let list = scene.get(Some(bob), "/v1/collections").await;
    assert!(
        list.body
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == json!(id)),
        "{list:?}"
    );

    // all_authenticated_users and public.
    scene
        .grant(alice, "results", "all_authenticated_users", "/pub/", "r")
        .await;
    scene
        .grant(alice, "results", "public", "/open/d.txt", "r")
        .await;
    let dave = login(&scene.platform, "dave").await;
    assert_eq!(scene.ls(Some(&dave), &id, "/pub").await.status, 200);
    scene
        .ls(None, &id, "/pub")
        .await
        .assert_error(401, "unauthorized");
    let anonymous = scene
        .post(
            None,
            &format!("/v1/collections/{id}/stat"),
            json!({"path": "/open/d.txt"}),
        )
        .await;
    assert_eq!(anonymous.status, 200, "{anonymous:?}");
    scene
        .ls(None, &id, "/open")
        .await
        .assert_error(401, "unauthorized");

    // Bad rules are refused with the reason and change nothing.
    let before = scene.rule_count(alice, "results").await;
    let bob_reads = |path: &str| json!({"principal": format!("identity:{}", bob.id), "path": path, "permissions": "r"});
    for (body, status) in [
        (bob_reads("/a/../b/"), 400),
        (bob_reads("/a//b/"), 400),
        (bob_reads("shared/"), 400),
        (bob_reads("/shared /"), 400),
        (
            json!({"principal": format!("identity:{}", bob.id), "path": "/x/", "permissions": "r", "expires_at": "2020-01-01T00:00:00Z"}),
            400,
        ),
        (
            json!({"principal": "identity:00000000-0000-4000-8000-000000000000", "path": "/x/", "permissions": "r"}),
            404,
        ),
        (
            json!({"principal": "user:bob", "path": "/x/", "permissions": "r"}),
            400,
        ),
        (
            json!({"principal": "public", "path": "/x/", "permissions": "rwx"}),
            400,
        ),
    ] {
        let answer = scene.rule(alice, "results", body.clone()).await;
        assert_eq!(answer.status.as_u16(), status, "{body}: {answer:?}");
    }
    // A non-manager cannot manage rules.
    scene
        .rule(
            bob,
            &id,
            json!({"principal": "public", "path": "/", "permissions": "rw"}),
        )
        .await
        .assert_error(403, "forbidden");
    let after = scene.rule_count(alice, "results").await;
    assert_eq!(before, after);

    // An access manager can; the audit trail says who did.
    let role = scene
        .post(
            Some(alice),
            "/v1/collections/results/roles",
            json!({"principal": format!("identity:{}", bob.id), "role": "access_manager"}),
        )
        .await;
    assert_eq!(role.status, 201, "{role:?}");
    let by_bob = scene
        .rule(bob, &id, json!({"principal": format!("identity:{}", carol.id), "path": "/shared-private/", "permissions": "r", "expires_at": (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339()}))
        .await;
    assert_eq!(by_bob.status, 201, "{by_bob:?}");
    assert_eq!(
        scene.ls(Some(carol), &id, "/shared-private").await.status,
        200
    );
    // An expired rule grants nothing.
    wait_for("carol's rule to expire", || async {
        (scene.ls(Some(carol), &id, "/shared-private").await.status == 403).then_some(())
    })
    .await;
    let audit = scene
        .get(Some(alice), "/v1/collections/results/audit")
        .await;
    assert!(
        audit
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "acl.create" && e["actor"] == json!(bob.id)),
        "{audit:?}"
    );

    // Removing bob from the group ends his access at once; deleting the
    // rule ends carol's.
    assert!(ok(&scene
        .members(
            alice,
            &lab,
            json!([{"action": "remove", "identity": bob.id}])
        )
        .await[0]));
    scene
        .ls(Some(bob), &id, "/shared")
        .await
        .assert_error(403, "forbidden");
    assert_eq!(scene.ls(Some(carol), &id, "/shared").await.status, 200);
    let deleted = scene
        .delete(
            Some(alice),
            &format!("/v1/collections/results/acl/{rule_id}"),
        )
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    scene
        .ls(Some(carol), &id, "/shared")
        .await
        .assert_error(403, "forbidden");
}

async fn removing_a_member_stops_a_running_transfer_at_its_next_item(scene: &Scene) {
    let (alice, bob) = (&scene.alice, &scene.bob);
    // The source holds f1, f2, f3, one item each; the second file read
    // (f2) waits at a gate, so the test can act while that item is in
    // flight. (The hook runs on the blocking pool.)
    let reached = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let hooks = TestHooks {
        before_read: Some(Arc::new({
            let (reached, release, reads) = (reached.clone(), release.clone(), reads.clone());
            move |_: &str| {
                if reads.fetch_add(1, Ordering::SeqCst) == 1 {
                    reached.store(true, Ordering::SeqCst);
                    let deadline = std::time::Instant::now() + Duration::from_secs(60);
                    while !release.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        })),
        ..TestHooks::default()
    };
    let results = scene.agent(alice, "results", hooks).await;
    let inbox = scene.agent(bob, "inbox", TestHooks::default()).await;
    for name in ["f1", "f2", "f3"] {
        write(&results.root().join("shared").join(name), name.as_bytes());
    }
    let lab = scene.group(alice, json!({"name": "lab"})).await;
    scene.add_member(alice, &lab, &bob.id).await;
    scene
        .grant(alice, "results", &format!("group:{lab}"), "/shared/", "r")
        .await;

    // bob may read the source but not write into alice's collection.
    let refused = scene
        .post(
            Some(bob),
            "/v1/transfers",
            json!({
                "source_collection": "inbox", "destination_collection": "results",
                "items": [{"source_path": "/", "destination_path": "/shared/x", "recursive": true}],
            }),
        )
        .await;
    refused.assert_error(403, "forbidden");

    let items: Vec<Value> = ["f1", "f2", "f3"]
        .iter()
        .map(
            |f| json!({"source_path": format!("/shared/{f}"), "destination_path": format!("/{f}")}),
        )
        .collect();
    let submitted = scene
        .post(
            Some(bob),
            "/v1/transfers",
            json!({
                "source_collection": "results", "destination_collection": "inbox", "items": items,
            }),
        )
        .await;
    assert_eq!(submitted.status, 201, "{submitted:?}");
    let transfer = submitted.str("id").to_owned();
    wait_for("the second item to be read", || async {
        reached.load(Ordering::SeqCst).then_some(())
    })
    .await;

    // alice removes bob from the group while f2 is in flight.
    assert!(ok(&scene
        .members(
            alice,
            &lab,
            json!([{"action": "remove", "identity": bob.id}])
        )
        .await[0]));
    release.store(true, Ordering::SeqCst);

    let done = wait_for("the transfer to end", || async {
        let answer = scene
            .get(Some(bob), &format!("/v1/transfers/{transfer}"))
            .await;
        ["succeeded", "failed", "cancelled"]
            .contains(&answer.body["status"].as_str().unwrap_or(""))
            .then_some(answer.body)
    })
    .await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["status_message"]
            .as_str()
            .unwrap_or("")
            .starts_with("PERMISSION_DENIED"),
        "{done}"
    );
    assert_eq!(done["items_done"], 2, "{done}");
    let events = scene
        .get(Some(bob), &format!("/v1/transfers/{transfer}/events"))
        .await;
    let denied: Vec<&Value> = events
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["code"] == "PERMISSION_DENIED")
        .collect();
    assert_eq!(denied.len(), 1, "{events:?}");
    assert_eq!(denied[0]["item"], 2);
    // The item in flight finished; nothing after it was copied.
    assert_eq!(std::fs::read(inbox.root().join("f1")).unwrap(), b"f1");
    assert_eq!(std::fs::read(inbox.root().join("f2")).unwrap(), b"f2");
    assert!(!inbox.root().join("f3").exists());

    // An activity monitor sees alice's collection's transfers; others do not.
    let carol = &scene.carol;
    scene
        .get(Some(carol), &format!("/v1/transfers/{transfer}"))
        .await
        .assert_error(403, "forbidden");
    let role = scene
        .post(
            Some(alice),
            "/v1/collections/results/roles",
            json!({"principal": format!("identity:{}", carol.id), "role": "activity_monitor"}),
        )
        .await;
    assert_eq!(role.status, 201, "{role:?}");
    assert_eq!(
        scene
            .get(Some(carol), &format!("/v1/transfers/{transfer}"))
            .await
            .status,
        200
    );
    scene
        .post(
            Some(carol),
            &format!("/v1/transfers/{transfer}/cancel"),
            json!({}),
        )
        .await
        .assert_error(403, "forbidden");
}

async fn guest_collections_share_a_folder_with_the_creators_access(scene: &Scene) {
    let (alice, bob, carol) = (&scene.alice, &scene.bob, &scene.carol);
    let results = scene.agent(alice, "results", TestHooks::default()).await;
    write(&results.root().join("shared/a.txt"), b"shared");
    write(&results.root().join("shared/sub/b.txt"), b"deeper");
    write(&results.root().join("shared-private/x.txt"), b"private");
    // A link inside the shared folder to a sibling outside it.
    std::os::unix::fs::symlink("../shared-private", results.root().join("shared/escape"))
        .expect("symlink");
    let guest = |path: &str, name: &str| json!({"path": path, "name": name});

    // Only what the creator can read can be shared.
    scene
        .post(
            Some(bob),
            &format!("/v1/collections/{}/guests", results_id(scene).await),
            guest("/shared/", "bobs-share"),
        )
        .await
        .assert_error(403, "forbidden");
    let bob_principal = format!("identity:{}", bob.id);
    let rule_id = scene
        .grant(alice, "results", &bob_principal, "/shared/", "rw")
        .await;
    for (body, status) in [
        (guest("/shared/a.txt", "x"), 400),
        (guest("/shared/../", "x"), 400),
        (guest("/shared/", "bad name!"), 400),
        (guest("/", "x"), 403),
    ] {
        let answer = scene
            .post(Some(bob), "/v1/collections/results/guests", body.clone())
            .await;
        assert_eq!(answer.status.as_u16(), status, "{body}: {answer:?}");
    }
    let created = scene
        .post(
            Some(bob),
            "/v1/collections/results/guests",
            guest("/shared/", "bobs-share"),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["host_path"], "/shared/");
    let share = created.str("id").to_owned();

    // Through the guest, paths start at its root.
    let listing = scene.ls(Some(bob), "bobs-share", "/").await;
    assert_eq!(listing.status, 200, "{listing:?}");
    let paths: Vec<&str> = listing.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/a.txt", "/escape", "/sub"], "{listing:?}");
    // The link leads outside the guest's root: refused by the agent, even
    // though the host collection itself may follow it.
    scene
        .ls(Some(bob), "bobs-share", "/escape")
        .await
        .assert_error(403, "forbidden");
    assert_eq!(
        scene
            .ls(Some(alice), "results", "/shared/escape")
            .await
            .status,
        200
    );

    // bob shares his guest with carol, read-only.
    scene
        .grant(
            bob,
            "bobs-share",
            &format!("identity:{}", carol.id),
            "/",
            "r",
        )
        .await;
    assert_eq!(
        scene.ls(Some(carol), "bobs-share", "/sub").await.status,
        200
    );
    scene
        .post(
            Some(carol),
            &format!("/v1/collections/{share}/mkdir"),
            json!({"path": "/new"}),
        )
        .await
        .assert_error(403, "forbidden");
    let made = scene
        .post(
            Some(bob),
            "/v1/collections/bobs-share/mkdir",
            json!({"path": "/new"}),
        )
        .await;
    assert_eq!(made.status, 200, "{made:?}");
    assert!(results.root().join("shared/new").is_dir());
    // A transfer from the guest reads beneath its root on the host.
    let inbox = scene.agent(carol, "carols", TestHooks::default()).await;
    let submitted = scene
        .post(
            Some(carol),
            "/v1/transfers",
            json!({
                "source_collection": share, "destination_collection": "carols",
                "items": [{"source_path": "/sub", "destination_path": "/copy", "recursive": true}],
            }),
        )
        .await;
    assert_eq!(submitted.status, 201, "{submitted:?}");
    let transfer = submitted.str("id").to_owned();
    let done = wait_for("the transfer from the guest", || async {
        let answer = scene
            .get(Some(carol), &format!("/v1/transfers/{transfer}"))
            .await;
        ["succeeded", "failed"]
            .contains(&answer.body["status"].as_str().unwrap_or(""))
            .then_some(answer.body)
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        std::fs::read(inbox.root().join("copy/b.txt")).unwrap(),
        b"deeper"
    );
    // carol cannot reach the host through the guest's name.
    scene
        .ls(Some(carol), "results", "/shared")
        .await
        .assert_error(404, "not_found");

    // The host's sharing policy bounds every guest.
    let policy = scene
        .call(Some(alice), Method::PUT, "/v1/collections/results/sharing", Some(json!({
            "guest_collections": true,
            "paths": [{"path": "/", "mode": "read_write"}, {"path": "/shared/sub/", "mode": "none"}],
        })))
        .await;
    assert_eq!(policy.status, 200, "{policy:?}");
    let refused = scene
        .ls(Some(carol), &share, "/sub")
        .await
        .assert_error(403, "forbidden");
    assert!(refused.contains("does not allow sharing"), "{refused}");
    assert_eq!(scene.ls(Some(carol), &share, "/").await.status, 200);
    scene
        .post(
            Some(bob),
            "/v1/collections/results/guests",
            guest("/shared/sub/", "deeper"),
        )
        .await
        .assert_error(403, "forbidden");
    scene
        .call(
            Some(bob),
            Method::PUT,
            "/v1/collections/results/sharing",
            Some(json!({"guest_collections": false, "paths": []})),
        )
        .await
        .assert_error(403, "forbidden");

    // When the creator loses access on the host, the guest stops working.
    let deleted = scene
        .delete(
            Some(alice),
            &format!("/v1/collections/results/acl/{rule_id}"),
        )
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let refused = scene
        .ls(Some(carol), &share, "/")
        .await
        .assert_error(403, "forbidden");
    assert!(
        refused.contains("its creator no longer has read access"),
        "{refused}"
    );

    // Only its creator deletes it; afterwards it is gone for everyone.
    scene
        .delete(Some(carol), &format!("/v1/collections/{share}"))
        .await
        .assert_error(403, "forbidden");
    let gone = scene
        .delete(Some(bob), &format!("/v1/collections/{share}"))
        .await;
    assert_eq!(gone.status, 204, "{gone:?}");
    scene
        .ls(Some(carol), &share, "/")
        .await
        .assert_error(404, "not_found");
    scene
        .delete(Some(alice), "/v1/collections/results")
        .await
        .assert_error(400, "bad_request");
}

async fn results_id(scene: &Scene) -> String {
    scene
        .get(Some(&scene.alice), "/v1/collections/results")
        .await
        .str("id")
        .to_owned()
}

backend_suite!(
    "sharing";
    group_memberships_follow_their_rules,
    access_rules_decide_every_file_operation,
    removing_a_member_stops_a_running_transfer_at_its_next_item,
    guest_collections_share_a_folder_with_the_creators_access,
);
