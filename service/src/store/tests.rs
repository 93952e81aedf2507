//! One test suite for every store back end: each `async fn` below takes a
//! store and is instantiated for SQLite and for PostgreSQL by `store_suite!`.

use chrono::{Duration, Utc};
use lattice_protocol::api::{Identity, Scope};
use lattice_protocol::{ClientId, IdentityId, LoginId, TokenId};

use super::testing::TestStore;
use super::*;

fn identity(provider: &str, subject: &str) -> Identity {
    Identity {
        id: IdentityId::new(),
        username: format!("{subject}@example.org"),
        display_name: Some("Ada Lovelace".into()),
        email: Some("ada@example.org".into()),
        identity_provider: provider.into(),
        subject: subject.into(),
        // Stored with millisecond precision.
        created_at: from_millis(to_millis(Utc::now())),
    }
}

fn token(identity_id: IdentityId, kind: TokenKind, family: TokenId) -> TokenRecord {
    let now = from_millis(to_millis(Utc::now()));
    TokenRecord {
        id: TokenId::new(),
        token_hash: format!("hash-{}", uuid::Uuid::new_v4()),
        kind,
        identity_id,
        scopes: vec![Scope::Compute, Scope::Manage],
        family_id: family,
        client_id: None,
        created_at: now,
        expires_at: now + Duration::hours(1),
        used_at: None,
        revoked_at: None,
    }
}

async fn identities_are_keyed_by_provider_and_subject(store: SharedStore) {
    let ada = identity("https://idp.example.org", "ada");
    store.insert_identity(&ada).await.unwrap();
    assert_eq!(store.identity(ada.id).await.unwrap(), Some(ada.clone()));
    assert_eq!(
        store
            .identity_by_subject("https://idp.example.org", "ada")
            .await
            .unwrap(),
        Some(ada.clone())
    );
    // Same subject at another provider is another identity; same email too.
    let other = identity("https://other.example.org", "ada");
    store.insert_identity(&other).await.unwrap();
    assert_eq!(
        store
            .identity_by_subject("https://other.example.org", "ada")
            .await
            .unwrap()
            .unwrap()
            .id,
        other.id
    );
    // A second row for the same (provider, subject) is a conflict.
    let duplicate = identity("https://idp.example.org", "ada");
    assert!(matches!(
        store.insert_identity(&duplicate).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.identity(IdentityId::new()).await.unwrap(), None);
}

async fn linked_identities_share_a_primary(store: SharedStore) {
    let a = identity("idp-a", "a");
    let b = identity("idp-b", "b");
    let c = identity("idp-c", "c");
    for i in [&a, &b, &c] {
        store.insert_identity(i).await.unwrap();
    }
    store.link_identity(c.id, b.id).await.unwrap();
    store.link_identity(b.id, a.id).await.unwrap();
    assert_eq!(store.primary_identity(c.id).await.unwrap(), a.id);
    let mut linked: Vec<_> = store
        .linked_identities(a.id)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    linked.sort();
    let mut expected = vec![a.id, b.id, c.id];
    expected.sort();
    assert_eq!(linked, expected);
}

async fn refresh_tokens_can_be_used_once(store: SharedStore) {
    let ada = identity("idp", "ada");
    store.insert_identity(&ada).await.unwrap();
    let family = TokenId::new();
    let refresh = token(ada.id, TokenKind::Refresh, family);
    let access = token(ada.id, TokenKind::Access, family);
    store.insert_token(&refresh).await.unwrap();
    store.insert_token(&access).await.unwrap();
    assert_eq!(
        store.token_by_hash(&refresh.token_hash).await.unwrap(),
        Some(refresh.clone())
    );
    assert!(store.mark_token_used(refresh.id, Utc::now()).await.unwrap());
    assert!(!store.mark_token_used(refresh.id, Utc::now()).await.unwrap());
    assert_eq!(
        store.revoke_token_family(family, Utc::now()).await.unwrap(),
        2
    );
    let revoked = store
        .token_by_hash(&access.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.token_by_hash("no-such-hash").await.unwrap(), None);
}

async fn clients_are_listed_by_owner(store: SharedStore) {
    let owner = identity("idp", "owner");
    let client_identity = identity("client", "robot");
    store.insert_identity(&owner).await.unwrap();
    store.insert_identity(&client_identity).await.unwrap();
    let client = ClientRecord {
        id: ClientId::new(),
        name: "pipeline".into(),
        secret_hash: "h".into(),
        identity_id: client_identity.id,
        owner_id: owner.id,
        scopes: vec![Scope::Compute],
        created_at: from_millis(to_millis(Utc::now())),
    };
    store.insert_client(&client).await.unwrap();
    assert_eq!(store.client(client.id).await.unwrap(), Some(client.clone()));
    assert_eq!(
        store.clients_owned_by(owner.id).await.unwrap(),
        vec![client]
    );
    assert!(store
        .clients_owned_by(client_identity.id)
        .await
        .unwrap()
        .is_empty());
}

async fn deleting_or_rekeying_a_client_revokes_its_tokens(store: SharedStore) {
    let owner = identity("idp", "rekey-owner");
    let robot = identity("client", "rekey-robot");
    store.insert_identity(&owner).await.unwrap();
    store.insert_identity(&robot).await.unwrap();
    let now = from_millis(to_millis(Utc::now()));
    let client = ClientRecord {
        id: ClientId::new(),
        name: "pipeline".into(),
        secret_hash: "old".into(),
        identity_id: robot.id,
        owner_id: owner.id,
        scopes: vec![Scope::Compute],
        created_at: now,
    };
    store.insert_client(&client).await.unwrap();
    let mut issued = token(robot.id, TokenKind::Access, TokenId::new());
    issued.client_id = Some(client.id);
    let unrelated = token(robot.id, TokenKind::Access, TokenId::new());
    store.insert_token(&issued).await.unwrap();
    store.insert_token(&unrelated).await.unwrap();
    let revoked = |record: &TokenRecord| {
        let (store, hash) = (store.clone(), record.token_hash.clone());
        async move {
            store
                .token_by_hash(&hash)
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_some()
        }
    };

    assert!(store
        .replace_client_secret(client.id, "new", now)
        .await
        .unwrap());
    assert_eq!(
        store.client(client.id).await.unwrap().unwrap().secret_hash,
        "new"
    );
    assert!(revoked(&issued).await);
    assert!(!revoked(&unrelated).await);

    assert!(store.delete_client(client.id, now).await.unwrap());
    assert_eq!(store.client(client.id).await.unwrap(), None);
    assert!(!store.delete_client(client.id, now).await.unwrap());
    assert!(!store
        .replace_client_secret(client.id, "x", now)
        .await
        .unwrap());
    assert!(!revoked(&unrelated).await);
}

async fn login_callbacks_and_redemptions_happen_once(store: SharedStore) {
    let ada = identity("idp", "ada");
    store.insert_identity(&ada).await.unwrap();
    let now = from_millis(to_millis(Utc::now()));
    let login = LoginRecord {
        id: LoginId::new(),
        csrf_state: "state-1".into(),
        nonce: "nonce".into(),
        pkce_verifier: "verifier".into(),
        redirect_uri: Some("http://127.0.0.1:9/cb".into()),
        device_code_hash: "device-hash".into(),
        created_at: now,
        expires_at: now + Duration::minutes(10),
        callback_at: None,
        identity_id: None,
        error: None,
        redeemed_at: None,
    };
    store.insert_login(&login).await.unwrap();
    assert_eq!(
        store.login_by_state("state-1").await.unwrap(),
        Some(login.clone())
    );
    // Not redeemable before the callback completed.
    assert!(!store.redeem_login(login.id, now).await.unwrap());
    assert!(store.claim_login_callback(login.id, now).await.unwrap());
    assert!(!store.claim_login_callback(login.id, now).await.unwrap());
    store.finish_login(login.id, Ok(ada.id)).await.unwrap();
    let found = store
        .login_by_device_code("device-hash")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.identity_id, Some(ada.id));
    assert!(store.redeem_login(login.id, now).await.unwrap());
    assert!(!store.redeem_login(login.id, now).await.unwrap());
}

async fn endpoint_blocks_and_provider_error_round_trip(store: SharedStore) {
    use lattice_protocol::compute::{BlockPhase, BlockReport, ChildReport};
    let ada = identity("idp", "ada-blocks");
    store.insert_identity(&ada).await.unwrap();
    let record = endpoint_record(ada.id, "hpc");
    store.insert_endpoint(&record).await.unwrap();
    assert_eq!(
        store.endpoint(record.id).await.unwrap(),
        Some(record.clone())
    );
    let blocks = vec![BlockReport {
        id: "b1-1".into(),
        job_id: None,
        state: BlockPhase::Failed,
        message: Some("sbatch: error: Invalid account".into()),
        nodes: 1,
        workers: 0,
    }];
    let children = vec![ChildReport {
        local_user: "ada".into(),
        variables: r#"{"account":"p1"}"#.into(),
        pid: Some(4242),
        tasks: 3,
        workers: 1,
        blocks: blocks.clone(),
        provider_error: None,
    }];
    store
        .update_endpoint_blocks(
            record.id,
            &blocks,
            Some("sbatch: error: Invalid account"),
            Some("slurm"),
            &children,
        )
        .await
        .unwrap();
    let stored = store.endpoint(record.id).await.unwrap().unwrap();
    assert_eq!(stored.provider.as_deref(), Some("slurm"));
    assert_eq!(stored.blocks, blocks);
    assert_eq!(stored.children, children);
    assert_eq!(
        stored.provider_error.as_deref(),
        Some("sbatch: error: Invalid account")
    );
    store
        .update_endpoint_blocks(record.id, &[], None, None, &[])
        .await
        .unwrap();
    assert_eq!(
        store.endpoint(record.id).await.unwrap(),
        Some(record.clone())
    );
    // An agent announcing multi-user mode is recorded as such.
    store
        .set_endpoint_connected(
            record.id,
            Some(crate::store::AgentConnection {
                hostname: "login1".into(),
                agent_version: "1.0".into(),
                multi_user: true,
            }),
            Utc::now(),
        )
        .await
        .unwrap();
    let stored = store.endpoint(record.id).await.unwrap().unwrap();
    assert!(stored.multi_user);
    assert_eq!(stored.hostname.as_deref(), Some("login1"));
}

fn endpoint_record(owner: IdentityId, name: &str) -> EndpointRecord {
    EndpointRecord {
        id: lattice_protocol::EndpointId::new(),
        owner_id: owner,
        name: name.into(),
        secret_hash: format!("hash-{}", uuid::Uuid::new_v4()),
        created_at: from_millis(to_millis(Utc::now())),
        connected_at: None,
        last_seen: None,
        agent_version: None,
        hostname: None,
        workers: 0,
        idle_slots: 0,
        queue_depth: 0,
        blocks: Vec::new(),
        provider_error: None,
        provider: None,
        multi_user: false,
        children: Vec::new(),
    }
}

async fn collections_are_announced_withdrawn_and_owner_scoped(store: SharedStore) {
    use lattice_protocol::transfer::CollectionAnnounce;
    let ada = identity("https://idp.example.org", "ada-collections");
    store.insert_identity(&ada).await.unwrap();
    let (lab, hpc) = (
        endpoint_record(ada.id, "lab"),
        endpoint_record(ada.id, "hpc"),
    );
    store.insert_endpoint(&lab).await.unwrap();
    store.insert_endpoint(&hpc).await.unwrap();
    let announce = |name: &str, root: &str| CollectionAnnounce {
        name: name.into(),
        root: root.into(),
    };
    let now = Utc::now();
    let refused = store
        .announce_collections(
            lab.id,
            ada.id,
            &[announce("data", "/srv/data"), announce("raw", "/srv/raw")],
            now,
        )
        .await
        .unwrap();
    assert!(refused.is_empty());
    // The same name on another endpoint of the owner is refused.
    let refused = store
        .announce_collections(hpc.id, ada.id, &[announce("data", "/scratch")], now)
        .await
        .unwrap();
    assert_eq!(refused, ["data"]);
    let names: Vec<String> = store
        .collections_owned_by(ada.id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["data", "raw"]);
    let data = store
        .collection_by_name(ada.id, "data")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (data.endpoint_id, data.root.as_str()),
        (lab.id, "/srv/data")
    );
    // Not announced again: withdrawn, and then free for another endpoint.
    store
        .announce_collections(lab.id, ada.id, &[announce("raw", "/srv/raw2")], now)
        .await
        .unwrap();
    let data_again = store.collection(data.id).await.unwrap().unwrap();
    assert!(data_again.withdrawn_at.is_some());
    let refused = store
        .announce_collections(hpc.id, ada.id, &[announce("data", "/scratch")], now)
        .await
        .unwrap();
    assert!(refused.is_empty());
    let moved = store.collection(data.id).await.unwrap().unwrap();
    assert_eq!((moved.endpoint_id, moved.withdrawn_at), (hpc.id, None));
    assert_eq!(
        store
            .collection_by_name(ada.id, "raw")
            .await
            .unwrap()
            .unwrap()
            .root,
        "/srv/raw2"
    );
}

async fn transfers_keep_submission_ids_events_and_final_states(store: SharedStore) {
    use lattice_protocol::transfer::{
        CollectionAnnounce, FileChecksum, TaskKind, TransferCounters, TransferItem,
        TransferOptions, TransferStatus, TransferTuning,
    };
    let ada = identity("https://idp.example.org", "ada-transfers");
    store.insert_identity(&ada).await.unwrap();
    let lab = endpoint_record(ada.id, "lab");
    store.insert_endpoint(&lab).await.unwrap();
    store
        .announce_collections(
            lab.id,
            ada.id,
            &[CollectionAnnounce {
                name: "data".into(),
                root: "/d".into(),
            }],
            Utc::now(),
        )
        .await
        .unwrap();
    let data = store
        .collection_by_name(ada.id, "data")
        .await
        .unwrap()
        .unwrap();
    let record = TransferRecord {
        id: lattice_protocol::TransferId::new(),
        kind: TaskKind::Transfer,
        owner_id: ada.id,
        label: Some("nightly".into()),
        status: TransferStatus::Active,
        status_message: None,
        source_collection: data.id,
        destination_collection: data.id,
        items: vec![TransferItem {
            source_path: "/a b".into(),
            destination_path: "/ü\n".into(),
            recursive: true,
        }],
        options: TransferOptions::default(),
        tuning: TransferTuning {
            connections: Some(8),
            streams_per_connection: None,
            chunk_size: Some(1 << 20),
        },
        deadline: None,
        submission_id: Some("s-1".into()),
        submitted_at: from_millis(to_millis(Utc::now())),
        completed_at: None,
        items_done: 0,
        attempts: 0,
        counters: TransferCounters::default(),
        notify_on: lattice_protocol::transfer::TransferNotifyOn {
            succeeded: false,
            failed: true,
            inactive: false,
        },
    };
    store.insert_transfer(&record).await.unwrap();
    assert_eq!(
        store.transfer(record.id).await.unwrap(),
        Some(record.clone()),
        "a transfer round-trips, its tuning with it"
    );
    let duplicate = TransferRecord {
        id: lattice_protocol::TransferId::new(),
        ..record.clone()
    };
    assert!(matches!(
        store.insert_transfer(&duplicate).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .transfer_by_submission(ada.id, "s-1")
            .await
            .unwrap()
            .unwrap()
            .id,
        record.id
    );
    let no_submission = TransferRecord {
        id: lattice_protocol::TransferId::new(),
        submission_id: None,
        ..record.clone()
    };
    store.insert_transfer(&no_submission).await.unwrap();
    let again = TransferRecord {
        id: lattice_protocol::TransferId::new(),
        kind: TaskKind::Delete {
            ignore_missing: true,
        },
        submission_id: None,
        ..record.clone()
    };
    store.insert_transfer(&again).await.unwrap();
    assert_eq!(
        store.transfer(again.id).await.unwrap(),
        Some(again.clone()),
        "a delete task's kind round-trips"
    );
    assert_eq!(store.unfinished_transfers().await.unwrap().len(), 3);

    let counters = TransferCounters {
        files: 2,
        bytes_transferred: 10,
        ..Default::default()
    };
    fn progress(
        status: TransferStatus,
        items_done: u32,
        counters: &TransferCounters,
        completed_at: Option<chrono::DateTime<Utc>>,
    ) -> TransferProgress<'_> {
        TransferProgress {
            status,
            status_message: Some("m"),
            items_done,
            attempts: 1,
            counters,
            completed_at,
        }
    }
    assert!(store
        .update_transfer(
            record.id,
            &progress(TransferStatus::Paused, 0, &counters, None)
        )
        .await
        .unwrap());
    assert!(store
        .update_transfer(
            record.id,
            &progress(TransferStatus::Cancelled, 0, &counters, Some(Utc::now()))
        )
        .await
        .unwrap());
    // A final transfer is never updated again.
    assert!(!store
        .update_transfer(
            record.id,
            &progress(TransferStatus::Active, 1, &counters, None)
        )
        .await
        .unwrap());
    let stored = store.transfer(record.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.counters.files),
        (TransferStatus::Cancelled, 2)
    );

    for (code, fault) in [
        ("SUBMITTED", false),
        ("CONNECTION_RESET", true),
        ("FILE_NOT_FOUND", true),
    ] {
        store
            .insert_transfer_event(&NewTransferEvent {
                transfer_id: record.id,
                time: Utc::now(),
                code: code.into(),
                fault,
                side: fault.then_some(lattice_protocol::transfer::Side::Source),
                path: None,
                message: "m".into(),
                item: 0,
                attempt: 1,
            })
            .await
            .unwrap();
    }
    let events = store.transfer_events(record.id, 0, 100).await.unwrap();
    let codes: Vec<&str> = events.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(codes, ["SUBMITTED", "CONNECTION_RESET", "FILE_NOT_FOUND"]);
    let after = store
        .transfer_events(record.id, events[0].seq, 100)
        .await
        .unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(store.count_transfer_faults(record.id).await.unwrap(), 2);

    let sum = |path: &str, hash: &str| FileChecksum {
        path: path.into(),
        size: 1,
        blake3: hash.into(),
    };
    store
        .insert_checksums(record.id, 0, &[sum("b", "1"), sum("a", "2")])
        .await
        .unwrap();
    store
        .insert_checksums(record.id, 0, &[sum("a", "3")])
        .await
        .unwrap();
    let sums = store.transfer_checksums(record.id).await.unwrap();
    assert_eq!(sums, [sum("a", "3"), sum("b", "1")]);
}

macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let test_store = super::TestStore::sqlite().await;
                    super::$name(test_store.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(test_store) = super::TestStore::postgres(concat!("store::postgres::", stringify!($name))).await else {
                        return;
                    };
                    super::$name(test_store.store.clone()).await;
                    test_store.cleanup().await;
                }
            )*
        }
    };
}

async fn groups_memberships_and_effective_groups_through_subgroups(store: SharedStore) {
    use lattice_protocol::sharing::{GroupPolicies, GroupRole, MembershipStatus};
    use lattice_protocol::GroupId;
    let (ada, bob) = (
        identity("https://idp.example.org", "ada-groups"),
        identity("https://idp.example.org", "bob-groups"),
    );
    store.insert_identity(&ada).await.unwrap();
    store.insert_identity(&bob).await.unwrap();
    let now = from_millis(to_millis(Utc::now()));
    let group = |name: &str, parent: Option<GroupId>| GroupRecord {
        id: GroupId::new(),
        name: name.into(),
        description: String::new(),
        parent_id: parent,
        policies: GroupPolicies::default(),
        created_by: ada.id,
        created_at: now,
    };
    let member = |g: &GroupRecord, who: IdentityId, role, status| MembershipRecord {
        group_id: g.id,
        identity_id: Some(who),
        email: None,
        role,
        status,
        created_at: now,
        updated_at: now,
    };
    let lab = group("lab", None);
    let students = group("students", Some(lab.id));
    store
        .insert_group(
            &lab,
            &member(&lab, ada.id, GroupRole::Admin, MembershipStatus::Active),
        )
        .await
        .unwrap();
    store
        .insert_group(
            &students,
            &member(
                &students,
                ada.id,
                GroupRole::Admin,
                MembershipStatus::Active,
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        store.group_ancestors(students.id).await.unwrap(),
        vec![lab.id]
    );
    assert!(store.group_ancestors(lab.id).await.unwrap().is_empty());

    // Invited is not a member; active in the subgroup is a member of both.
    store
        .put_membership(&member(
            &students,
            bob.id,
            GroupRole::Member,
            MembershipStatus::Invited,
        ))
        .await
        .unwrap();
    assert!(store.effective_groups(&[bob.id]).await.unwrap().is_empty());
    store
        .put_membership(&member(
            &students,
            bob.id,
            GroupRole::Member,
            MembershipStatus::Active,
        ))
        .await
        .unwrap();
    let mut effective = store.effective_groups(&[bob.id]).await.unwrap();
    effective.sort();
    let mut expected = vec![lab.id, students.id];
    expected.sort();
    assert_eq!(effective, expected);
    assert_eq!(
        store
            .membership(students.id, bob.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        MembershipStatus::Active,
        "put_membership replaces the row"
    );
    assert_eq!(store.members(students.id).await.unwrap().len(), 2);
    assert_eq!(store.groups_of(&[bob.id]).await.unwrap().len(), 1);

    // An invitation by email is claimed by the identity with that address.
    let invitation = MembershipRecord {
        identity_id: None,
        email: Some("bob@example.org".into()),
        ..member(&lab, bob.id, GroupRole::Manager, MembershipStatus::Invited)
    };
    store.put_membership(&invitation).await.unwrap();
    assert!(store
        .membership_by_email(lab.id, "bob@example.org")
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store
            .claim_email_invitations(bob.id, "bob@example.org", now)
            .await
            .unwrap(),
        1
    );
    let claimed = store.membership(lab.id, bob.id).await.unwrap().unwrap();
    assert_eq!(
        (claimed.role, claimed.status),
        (GroupRole::Manager, MembershipStatus::Invited)
    );
    assert_eq!(
        store
            .claim_email_invitations(bob.id, "bob@example.org", now)
            .await
            .unwrap(),
        0
    );

    // Deleting the parent detaches the subgroup and ends its memberships.
    assert!(store.delete_group(lab.id).await.unwrap());
    assert!(store.group(lab.id).await.unwrap().is_none());
    assert_eq!(
        store.group(students.id).await.unwrap().unwrap().parent_id,
        None
    );
    assert_eq!(
        store.effective_groups(&[bob.id]).await.unwrap(),
        vec![students.id]
    );
    assert!(!store.delete_group(lab.id).await.unwrap());
}

async fn rules_roles_grants_and_audit_round_trip(store: SharedStore) {
    use lattice_protocol::sharing::{
        AclRuleInfo, CollectionRole, Permissions, Principal, RoleInfo,
    };
    use lattice_protocol::transfer::CollectionAnnounce;
    use lattice_protocol::{AclRuleId, RoleId};
    let ada = identity("https://idp.example.org", "ada-rules");
    let bob = identity("https://idp.example.org", "bob-rules");
    store.insert_identity(&ada).await.unwrap();
    store.insert_identity(&bob).await.unwrap();
    let lab = endpoint_record(ada.id, "lab-rules");
    store.insert_endpoint(&lab).await.unwrap();
    let now = from_millis(to_millis(Utc::now()));
    store
        .announce_collections(
            lab.id,
            ada.id,
            &[CollectionAnnounce {
                name: "results".into(),
                root: "/srv/results".into(),
            }],
            now,
        )
        .await
        .unwrap();
    let results = store
        .collection_by_name(ada.id, "results")
        .await
        .unwrap()
        .unwrap();
    let rule = |principal, path: &str| AclRuleInfo {
        id: AclRuleId::new(),
        collection_id: results.id,
        principal,
        path: path.into(),
        permissions: Permissions::Read,
        expires_at: Some(now + Duration::days(30)),
        created_by: ada.id,
        created_at: now,
    };
    let first = rule(Principal::Identity(bob.id), "/shared/");
    assert!(store.insert_acl_rule(&first, 2).await.unwrap());
    assert!(store
        .insert_acl_rule(&rule(Principal::Public, "/pub/"), 2)
        .await
        .unwrap());
    assert!(
        !store
            .insert_acl_rule(&rule(Principal::Public, "/more/"), 2)
            .await
            .unwrap(),
        "the limit holds"
    );
    assert_eq!(store.acl_rules(results.id).await.unwrap().len(), 2);
    assert_eq!(store.acl_rule(first.id).await.unwrap(), Some(first.clone()));
    let mut changed = first.clone();
    changed.permissions = Permissions::ReadWrite;
    changed.expires_at = None;
    assert!(store.update_acl_rule(&changed).await.unwrap());
    assert_eq!(store.acl_rule(first.id).await.unwrap(), Some(changed));
    let shared = store
        .collections_shared_with(&[Principal::Identity(bob.id)])
        .await
        .unwrap();
    assert_eq!(
        shared.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![results.id]
    );
    assert!(store
        .collections_shared_with(&[Principal::AllAuthenticatedUsers])
        .await
        .unwrap()
        .is_empty());
    assert!(store.delete_acl_rule(first.id).await.unwrap());
    assert!(!store.delete_acl_rule(first.id).await.unwrap());

    let role = RoleInfo {
        id: RoleId::new(),
        collection_id: results.id,
        principal: Principal::Identity(bob.id),
        role: CollectionRole::AccessManager,
        created_by: ada.id,
        created_at: now,
    };
    store.insert_role(&role).await.unwrap();
    let again = RoleInfo {
        id: RoleId::new(),
        ..role.clone()
    };
    assert!(matches!(
        store.insert_role(&again).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.roles(results.id).await.unwrap(), vec![role.clone()]);
    assert_eq!(store.role(role.id).await.unwrap(), Some(role.clone()));
    assert!(store.delete_role(role.id).await.unwrap());

    let function = format!("function:{}", uuid::Uuid::new_v4());
    store
        .insert_grant(&function, Principal::Public, ada.id, now)
        .await
        .unwrap();
    store
        .insert_grant(&function, Principal::Public, ada.id, now)
        .await
        .unwrap();
    assert_eq!(
        store.grants(&function).await.unwrap(),
        vec![Principal::Public]
    );
    assert!(store
        .delete_grant(&function, Principal::Public)
        .await
        .unwrap());
    assert!(store.grants(&function).await.unwrap().is_empty());

    for action in ["acl.create", "acl.delete"] {
        store
            .insert_audit(&NewAuditEntry {
                time: now,
                actor: ada.id,
                client_id: None,
                subject: format!("collection:{}", results.id),
                action: action.into(),
                detail: serde_json::json!({"path": "/shared/"}),
            })
            .await
            .unwrap();
    }
    let trail = store
        .audit(&format!("collection:{}", results.id), 0, 10)
        .await
        .unwrap();
    assert_eq!(
        trail.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["acl.create", "acl.delete"]
    );
    let rest = store
        .audit(&format!("collection:{}", results.id), trail[0].seq, 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);

    assert_eq!(
        store
            .identities_named("bob-rules@example.org")
            .await
            .unwrap(),
        vec![bob.id]
    );
    assert!(store.identities_named("nobody").await.unwrap().is_empty());
}

async fn search_indexes_roles_and_tasks_round_trip(store: SharedStore) {
    use lattice_protocol::search::{
        IndexRole, IndexRoleName, IndexStatus, RejectedEntry, SearchTaskKind, SearchTaskState,
    };
    use lattice_protocol::{SearchIndexId, SearchTaskId};
    let ada = identity("https://idp.example.org", "ada-search");
    store.insert_identity(&ada).await.unwrap();
    let now = from_millis(to_millis(Utc::now()));
    let mut index = SearchIndexRecord {
        id: SearchIndexId::new(),
        display_name: "beamline".into(),
        description: "datasets".into(),
        owner: ada.id,
        status: IndexStatus::Open,
        created_at: now,
        deleted_at: None,
        purge_after: None,
    };
    let owner = IndexRole {
        id: uuid::Uuid::new_v4(),
        index_id: index.id,
        principal: format!("identity:{}", ada.id),
        role: IndexRoleName::Owner,
        created_at: now,
    };
    store.insert_search_index(&index, &owner).await.unwrap();
    assert_eq!(
        store.search_index(index.id).await.unwrap(),
        Some(index.clone())
    );
    let roles = store.search_roles(index.id).await.unwrap();
    assert_eq!(
        roles
            .iter()
            .map(|r| (r.id, r.principal.clone(), r.role, r.created_at))
            .collect::<Vec<_>>(),
        [(
            owner.id,
            owner.principal.clone(),
            owner.role,
            owner.created_at
        )]
    );
    let writer = IndexRole {
        id: uuid::Uuid::new_v4(),
        principal: "group:0d6f6a3e-5c1b-4b7e-9a62-3f1c2d4e5f60".into(),
        role: IndexRoleName::Writer,
        ..owner.clone()
    };
    store.insert_search_role(&writer).await.unwrap();
    let twice = IndexRole {
        id: uuid::Uuid::new_v4(),
        ..writer.clone()
    };
    assert!(matches!(
        store.insert_search_role(&twice).await,
        Err(StoreError::Conflict(_))
    ));
    let listed = store
        .search_indexes_with_role(std::slice::from_ref(&writer.principal))
        .await
        .unwrap();
    assert_eq!(listed, [index.clone()]);
    assert!(store
        .search_indexes_with_role(&["identity:nobody".into()])
        .await
        .unwrap()
        .is_empty());
    assert!(store.delete_search_role(index.id, writer.id).await.unwrap());
    assert!(!store.delete_search_role(index.id, writer.id).await.unwrap());

    // Tasks get increasing seqs and come back oldest first.
    let task = |kind| SearchTaskRecord {
        id: SearchTaskId::new(),
        seq: 0,
        index_id: index.id,
        kind,
        state: SearchTaskState::Pending,
        submitted_by: ada.id,
        payload: "[]".into(),
        entries_total: 2,
        entries_applied: 0,
        rejected: Vec::new(),
        message: None,
        created_at: now,
        started_at: None,
        completed_at: None,
    };
    let first = store
        .insert_search_task(&task(SearchTaskKind::Ingest))
        .await
        .unwrap();
    let second = store
        .insert_search_task(&task(SearchTaskKind::Delete))
        .await
        .unwrap();
    assert!(second.seq > first.seq);
    assert_eq!(
        store.indexes_with_unfinished_tasks().await.unwrap(),
        [index.id]
    );
    assert_eq!(
        store.next_search_task(index.id).await.unwrap().unwrap().id,
        first.id
    );
    assert!(store
        .start_search_task(first.id, SearchTaskState::Pending, now)
        .await
        .unwrap());
    assert!(
        !store
            .start_search_task(first.id, SearchTaskState::Pending, now)
            .await
            .unwrap(),
        "claimed once"
    );
    let rejected = vec![RejectedEntry {
        position: 1,
        subject: "s".into(),
        entry_id: None,
        reason: "bad".into(),
    }];
    store
        .finish_search_task(
            first.id,
            &SearchTaskOutcome {
                state: SearchTaskState::Failed,
                entries_applied: 1,
                rejected: rejected.clone(),
                message: Some("1 rejected".into()),
                completed_at: now,
            },
        )
        .await
        .unwrap();
    let done = store.search_task(first.id).await.unwrap().unwrap();
    assert_eq!(done.state, SearchTaskState::Failed);
    assert_eq!(done.rejected, rejected);
    assert_eq!(done.entries_applied, 1);
    assert_eq!(done.payload, "", "payload dropped once done");
    assert_eq!(
        store.next_search_task(index.id).await.unwrap().unwrap().id,
        second.id
    );
    let listed = store.search_tasks(index.id, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|t| t.id).collect::<Vec<_>>(),
        [second.id, first.id],
        "newest first"
    );

    // Soft delete, then purge.
    index.status = IndexStatus::Deleted;
    index.deleted_at = Some(now);
    index.purge_after = Some(now + Duration::seconds(1));
    assert!(store.update_search_index(&index).await.unwrap());
    assert!(store.search_indexes_to_purge(now).await.unwrap().is_empty());
    let later = now + Duration::seconds(2);
    assert_eq!(
        store.search_indexes_to_purge(later).await.unwrap(),
        [index.clone()]
    );
    assert!(store.delete_search_index(index.id).await.unwrap());
    assert_eq!(store.search_index(index.id).await.unwrap(), None);
    assert!(store.search_task(second.id).await.unwrap().is_none());
    assert!(store
        .indexes_with_unfinished_tasks()
        .await
        .unwrap()
        .is_empty());
}

mod flow_fixtures {
    use chrono::{DateTime, Utc};
    use lattice_protocol::flows::{ActionState, FlowRoleName, RunStatus};
    use lattice_protocol::{ActionId, FlowId, FlowRunId, IdentityId};
    use serde_json::json;

    use super::super::{ActionRecord, FlowRecord, RunLogRecord, RunRecord};

    pub(super) fn flow(
        owner: IdentityId,
        title: &str,
        at: DateTime<Utc>,
        roles: Vec<(FlowRoleName, String)>,
    ) -> FlowRecord {
        FlowRecord {
            id: FlowId::new(),
            owner,
            title: title.into(),
            subtitle: format!("{title} subtitle"),
            description: format!("{title} description"),
            keywords: vec!["beamline".into(), "nightly".into()],
            definition: json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}}),
            input_schema: json!({"type": "object"}),
            roles,
            created_at: at,
            updated_at: at,
        }
    }

    pub(super) fn run(
        flow: &FlowRecord,
        starter: IdentityId,
        request_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> RunRecord {
        RunRecord {
            id: FlowRunId::new(),
            flow_id: flow.id,
            flow_title: flow.title.clone(),
            starter,
            request_id: request_id.map(str::to_owned),
            label: Some("a run".into()),
            tags: vec!["t1".into()],
            run_managers: Vec::new(),
            run_monitors: Vec::new(),
            status: RunStatus::Active,
            transitions: 0,
            machine: r#"{"state":"A"}"#.into(),
            details: json!({"waiting_on": null}),
            created_at: at,
            updated_at: at,
            completed_at: None,
        }
    }

    pub(super) fn log(seq: u64, at: DateTime<Utc>) -> RunLogRecord {
        RunLogRecord {
            seq,
            at,
            state: "A".into(),
            code: format!("Code{seq}"),
            details: json!({"seq": seq}),
        }
    }

    pub(super) fn action(
        provider: &str,
        creator: IdentityId,
        request_id: &str,
        run_id: Option<FlowRunId>,
        at: DateTime<Utc>,
    ) -> ActionRecord {
        ActionRecord {
            id: ActionId::new(),
            provider: provider.into(),
            request_id: request_id.into(),
            creator,
            run_id,
            status: ActionState::Active,
            label: Some("copy".into()),
            monitor_by: vec![format!("identity:{creator}")],
            manage_by: vec!["group:ops".into()],
            body: json!({"source": "a", "destination": "b"}),
            details: json!({}),
            internal: json!({"task": 7}),
            created_at: at,
            completed_at: None,
            release_after: Some(3600),
        }
    }
}

async fn flows_keep_their_roles_and_are_listed_for_owners_and_role_holders(store: SharedStore) {
    use lattice_protocol::flows::FlowRoleName;
    use lattice_protocol::FlowId;
    let ada = identity("https://idp.example.org", "ada-flows");
    let bob = identity("https://idp.example.org", "bob-flows");
    for who in [&ada, &bob] {
        store.insert_identity(who).await.unwrap();
    }
    let now = from_millis(to_millis(Utc::now()));
    let carol = format!("identity:{}", IdentityId::new());
    let mut first = flow_fixtures::flow(
        ada.id,
        "first",
        now,
        vec![
            (FlowRoleName::Starter, "group:g1".into()),
            (FlowRoleName::Viewer, format!("identity:{}", bob.id)),
            // A repeated pair is kept once.
            (FlowRoleName::Starter, "group:g1".into()),
        ],
    );
    store.insert_flow(&first).await.unwrap();
    first.roles.pop();
    assert_eq!(store.flow(first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(store.flow(FlowId::new()).await.unwrap(), None);
    assert!(matches!(
        store.insert_flow(&first).await,
        Err(StoreError::Conflict(_))
    ));

    // An update rewrites the fields and replaces every role.
    first.title = "first, renamed".into();
    first.keywords = vec!["renamed".into()];
    first.definition = serde_json::json!({"StartAt": "B"});
    first.updated_at = now + Duration::seconds(5);
    first.roles = vec![(FlowRoleName::Administrator, carol.clone())];
    assert!(store.update_flow(&first).await.unwrap());
    assert_eq!(store.flow(first.id).await.unwrap(), Some(first.clone()));
    let gone = flow_fixtures::flow(ada.id, "gone", now, Vec::new());
    assert!(!store.update_flow(&gone).await.unwrap());

    let second = flow_fixtures::flow(
        bob.id,
        "second",
        now + Duration::seconds(1),
        vec![
            (FlowRoleName::Starter, carol.clone()),
            (FlowRoleName::RunMonitor, "group:g2".into()),
        ],
    );
    store.insert_flow(&second).await.unwrap();

    // By owner.
    let ada_p = format!("identity:{}", ada.id);
    assert_eq!(
        store
            .flows_for(ada.id, std::slice::from_ref(&ada_p))
            .await
            .unwrap(),
        vec![first.clone()]
    );
    // By a role (any role), newest first, roles loaded.
    let stranger = IdentityId::new();
    assert_eq!(
        store
            .flows_for(stranger, &[carol.clone(), "group:nobody".into()])
            .await
            .unwrap(),
        vec![second.clone(), first.clone()]
    );
    assert_eq!(
        store
            .flows_for(stranger, &["group:g2".into()])
            .await
            .unwrap(),
        vec![second.clone()]
    );
    // The old roles are gone: bob no longer sees the first flow by role.
    let bob_p = format!("identity:{}", bob.id);
    assert_eq!(
        store
            .flows_for(bob.id, std::slice::from_ref(&bob_p))
            .await
            .unwrap(),
        vec![second.clone()]
    );
    // Invisible to others.
    let stranger_p = format!("identity:{stranger}");
    assert!(store
        .flows_for(stranger, &[stranger_p, "group:g1".into()])
        .await
        .unwrap()
        .is_empty());
    assert!(store.flows_for(stranger, &[]).await.unwrap().is_empty());

    // Deleting a flow keeps its runs.
    let run = flow_fixtures::run(&first, bob.id, Some("r"), now);
    store
        .insert_run(&run, &[], "replica-1", now + Duration::minutes(1))
        .await
        .unwrap();
    assert!(store.delete_flow(first.id).await.unwrap());
    assert!(!store.delete_flow(first.id).await.unwrap());
    assert_eq!(store.flow(first.id).await.unwrap(), None);
    assert_eq!(store.run(run.id).await.unwrap(), Some(run));
    assert!(store
        .flows_for(stranger, std::slice::from_ref(&carol))
        .await
        .unwrap()
        .iter()
        .all(|f| f.id != first.id));
}

async fn runs_are_saved_only_by_the_holder_of_their_lease(store: SharedStore) {
    use lattice_protocol::flows::RunStatus;
    use lattice_protocol::{FlowId, FlowRunId};
    let ada = identity("https://idp.example.org", "ada-runs");
    store.insert_identity(&ada).await.unwrap();
    let now = from_millis(to_millis(Utc::now()));
    let flow = flow_fixtures::flow(ada.id, "runs", now, Vec::new());
    store.insert_flow(&flow).await.unwrap();
    let starter = IdentityId::new();
    let mut run = flow_fixtures::run(&flow, starter, Some("req-1"), now);
    let until = now + Duration::minutes(1);
    store
        .insert_run(
            &run,
            &[flow_fixtures::log(1, now), flow_fixtures::log(2, now)],
            "replica-1",
            until,
        )
        .await
        .unwrap();
    assert_eq!(store.run(run.id).await.unwrap(), Some(run.clone()));
    assert_eq!(store.run(FlowRunId::new()).await.unwrap(), None);

    // One run per (flow, starter, request id); without a request id, any number.
    let again = flow_fixtures::run(&flow, starter, Some("req-1"), now);
    assert!(matches!(
        store.insert_run(&again, &[], "replica-1", until).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.run(again.id).await.unwrap(), None);
    for _ in 0..2 {
        let anonymous = flow_fixtures::run(&flow, starter, None, now);
        store
            .insert_run(&anonymous, &[], "replica-1", until)
            .await
            .unwrap();
    }
    let other_starter = flow_fixtures::run(&flow, IdentityId::new(), Some("req-1"), now);
    store
        .insert_run(&other_starter, &[], "replica-1", until)
        .await
        .unwrap();
    assert_eq!(
        store
            .run_by_request(flow.id, starter, "req-1")
            .await
            .unwrap(),
        Some(run.clone())
    );
    assert_eq!(
        store
            .run_by_request(flow.id, starter, "req-2")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .run_by_request(FlowId::new(), starter, "req-1")
            .await
            .unwrap(),
        None
    );

    // Another replica's save changes nothing.
    let before = run.clone();
    run.status = RunStatus::Succeeded;
    run.transitions = 3;
    run.machine = r#"{"state":"done"}"#.into();
    run.details = serde_json::json!({"output": {"x": 1}});
    run.updated_at = now + Duration::seconds(2);
    run.completed_at = Some(now + Duration::seconds(2));
    assert!(!store
        .save_run(
            &run,
            &[flow_fixtures::log(3, now)],
            "replica-2",
            now + Duration::minutes(5)
        )
        .await
        .unwrap());
    assert_eq!(store.run(run.id).await.unwrap(), Some(before));
    assert_eq!(store.run_log(run.id, None, 100).await.unwrap().len(), 2);

    // The holder's save lands with its log entries.
    assert!(store
        .save_run(
            &run,
            &[flow_fixtures::log(3, now), flow_fixtures::log(4, now)],
            "replica-1",
            now + Duration::minutes(5)
        )
        .await
        .unwrap());
    assert_eq!(store.run(run.id).await.unwrap(), Some(run.clone()));
    let seqs = |log: Vec<RunLogRecord>| log.iter().map(|e| e.seq).collect::<Vec<_>>();
    let log = store.run_log(run.id, None, 100).await.unwrap();
    assert_eq!(log[2], flow_fixtures::log(3, now));
    assert_eq!(seqs(log), [1, 2, 3, 4]);
    assert_eq!(seqs(store.run_log(run.id, None, 2).await.unwrap()), [1, 2]);
    assert_eq!(
        seqs(store.run_log(run.id, Some(2), 100).await.unwrap()),
        [3, 4]
    );
    assert_eq!(
        seqs(store.run_log(run.id, Some(1), 2).await.unwrap()),
        [2, 3]
    );
    assert!(store
        .run_log(run.id, Some(4), 100)
        .await
        .unwrap()
        .is_empty());
    // A repeated log entry fails the whole save.
    assert!(store
        .save_run(&run, &[flow_fixtures::log(4, now)], "replica-1", until)
        .await
        .is_err());
    assert_eq!(store.run_log(run.id, None, 100).await.unwrap().len(), 4);

    // Metadata.
    run.label = Some("relabelled".into());
    run.tags = vec!["a".into(), "b".into()];
    run.run_managers = vec!["group:managers".into()];
    run.run_monitors = vec!["identity:someone".into()];
    assert!(store.update_run_meta(&run).await.unwrap());
    assert_eq!(store.run(run.id).await.unwrap(), Some(run.clone()));
    let missing = flow_fixtures::run(&flow, starter, None, now);
    assert!(!store.update_run_meta(&missing).await.unwrap());

    assert!(store.delete_run(run.id).await.unwrap());
    assert!(!store.delete_run(run.id).await.unwrap());
    assert_eq!(store.run(run.id).await.unwrap(), None);
    assert!(store.run_log(run.id, None, 100).await.unwrap().is_empty());
    // The request id is free again.
    store
        .insert_run(&again, &[], "replica-1", until)
        .await
        .unwrap();
}

async fn run_leases_are_claimed_by_one_replica_at_a_time(store: SharedStore) {
    use lattice_protocol::flows::RunStatus;
    use std::collections::HashSet;
    let ada = identity("https://idp.example.org", "ada-leases");
    store.insert_identity(&ada).await.unwrap();
    let now = from_millis(to_millis(Utc::now()));
    let flow = flow_fixtures::flow(ada.id, "leases", now, Vec::new());
    store.insert_flow(&flow).await.unwrap();
    let expired = now - Duration::minutes(1);
    let later = now + Duration::hours(1);
    let insert = |status: RunStatus, age: i64, owner: &'static str, until| {
        let mut run = flow_fixtures::run(&flow, ada.id, None, now - Duration::seconds(age));
        run.status = status;
        let store = store.clone();
        async move {
            store.insert_run(&run, &[], owner, until).await.unwrap();
            run.id
        }
    };
    let unleased = insert(RunStatus::Active, 50, "old", later).await;
    store.release_run_lease(unleased, "old").await.unwrap();
    let lapsed = insert(RunStatus::Inactive, 40, "old", expired).await;
    let _held = insert(RunStatus::Active, 30, "other", later).await;
    let _done = insert(RunStatus::Succeeded, 20, "old", expired).await;
    let _failed = insert(RunStatus::Failed, 10, "old", expired).await;

    // Oldest first, up to the limit.
    assert_eq!(
        store
            .claim_runs("a", now, now + Duration::minutes(1), 1)
            .await
            .unwrap(),
        [unleased]
    );
    assert_eq!(
        store
            .claim_runs("a", now, now + Duration::minutes(1), 10)
            .await
            .unwrap(),
        [lapsed]
    );
    assert!(store
        .claim_runs("b", now, now + Duration::minutes(1), 10)
        .await
        .unwrap()
        .is_empty());

    // Renewal extends only the owner's leases; the owner may save.
    assert_eq!(store.renew_run_leases("a", later).await.unwrap(), 2);
    assert_eq!(store.renew_run_leases("nobody", later).await.unwrap(), 0);
    let mut run = store.run(lapsed).await.unwrap().unwrap();
    run.transitions = 1;
    assert!(store.save_run(&run, &[], "a", later).await.unwrap());
    assert!(!store.save_run(&run, &[], "old", later).await.unwrap());
    // A lease renewed past `now + 30 min` is not taken then.
    assert!(store
        .claim_runs("b", now + Duration::minutes(30), later, 10)
        .await
        .unwrap()
        .is_empty());

    // Only the owner releases.
    store.release_run_lease(unleased, "b").await.unwrap();
    assert!(store
        .claim_runs("b", now, later, 10)
        .await
        .unwrap()
        .is_empty());
    store.release_run_lease(unleased, "a").await.unwrap();
    assert_eq!(
        store.claim_runs("b", now, later, 10).await.unwrap(),
        [unleased]
    );
    assert!(!store.save_run(&run, &[], "b", later).await.unwrap());

    // Two replicas claiming at once never get the same run.
    let mut free = HashSet::new();
    for age in 0..12 {
        let id = insert(RunStatus::Active, 100 + age, "gone", expired).await;
        free.insert(id);
    }
    let (x, y) = tokio::join!(
        store.claim_runs("x", now, later, 8),
        store.claim_runs("y", now, later, 8)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let xs: HashSet<_> = x.iter().copied().collect();
    let ys: HashSet<_> = y.iter().copied().collect();
    assert_eq!(xs.len(), x.len());
    assert_eq!(ys.len(), y.len());
    assert!(xs.is_disjoint(&ys), "{x:?} and {y:?} overlap");
    let taken: HashSet<_> = xs.union(&ys).copied().collect();
    assert!(taken.is_subset(&free));
    let rest = store.claim_runs("z", now, later, 100).await.unwrap();
    assert_eq!(taken.len() + rest.len(), free.len());
    assert!(rest
        .iter()
        .all(|id| free.contains(id) && !taken.contains(id)));
}

async fn runs_are_listed_for_each_kind_of_viewer(store: SharedStore) {
    use lattice_protocol::flows::{FlowRoleName, RunStatus};
    use lattice_protocol::FlowId;
    let ada = identity("https://idp.example.org", "ada-listing");
    let bob = identity("https://idp.example.org", "bob-listing");
    for who in [&ada, &bob] {
        store.insert_identity(who).await.unwrap();
    }
    let p = |id: IdentityId| format!("identity:{id}");
    let (carol, dave, erin, vic, walt, stranger) = (
        IdentityId::new(),
        IdentityId::new(),
        IdentityId::new(),
        IdentityId::new(),
        IdentityId::new(),
        IdentityId::new(),
    );
    let now = from_millis(to_millis(Utc::now()));
    // ada's flow: erin monitors its runs, vic may only view the flow.
    let f1 = flow_fixtures::flow(
        ada.id,
        "f1",
        now,
        vec![
            (FlowRoleName::RunMonitor, p(erin)),
            (FlowRoleName::Viewer, p(vic)),
            (FlowRoleName::Starter, p(vic)),
        ],
    );
    // bob's flow: the group admins administers it.
    let f2 = flow_fixtures::flow(
        bob.id,
        "f2",
        now,
        vec![(FlowRoleName::Administrator, "group:admins".into())],
    );
    store.insert_flow(&f1).await.unwrap();
    store.insert_flow(&f2).await.unwrap();
    let t0 = now;
    let insert = |run: RunRecord| {
        let store = store.clone();
        async move {
            store
                .insert_run(&run, &[], "replica", now + Duration::minutes(1))
                .await
                .unwrap();
            let mut listed = run;
            listed.machine = String::new();
            listed
        }
    };
    // run1 and run4 share their creation time (paging breaks the tie by id).
    let mut run1 = flow_fixtures::run(&f1, bob.id, None, t0);
    run1.run_managers = vec![p(carol)];
    let run1 = insert(run1).await;
    let run4 = insert(flow_fixtures::run(&f1, bob.id, Some("r4"), t0)).await;
    let mut run2 = flow_fixtures::run(&f2, bob.id, None, t0 + Duration::seconds(1));
    run2.label = Some("nightly".into());
    let run2 = insert(run2).await;
    let mut run3 = flow_fixtures::run(&f1, ada.id, None, t0 + Duration::seconds(2));
    run3.status = RunStatus::Succeeded;
    run3.run_monitors = vec!["group:watchers".into()];
    let run3 = insert(run3).await;
    let (newer, older) = if run1.id > run4.id {
        (run1.clone(), run4.clone())
    } else {
        (run4.clone(), run1.clone())
    };

    let all = RunFilter {
        limit: 100,
        ..RunFilter::default()
    };
    let ids = |runs: &[RunRecord]| runs.iter().map(|r| r.id).collect::<Vec<_>>();
    let list = |viewer: IdentityId, principals: Vec<String>, filter: RunFilter| {
        let store = store.clone();
        async move { store.runs_for(viewer, &principals, &filter).await.unwrap() }
    };

    // Started by the viewer (machines left empty).
    assert_eq!(
        list(bob.id, vec![p(bob.id)], all.clone()).await,
        vec![run2.clone(), newer.clone(), older.clone()]
    );
    // Of a flow the viewer owns.
    assert_eq!(
        ids(&list(ada.id, vec![p(ada.id)], all.clone()).await),
        ids(&[run3.clone(), newer.clone(), older.clone()])
    );
    // Named among a run's managers or monitors (directly or by group).
    assert_eq!(
        ids(&list(carol, vec![p(carol)], all.clone()).await),
        [run1.id]
    );
    assert_eq!(
        ids(&list(walt, vec![p(walt), "group:watchers".into()], all.clone()).await),
        [run3.id]
    );
    // A role on the flow: administrator (by group) or run monitor.
    assert_eq!(
        ids(&list(dave, vec![p(dave), "group:admins".into()], all.clone()).await),
        [run2.id]
    );
    assert_eq!(
        ids(&list(erin, vec![p(erin)], all.clone()).await),
        ids(&[run3.clone(), newer.clone(), older.clone()])
    );
    // Viewer and starter roles do not show runs; strangers see nothing.
    assert!(list(vic, vec![p(vic)], all.clone()).await.is_empty());
    assert!(list(stranger, vec![p(stranger)], all.clone())
        .await
        .is_empty());
    assert!(list(stranger, Vec::new(), all.clone()).await.is_empty());

    // Filters.
    let by_flow = RunFilter {
        flow_id: Some(f1.id),
        ..all.clone()
    };
    assert_eq!(
        ids(&list(bob.id, vec![p(bob.id)], by_flow.clone()).await),
        ids(&[newer.clone(), older.clone()])
    );
    let no_flow = RunFilter {
        flow_id: Some(FlowId::new()),
        ..all.clone()
    };
    assert!(list(bob.id, vec![p(bob.id)], no_flow).await.is_empty());
    let succeeded = RunFilter {
        statuses: vec![RunStatus::Succeeded, RunStatus::Failed],
        ..by_flow.clone()
    };
    assert_eq!(
        ids(&list(ada.id, vec![p(ada.id)], succeeded).await),
        [run3.id]
    );
    let active = RunFilter {
        statuses: vec![RunStatus::Active],
        ..all.clone()
    };
    assert_eq!(
        ids(&list(ada.id, vec![p(ada.id)], active).await),
        ids(&[newer.clone(), older.clone()])
    );
    let nightly = RunFilter {
        label: Some("nightly".into()),
        ..all.clone()
    };
    assert_eq!(
        ids(&list(bob.id, vec![p(bob.id)], nightly.clone()).await),
        [run2.id]
    );
    assert!(list(ada.id, vec![p(ada.id)], nightly).await.is_empty());

    // Keyset paging, one at a time, newest first.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = list(
            erin,
            vec![p(erin)],
            RunFilter {
                before,
                limit: 1,
                ..RunFilter::default()
            },
        )
        .await;
        let Some(last) = page.last() else { break };
        assert_eq!(page.len(), 1);
        before = Some((last.created_at, last.id));
        seen.push(last.id);
    }
    assert_eq!(seen, ids(&[run3.clone(), newer.clone(), older.clone()]));
    let two = RunFilter {
        limit: 2,
        ..all.clone()
    };
    assert_eq!(
        ids(&list(bob.id, vec![p(bob.id)], two).await),
        ids(&[run2.clone(), newer.clone()])
    );

    // Run managers changed later change who sees the run.
    let mut moved = store.run(run1.id).await.unwrap().unwrap();
    moved.run_managers = vec![p(dave)];
    assert!(store.update_run_meta(&moved).await.unwrap());
    assert!(list(carol, vec![p(carol)], all.clone()).await.is_empty());
    assert_eq!(
        ids(&list(dave, vec![p(dave)], all.clone()).await),
        [run1.id]
    );
    // The starter still sees it (its principal row is kept).
    assert_eq!(
        ids(&list(IdentityId::new(), vec![p(bob.id)], by_flow).await),
        ids(&[newer, older])
    );
}

async fn actions_are_keyed_by_provider_creator_and_request(store: SharedStore) {
    use lattice_protocol::flows::ActionState;
    use lattice_protocol::{ActionId, FlowRunId};
    let now = from_millis(to_millis(Utc::now()));
    let creator = IdentityId::new();
    let run = FlowRunId::new();
    let mut first = flow_fixtures::action("transfer", creator, "req-1", Some(run), now);
    store.insert_action(&first).await.unwrap();
    assert_eq!(store.action(first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(store.action(ActionId::new()).await.unwrap(), None);
    let twice = flow_fixtures::action("transfer", creator, "req-1", None, now);
    assert!(matches!(
        store.insert_action(&twice).await,
        Err(StoreError::Conflict(_))
    ));
    let other_provider = flow_fixtures::action(
        "compute",
        creator,
        "req-1",
        Some(run),
        now + Duration::seconds(1),
    );
    store.insert_action(&other_provider).await.unwrap();
    let mut unattached = flow_fixtures::action("approval", IdentityId::new(), "req-1", None, now);
    unattached.label = None;
    unattached.release_after = None;
    store.insert_action(&unattached).await.unwrap();
    assert_eq!(
        store.action(unattached.id).await.unwrap(),
        Some(unattached.clone())
    );

    assert_eq!(
        store
            .action_by_request("transfer", creator, "req-1")
            .await
            .unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store
            .action_by_request("transfer", creator, "req-2")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .action_by_request("transfer", IdentityId::new(), "req-1")
            .await
            .unwrap(),
        None
    );

    first.status = ActionState::Succeeded;
    first.details = serde_json::json!({"files": 3});
    first.internal = serde_json::json!({"task": 7, "done": true});
    first.completed_at = Some(now + Duration::seconds(9));
    assert!(store.update_action(&first).await.unwrap());
    assert_eq!(store.action(first.id).await.unwrap(), Some(first.clone()));
    assert!(!store
        .update_action(&flow_fixtures::action("transfer", creator, "x", None, now))
        .await
        .unwrap());

    assert_eq!(
        store.actions_of_run(run).await.unwrap(),
        vec![first.clone(), other_provider.clone()]
    );
    assert!(store
        .actions_of_run(FlowRunId::new())
        .await
        .unwrap()
        .is_empty());
    assert!(store.delete_action(first.id).await.unwrap());
    assert!(!store.delete_action(first.id).await.unwrap());
    assert_eq!(
        store.actions_of_run(run).await.unwrap(),
        vec![other_provider]
    );
    // The request id is free again.
    store.insert_action(&twice).await.unwrap();
}

async fn webhooks_deliveries_and_preferences_round_trip(store: SharedStore) {
    use lattice_protocol::notify::{DeliveryStatus, EventKind};
    use lattice_protocol::{DeliveryId, EventId, WebhookId};
    let now = from_millis(to_millis(Utc::now()));
    let ada = IdentityId::new();
    assert_eq!(store.email_preferences(ada).await.unwrap(), None);
    store
        .set_email_preferences(ada, &[EventKind::TransferFailed], now)
        .await
        .unwrap();
    store
        .set_email_preferences(
            ada,
            &[EventKind::GroupInvited, EventKind::TimerInactive],
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        store.email_preferences(ada).await.unwrap(),
        Some(vec![EventKind::GroupInvited, EventKind::TimerInactive]),
        "the second write replaces the first"
    );

    let hook = WebhookRecord {
        id: WebhookId::new(),
        owner: ada,
        url: "https://hooks.example.org/x".into(),
        events: vec![EventKind::TransferFailed, EventKind::FlowRunFailed],
        secret: "whsec_1".into(),
        description: Some("lab".into()),
        created_at: now,
    };
    store.insert_webhook(&hook).await.unwrap();
    assert_eq!(store.webhook(hook.id).await.unwrap(), Some(hook.clone()));
    assert_eq!(store.webhooks_of(ada).await.unwrap(), vec![hook.clone()]);
    assert!(store
        .webhooks_of(IdentityId::new())
        .await
        .unwrap()
        .is_empty());

    let delivery = |due: chrono::DateTime<Utc>| DeliveryRecord {
        id: DeliveryId::new(),
        webhook_id: hook.id,
        event_id: EventId::new(),
        event: EventKind::TransferFailed,
        body: "{\"kind\":\"transfer.failed\"}".into(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: Some(due),
        created_at: due,
        completed_at: None,
    };
    let due = delivery(now);
    let later = delivery(now + Duration::hours(1));
    store
        .insert_deliveries(&[due.clone(), later.clone()])
        .await
        .unwrap();
    let lease = now + Duration::seconds(40);
    let claimed = store.claim_deliveries(now, lease, 10).await.unwrap();
    assert_eq!(claimed, vec![due.clone()], "only the due one");
    assert!(
        store
            .claim_deliveries(now, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "a leased delivery is not claimed twice"
    );
    let retry_at = now + Duration::seconds(5);
    store
        .record_attempt(
            &AttemptRecord {
                delivery_id: due.id,
                attempt: 1,
                at: now,
                status_code: Some(500),
                error: None,
                duration_ms: 12,
            },
            DeliveryOutcome {
                status: DeliveryStatus::Pending,
                next_attempt_at: Some(retry_at),
            },
        )
        .await
        .unwrap();
    assert!(store
        .claim_deliveries(now, lease, 10)
        .await
        .unwrap()
        .is_empty());
    let again = store.claim_deliveries(retry_at, lease, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    store
        .record_attempt(
            &AttemptRecord {
                delivery_id: due.id,
                attempt: 2,
                at: retry_at,
                status_code: None,
                error: Some("no answer within 10 s".into()),
                duration_ms: 10_000,
            },
            DeliveryOutcome {
                status: DeliveryStatus::Succeeded,
                next_attempt_at: None,
            },
        )
        .await
        .unwrap();
    let log = store.deliveries_of(hook.id, 10).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].0.id, later.id, "newest first");
    let (done, attempts) = &log[1];
    assert_eq!(done.status, DeliveryStatus::Succeeded);
    assert_eq!(done.completed_at, Some(retry_at));
    assert_eq!(
        attempts.iter().map(|a| a.status_code).collect::<Vec<_>>(),
        vec![Some(500), None]
    );
    assert_eq!(attempts[1].error.as_deref(), Some("no answer within 10 s"));

    assert!(store.delete_webhook(hook.id).await.unwrap());
    assert!(!store.delete_webhook(hook.id).await.unwrap());
    assert!(store.deliveries_of(hook.id, 10).await.unwrap().is_empty());
    assert!(store
        .claim_deliveries(now + Duration::days(1), lease, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn timer_writes_are_compare_and_set_and_runs_final_once(store: SharedStore) {
    use lattice_protocol::timers::{Schedule, TimerKind, TimerRunStatus, TimerStatus};
    use lattice_protocol::TimerId;
    let ada = identity("https://idp.example.org", "ada-timers");
    store.insert_identity(&ada).await.unwrap();
    let now = from_millis(to_millis(Utc::now()));
    let timer = TimerRecord {
        id: TimerId::new(),
        owner: ada.id,
        name: "nightly".into(),
        kind: TimerKind::Flow,
        schedule: Schedule::Recurring {
            interval_seconds: 60,
            start: Some(now),
            end: None,
        },
        flow_id: Some(lattice_protocol::FlowId::new()),
        body: serde_json::json!({"body": {"n": 1}}),
        status: TimerStatus::Active,
        inactive_reason: None,
        next_due: Some(now),
        ticks: 0,
        runs: 0,
        errors: 0,
        skips: 0,
        last_error: None,
        last_ran_at: None,
        version: 0,
        created_at: now,
        updated_at: now,
    };
    store.insert_timer(&timer).await.unwrap();
    assert_eq!(store.timer(timer.id).await.unwrap(), Some(timer.clone()));
    assert_eq!(store.earliest_due().await.unwrap(), Some(now));
    assert_eq!(
        store.due_timers(now, 10).await.unwrap(),
        vec![timer.clone()]
    );
    assert!(store
        .due_timers(now - Duration::seconds(1), 10)
        .await
        .unwrap()
        .is_empty());

    // Two replicas claim the same tick from version 0: one wins.
    let mut claimed = timer.clone();
    claimed.ticks = 1;
    claimed.runs = 1;
    claimed.next_due = Some(now + Duration::seconds(60));
    let run = TimerRunRecord {
        timer_id: timer.id,
        seq: 1,
        due_at: now,
        ran_at: None,
        status: TimerRunStatus::Pending,
        resource_id: None,
        details: serde_json::json!({}),
        error: None,
        attempts: 0,
        next_check_at: Some(now),
        completed_at: None,
    };
    assert!(store.save_timer(&claimed, 0, Some(&run)).await.unwrap());
    assert!(!store.save_timer(&claimed, 0, Some(&run)).await.unwrap());
    let stored = store.timer(timer.id).await.unwrap().unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(stored.ticks, 1);
    assert_eq!(
        store.timer_run(timer.id, 1).await.unwrap(),
        Some(run.clone())
    );
    assert_eq!(
        store.open_runs_of_timer(timer.id).await.unwrap(),
        vec![run.clone()]
    );
    assert_eq!(
        store.open_timer_runs(now, 10).await.unwrap(),
        vec![run.clone()]
    );
    assert_eq!(store.earliest_check().await.unwrap(), Some(now));

    // A run ends once: a later update of a final run changes nothing.
    let mut done = run.clone();
    done.status = TimerRunStatus::Succeeded;
    done.ran_at = Some(now);
    done.resource_id = Some("run:x".into());
    done.completed_at = Some(now);
    done.next_check_at = None;
    assert!(store.update_timer_run(&done).await.unwrap());
    let mut late = done.clone();
    late.status = TimerRunStatus::Failed;
    assert!(!store.update_timer_run(&late).await.unwrap());
    assert_eq!(
        store.timer_run(timer.id, 1).await.unwrap(),
        Some(done.clone())
    );
    assert!(store.open_runs_of_timer(timer.id).await.unwrap().is_empty());
    assert_eq!(store.earliest_check().await.unwrap(), None);

    // Listed for its owner only; deleted ones only when asked.
    let mut deleted = stored.clone();
    deleted.status = TimerStatus::Deleted;
    deleted.next_due = None;
    assert!(store.save_timer(&deleted, 1, None).await.unwrap());
    assert!(store.timers_of(&[ada.id], false).await.unwrap().is_empty());
    assert_eq!(store.timers_of(&[ada.id], true).await.unwrap().len(), 1);
    assert!(store
        .timers_of(&[IdentityId::new()], true)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .due_timers(now + Duration::days(1), 10)
        .await
        .unwrap()
        .is_empty());
    let page = store.timer_runs(timer.id, None, 10).await.unwrap();
    assert_eq!(page, vec![done]);
    assert!(store
        .timer_runs(timer.id, Some(1), 10)
        .await
        .unwrap()
        .is_empty());
}

store_suite!(
    identities_are_keyed_by_provider_and_subject,
    linked_identities_share_a_primary,
    refresh_tokens_can_be_used_once,
    clients_are_listed_by_owner,
    deleting_or_rekeying_a_client_revokes_its_tokens,
    login_callbacks_and_redemptions_happen_once,
    endpoint_blocks_and_provider_error_round_trip,
    collections_are_announced_withdrawn_and_owner_scoped,
    transfers_keep_submission_ids_events_and_final_states,
    groups_memberships_and_effective_groups_through_subgroups,
    rules_roles_grants_and_audit_round_trip,
    search_indexes_roles_and_tasks_round_trip,
    flows_keep_their_roles_and_are_listed_for_owners_and_role_holders,
    runs_are_saved_only_by_the_holder_of_their_lease,
    run_leases_are_claimed_by_one_replica_at_a_time,
    runs_are_listed_for_each_kind_of_viewer,
    actions_are_keyed_by_provider_creator_and_request,
    webhooks_deliveries_and_preferences_round_trip,
    timer_writes_are_compare_and_set_and_runs_final_once,
);
