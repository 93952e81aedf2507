//! Access to collections: the one check every file operation and every
//! transfer item goes through ([`check`]), and the management of what it
//! reads: access rules, roles and the collection's audit trail.
//!
//! The model: a collection's owner may do everything. Access rules grant
//! `r` or `rw` under a path to a principal, optionally until an expiry;
//! they only add access. Roles manage (rules, roles, activity) and grant
//! no file access by themselves, as in the anchor.

use chrono::{DateTime, Utc};
use lattice_protocol::sharing::{
    AclRuleCreate, AclRuleInfo, AclRuleUpdate, AuditEntry, CollectionRole, Permissions, RoleCreate,
    RoleInfo, ShareMode, SharingPolicy,
};
use lattice_protocol::transfer::{TaskKind, TransferItem};
use lattice_protocol::{AclRuleId, RoleId};
use serde_json::json;

use super::paths::{request_components, RulePath};
use super::{
    audit, check_principal_exists, Actor, SharingError, SharingResult, Viewer,
    MAX_RULES_PER_COLLECTION,
};
use crate::store::{CollectionRecord, SharedStore, StoreError};

/// What a role lets its holder do on a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Grant and revoke roles.
    ManageRoles,
    /// Create, change and delete access rules; see the audit trail.
    ManageRules,
    /// Pause and cancel transfers that touch the collection.
    ManageActivity,
    /// See transfers that touch the collection.
    SeeActivity,
}

impl Capability {
    fn of(self, role: CollectionRole) -> bool {
        use CollectionRole::*;
        match self {
            Capability::ManageRoles => role == Administrator,
            Capability::ManageRules => matches!(role, Administrator | AccessManager),
            Capability::ManageActivity => matches!(role, Administrator | ActivityManager),
            Capability::SeeActivity => {
                matches!(role, Administrator | ActivityManager | ActivityMonitor)
            }
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Capability::ManageRoles => "manage roles (administrator)",
            Capability::ManageRules => "manage access rules (administrator or access_manager)",
            Capability::ManageActivity => {
                "manage its transfers (administrator or activity_manager)"
            }
            Capability::SeeActivity => {
                "see its transfers (administrator, activity_manager or activity_monitor)"
            }
        }
    }
}

fn subject(collection: &CollectionRecord) -> String {
    format!("collection:{}", collection.id)
}

fn need_word(need: Permissions) -> &'static str {
    match need {
        Permissions::Read => "read",
        Permissions::ReadWrite => "write",
    }
}

/// Whether one of `rules` lets `viewer` do `need` at `path` (components)
/// at time `now`. Pure.
pub(crate) fn rules_allow(
    viewer: &Viewer,
    rules: &[AclRuleInfo],
    path: &[&str],
    need: Permissions,
    now: DateTime<Utc>,
) -> bool {
    rules.iter().any(|rule| {
        rule.expires_at.is_none_or(|t| t > now)
            && rule.permissions.covers(need)
            && viewer.matches(&rule.principal)
            // Stored rule paths were validated on the way in; a row that
            // no longer parses grants nothing.
            && RulePath::parse(&rule.path).is_ok_and(|p| p.covers(path))
    })
}

/// What a host collection's sharing policy allows at `path` (components):
/// the longest matching policy path wins; no match is `none`. Pure.
pub(crate) fn share_mode(policy: &SharingPolicy, path: &[&str]) -> ShareMode {
    if !policy.guest_collections {
        return ShareMode::None;
    }
    policy
        .paths
        .iter()
        .filter_map(|p| {
            let rule = RulePath::parse(&p.path).ok()?;
            rule.covers(path).then(|| (rule.canonical().len(), p.mode))
        })
        .max_by_key(|(len, _)| *len)
        .map_or(ShareMode::None, |(_, mode)| mode)
}

fn mode_allows(mode: ShareMode, need: Permissions) -> bool {
    matches!(
        (mode, need),
        (ShareMode::ReadWrite, _) | (ShareMode::Read, Permissions::Read)
    )
}

/// The one file-access check: may `viewer` do `need` at `path` of
/// `collection` now? The owner may do everything; anyone else needs a
/// live access rule. Without a token only `public` rules apply, and the
/// refusal says to log in. A guest collection is used with its creator's
/// access on the host collection, within the host's sharing policy: when
/// either no longer allows the path, the guest collection stops working.
pub async fn check(
    store: &SharedStore,
    viewer: &Viewer,
    collection: &CollectionRecord,
    path: &str,
    need: Permissions,
) -> SharingResult<()> {
    let components = request_components(path).map_err(SharingError::Invalid)?;
    check_direct(store, viewer, collection, &components, need).await?;
    let Some(guest) = &collection.guest_of else {
        return Ok(());
    };
    let unavailable = || {
        SharingError::Conflict(format!(
            "guest collection `{}`: its host collection is no longer available",
            collection.name
        ))
    };
    let host = store
        .collection(guest.host)
        .await?
        .filter(|h| h.withdrawn_at.is_none())
        .ok_or_else(unavailable)?;
    let mut host_path = request_components(&guest.path).map_err(SharingError::Invalid)?;
    host_path.extend(components.iter().copied());
    let policy = host.sharing_policy.clone().unwrap_or_default();
    if !mode_allows(share_mode(&policy, &host_path), need) {
        return Err(SharingError::Denied(format!(
            "guest collection `{}`: host collection `{}` does not allow sharing /{} for {}",
            collection.name,
            host.name,
            host_path.join("/"),
            need_word(need)
        )));
    }
    let creator = Viewer::of(store, collection.owner_id).await?;
    check_direct(store, &creator, &host, &host_path, need)
        .await
        .map_err(|e| match e {
            SharingError::Denied(_) | SharingError::Unauthenticated(_) => {
                SharingError::Denied(format!(
                    "guest collection `{}`: its creator no longer has {} access to /{} of `{}`, so it cannot be used there",
                    collection.name,
                    need_word(need),
                    host_path.join("/"),
                    host.name
                ))
            }
            other => other,
        })
}

/// Whether `identity` owns `collection` outright (an agent-hosted
/// collection, not a guest one, whose use also depends on its host): then
/// [`check`] always allows it, and callers on a hot path may skip it.
pub fn owns_outright(
    identity: lattice_protocol::IdentityId,
    collection: &CollectionRecord,
) -> bool {
    collection.owner_id == identity && collection.guest_of.is_none()
}

/// [`check`] on one collection alone: owner, or a live rule.
async fn check_direct(
    store: &SharedStore,
    viewer: &Viewer,
    collection: &CollectionRecord,
    components: &[&str],
    need: Permissions,
) -> SharingResult<()> {
    if viewer.is(collection.owner_id) {
        return Ok(());
    }
    let rules = store.acl_rules(collection.id).await?;
    if rules_allow(viewer, &rules, components, need, Utc::now()) {
        return Ok(());
    }
    let shown = format!("{}:/{}", collection.name, components.join("/"));
    if !viewer.is_authenticated() {
        return Err(SharingError::Unauthenticated(format!(
            "{shown} is not public: send a token (`lattice login`) to use your own access"
        )));
    }
    Err(SharingError::Denied(format!(
        "you have no {} access to {shown}",
        need_word(need)
    )))
}

/// The access a transfer item needs: read at its source and write at its
/// destination; a delete task's item needs write at its path. Checked at
/// submission and again before every attempt, so a revoked rule stops a
/// running task at its next item.
pub async fn check_item(
    store: &SharedStore,
    viewer: &Viewer,
    kind: &TaskKind,
    (source, destination): (&CollectionRecord, &CollectionRecord),
    item: &TransferItem,
) -> SharingResult<()> {
    match kind {
        TaskKind::Transfer => {
            check(store, viewer, source, &item.source_path, Permissions::Read).await?;
            check(
                store,
                viewer,
                destination,
                &item.destination_path,
                Permissions::ReadWrite,
            )
            .await
        }
        TaskKind::Delete { .. } => {
            check(
                store,
                viewer,
                source,
                &item.source_path,
                Permissions::ReadWrite,
            )
            .await
        }
    }
}

/// [`check_item`] for every item of a submission; the first refusal wins.
pub async fn check_items(
    store: &SharedStore,
    viewer: &Viewer,
    kind: &TaskKind,
    collections: (&CollectionRecord, &CollectionRecord),
    items: &[TransferItem],
) -> SharingResult<()> {
    for item in items {
        check_item(store, viewer, kind, collections, item).await?;
    }
    Ok(())
}

/// Loads a collection the viewer may know of, by id or by name (the
/// viewer's own names first, then the names of collections shared with
/// it, when exactly one matches): not found if unknown or withdrawn;
/// refused if it is someone else's and not shared with the viewer (401
/// without a token, 403 with one).
pub async fn usable_collection(
    store: &SharedStore,
    viewer: &Viewer,
    given: &str,
) -> SharingResult<CollectionRecord> {
    let record =
        match given.parse::<lattice_protocol::CollectionId>() {
            Ok(id) => store.collection(id).await?,
            Err(_) => match viewer.identity {
                Some(me) => match store.collection_by_name(me, given).await? {
                    Some(own) if own.withdrawn_at.is_none() => Some(own),
                    _ => {
                        let shared: Vec<_> = store
                            .collections_shared_with(&viewer.principals())
                            .await?
                            .into_iter()
                            .filter(|c| c.name == given)
                            .collect();
                        if shared.len() > 1 {
                            return Err(SharingError::Invalid(format!(
                            "{} collections named `{given}` are shared with you; use an id ({})",
                            shared.len(),
                            shared.iter().map(|c| c.id.to_string()).collect::<Vec<_>>().join(", ")
                        )));
                        }
                        shared.into_iter().next()
                    }
                },
                None => None,
            },
        };
    let record = record.filter(|c| c.withdrawn_at.is_none()).ok_or_else(|| {
        SharingError::NotFound(format!(
            "collection `{given}` does not exist (list yours with `lattice collection list`)"
        ))
    })?;
    if !can_see(store, viewer, &record).await? {
        if !viewer.is_authenticated() {
            return Err(SharingError::Unauthenticated(format!(
                "collection `{given}` is not shared publicly: send a token (`lattice login`)"
            )));
        }
        return Err(SharingError::Denied(format!(
            "collection `{given}` belongs to another identity and is not shared with you"
        )));
    }
    Ok(record)
}

/// Whether `viewer` may know of `collection` at all: its owner, or the
/// holder of a live rule (on any path) or of a role on it.
pub async fn can_see(
    store: &SharedStore,
    viewer: &Viewer,
    collection: &CollectionRecord,
) -> SharingResult<bool> {
    if viewer.is(collection.owner_id) {
        return Ok(true);
    }
    let now = Utc::now();
    let rules = store.acl_rules(collection.id).await?;
    if rules
        .iter()
        .any(|r| r.expires_at.is_none_or(|t| t > now) && viewer.matches(&r.principal))
    {
        return Ok(true);
    }
    let roles = store.roles(collection.id).await?;
    Ok(roles.iter().any(|r| viewer.matches(&r.principal)))
}

/// Whether `viewer` holds `capability` on `collection` (the owner holds
/// every one).
pub async fn has(
    store: &SharedStore,
    viewer: &Viewer,
    collection: &CollectionRecord,
    capability: Capability,
) -> SharingResult<bool> {
    if viewer.is(collection.owner_id) {
        return Ok(true);
    }
    let roles = store.roles(collection.id).await?;
    Ok(roles
        .iter()
        .any(|r| capability.of(r.role) && viewer.matches(&r.principal)))
}

async fn require(
    store: &SharedStore,
    viewer: &Viewer,
    collection: &CollectionRecord,
    capability: Capability,
) -> SharingResult<()> {
    if has(store, viewer, collection, capability).await? {
        Ok(())
    } else {
        Err(SharingError::Denied(format!(
            "only the owner of collection `{}` or a holder of a role that may {} may do this",
            collection.name,
            capability.describe()
        )))
    }
}

/// Checks an expiry and keeps it to the millisecond, as the store keeps
/// it (so the answer to a change shows what is stored).
fn check_expiry(expires_at: Option<DateTime<Utc>>) -> SharingResult<Option<DateTime<Utc>>> {
    let expires_at = expires_at
        .map(|t| chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t));
    match expires_at {
        Some(t) if t <= Utc::now() => Err(SharingError::Invalid(format!(
            "expires_at {}: is in the past",
            t.to_rfc3339()
        ))),
        other => Ok(other),
    }
}

pub async fn list_rules(
    store: &SharedStore,
    actor: &Actor,
    collection: &CollectionRecord,
) -> SharingResult<Vec<AclRuleInfo>> {
    require(store, &actor.viewer, collection, Capability::ManageRules).await?;
    Ok(store.acl_rules(collection.id).await?)
}

pub async fn create_rule(
    state: &crate::AppState,
    actor: &Actor,
    collection: &CollectionRecord,
    request: AclRuleCreate,
) -> SharingResult<AclRuleInfo> {
    let store = &state.store;
    require(store, &actor.viewer, collection, Capability::ManageRules).await?;
    let path = RulePath::parse(&request.path).map_err(SharingError::Invalid)?;
    let expires_at = check_expiry(request.expires_at)?;
    check_principal_exists(store, &request.principal).await?;
    let rule = AclRuleInfo {
        id: AclRuleId::new(),
        collection_id: collection.id,
        principal: request.principal,
        path: path.canonical(),
        permissions: request.permissions,
        expires_at,
        created_by: actor.identity,
        created_at: Utc::now(),
    };
    if !store
        .insert_acl_rule(&rule, MAX_RULES_PER_COLLECTION)
        .await?
    {
        return Err(SharingError::Conflict(format!(
            "collection `{}` already has {MAX_RULES_PER_COLLECTION} access rules, the most one collection may have; grant to a group instead of to many identities",
            collection.name
        )));
    }
    audit(store, actor, subject(collection), "acl.create", json!(rule)).await?;
    crate::notify::hooks::access_granted(state, actor.identity, collection, &rule);
    Ok(rule)
}

async fn rule_of(
    store: &SharedStore,
    collection: &CollectionRecord,
    id: AclRuleId,
) -> SharingResult<AclRuleInfo> {
    store
        .acl_rule(id)
        .await?
        .filter(|r| r.collection_id == collection.id)
        .ok_or_else(|| {
            SharingError::NotFound(format!(
                "access rule {id} does not exist on collection `{}`",
                collection.name
            ))
        })
}

pub async fn show_rule(
    store: &SharedStore,
    actor: &Actor,
    collection: &CollectionRecord,
    id: AclRuleId,
) -> SharingResult<AclRuleInfo> {
    require(store, &actor.viewer, collection, Capability::ManageRules).await?;
    rule_of(store, collection, id).await
}

pub async fn update_rule(
    store: &SharedStore,
    actor: &Actor,
    collection: &CollectionRecord,
    id: AclRuleId,
    update: AclRuleUpdate,
) -> SharingResult<AclRuleInfo> {
    require(store, &actor.viewer, collection, Capability::ManageRules).await?;
    let mut rule = rule_of(store, collection, id).await?;
    if let Some(permissions) = update.permissions {
        rule.permissions = permissions;
    }
    if let Some(expires_at) = update.expires_at {
        rule.expires_at = check_expiry(expires_at)?;
    }
    if !store.update_acl_rule(&rule).await? {
        return Err(SharingError::NotFound(format!(
            "access rule {id} does not exist"
        )));
    }
    audit(store, actor, subject(collection), "acl.update", json!(rule)).await?;
    Ok(rule)
}

pub async fn delete_rule(
    store: &SharedStore,
    actor: &Actor,
    collection: &CollectionRecord,
    id: AclRuleId,
) -> SharingResult<()> {
    require(store, &actor.viewer, collection, Capability::ManageRules).await?;
    let rule = rule_of(store, collection, id).await?;
    store.delete_acl_rule(id).await?;
    audit(store, actor, subject(collection), "acl.delete", json!(rule)).await
}

pub async fn list_roles(
    store: &SharedStore,
    actor: &Actor,
    collection: &CollectionRecord,
) -> SharingResult<Vec<RoleInfo>> {
    // Any role holder may see who else holds one.
    if !viewer_holds_any_role(store, &actor.viewer, collection).await? {
        return Err(SharingError::Denied(format!(
            "only the owner of collection `{}` and holders of its roles may list its roles",
            collection.name
        )));
    }
    Ok(store.roles(collection.id).await?)
}

async fn viewer_holds_any_role(
    store: &SharedStore,
    viewer: &Viewer,
    collection: &CollectionRecord,
) -> SharingResult<bool> {
    if viewer.is(collection.owner_id) {
        return Ok(true);
    }
    Ok(store
        .roles(collection.id)
        .await?
        .iter()
        .any(|r| viewer.matches(&r.principal)))
}

pub async fn create_role(
    store: &SharedStore,
    actor: &Actor,
    collection: &CollectionRecord,
    request: RoleCreate,
) -> SharingResult<RoleInfo> {
    require(store, &actor.viewer, collection, Capability::ManageRoles).await?;
    if request.principal == lattice_protocol::sharing::Principal::Public {
        return Err(SharingError::Invalid(
            "principal: a role cannot be granted to `public` (anyone without a token)".into(),
        ));
    }
    check_principal_exists(store, &request.principal).await?;
    let role = RoleInfo {
        id: RoleId::new(),
        collection_id: collection.id,
        principal: request.principal,
        role: request.role,
        created_by: actor.identity,
        created_at: Utc::now(),
    };
    match store.insert_role(&role).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(SharingError::Conflict(format!(
                "{} already holds the role {} on collection `{}`",
                role.principal,
                role.role.as_str(),
                collection.name
            )))
        }
        Err(e) => return Err(e.into()),
    }
    audit(
        store,
        actor,
        subject(collection),
        "role.create",
        json!(role),
    )
    .await?;
    Ok(role)
}

pub async fn delete_role(
    store: &SharedStore,
    actor: &Actor,
    collection: &CollectionRecord,
    id: RoleId,
) -> SharingResult<()> {
    require(store, &actor.viewer, collection, Capability::ManageRoles).await?;
    let role = store
        .role(id)
        .await?
        .filter(|r| r.collection_id == collection.id)
        .ok_or_else(|| {
            SharingError::NotFound(format!(
                "role {id} does not exist on collection `{}`",
                collection.name
            ))
        })?;
    store.delete_role(id).await?;
    audit(
        store,
        actor,
        subject(collection),
        "role.delete",
        json!(role),
    )
    .await
}

/// The collection's audit trail, for those who manage its rules.
pub async fn audit_trail(
    store: &SharedStore,
    actor: &Actor,
    collection: &CollectionRecord,
    after: i64,
    limit: u32,
) -> SharingResult<Vec<AuditEntry>> {
    require(store, &actor.viewer, collection, Capability::ManageRules).await?;
    Ok(store.audit(&subject(collection), after, limit).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_protocol::sharing::Principal;
    use lattice_protocol::{CollectionId, GroupId, IdentityId};

    fn rule(
        principal: Principal,
        path: &str,
        permissions: Permissions,
        expires_at: Option<DateTime<Utc>>,
    ) -> AclRuleInfo {
        AclRuleInfo {
            id: AclRuleId::new(),
            collection_id: CollectionId::new(),
            principal,
            path: path.into(),
            permissions,
            expires_at,
            created_by: IdentityId::new(),
            created_at: Utc::now(),
        }
    }

    /// Principal kinds x permissions x paths (inside, outside, sibling
    /// prefix), for a viewer in one group.
    #[test]
    fn the_matrix_of_principals_permissions_and_paths() {
        let me = IdentityId::new();
        let my_group = GroupId::new();
        let viewer = Viewer::with(me, &[my_group]);
        let anonymous = Viewer::anonymous();
        let now = Utc::now();
        let principals = [
            (Principal::Identity(me), true, false),
            (Principal::Identity(IdentityId::new()), false, false),
            (Principal::Group(my_group), true, false),
            (Principal::Group(GroupId::new()), false, false),
            (Principal::AllAuthenticatedUsers, true, false),
            (Principal::Public, true, true),
        ];
        for (principal, grants_me, grants_anonymous) in principals {
            for permissions in [Permissions::Read, Permissions::ReadWrite] {
                let rules = [rule(principal, "/shared/", permissions, None)];
                for (path, inside) in [
                    ("/shared", true),
                    ("/shared/a/b.txt", true),
                    ("/shared-private/a", false),
                    ("/sharedx", false),
                    ("/", false),
                    ("/other", false),
                ] {
                    let c = request_components(path).unwrap();
                    for need in [Permissions::Read, Permissions::ReadWrite] {
                        let expected = inside && permissions.covers(need);
                        assert_eq!(
                            rules_allow(&viewer, &rules, &c, need, now),
                            expected && grants_me,
                            "{principal} {permissions:?} {path} need {need:?}"
                        );
                        assert_eq!(
                            rules_allow(&anonymous, &rules, &c, need, now),
                            expected && grants_anonymous,
                            "anonymous: {principal} {permissions:?} {path} need {need:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn expired_rules_grant_nothing_and_rules_only_add() {
        let me = IdentityId::new();
        let viewer = Viewer::with(me, &[]);
        let now = Utc::now();
        let path = request_components("/data/x").unwrap();
        let expired = rule(
            Principal::Identity(me),
            "/data/",
            Permissions::ReadWrite,
            Some(now - chrono::Duration::seconds(1)),
        );
        let live = rule(
            Principal::Identity(me),
            "/data/",
            Permissions::Read,
            Some(now + chrono::Duration::days(30)),
        );
        assert!(!rules_allow(
            &viewer,
            std::slice::from_ref(&expired),
            &path,
            Permissions::Read,
            now
        ));
        assert!(rules_allow(
            &viewer,
            &[expired.clone(), live.clone()],
            &path,
            Permissions::Read,
            now
        ));
        assert!(!rules_allow(
            &viewer,
            &[expired, live.clone()],
            &path,
            Permissions::ReadWrite,
            now
        ));
        // A narrower read rule does not take away a broader write rule.
        let broad = rule(
            Principal::AllAuthenticatedUsers,
            "/",
            Permissions::ReadWrite,
            None,
        );
        assert!(rules_allow(
            &viewer,
            &[live, broad],
            &path,
            Permissions::ReadWrite,
            now
        ));
    }

    #[test]
    fn the_longest_sharing_policy_path_wins() {
        use lattice_protocol::sharing::SharePath;
        let policy = SharingPolicy {
            guest_collections: true,
            paths: vec![
                SharePath {
                    path: "/".into(),
                    mode: ShareMode::Read,
                },
                SharePath {
                    path: "/projects/".into(),
                    mode: ShareMode::ReadWrite,
                },
                SharePath {
                    path: "/projects/secret/".into(),
                    mode: ShareMode::None,
                },
            ],
        };
        let mode = |p: &str| share_mode(&policy, &request_components(p).unwrap());
        assert_eq!(mode("/data"), ShareMode::Read);
        assert_eq!(mode("/projects/a"), ShareMode::ReadWrite);
        assert_eq!(mode("/projects/secret/x"), ShareMode::None);
        assert_eq!(mode("/projects/secretive"), ShareMode::ReadWrite);
        let off = SharingPolicy {
            guest_collections: false,
            ..policy.clone()
        };
        assert_eq!(
            share_mode(&off, &request_components("/projects/a").unwrap()),
            ShareMode::None
        );
        let empty = SharingPolicy {
            guest_collections: true,
            paths: vec![],
        };
        assert_eq!(share_mode(&empty, &[]), ShareMode::None);
        assert!(mode_allows(ShareMode::Read, Permissions::Read));
        assert!(!mode_allows(ShareMode::Read, Permissions::ReadWrite));
        assert!(!mode_allows(ShareMode::None, Permissions::Read));
    }

    #[test]
    fn roles_grant_what_their_names_say() {
        use CollectionRole::*;
        assert!(Capability::ManageRoles.of(Administrator));
        assert!(!Capability::ManageRoles.of(AccessManager));
        assert!(Capability::ManageRules.of(AccessManager));
        assert!(!Capability::ManageRules.of(ActivityManager));
        assert!(Capability::ManageActivity.of(ActivityManager));
        assert!(!Capability::ManageActivity.of(ActivityMonitor));
        assert!(Capability::SeeActivity.of(ActivityMonitor));
        assert!(!Capability::SeeActivity.of(AccessManager));
    }
}
