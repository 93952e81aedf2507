//! Groups: create, show, update, delete, list, and batches of membership
//! actions (each decided by the pure state machine in `membership.rs`,
//! stored, and audited on its own, so one failure never hides another's
//! success).

use chrono::Utc;
use lattice_protocol::sharing::{
    GroupCreate, GroupInfo, GroupRole, GroupUpdate, GroupVisibility, MemberInfo, MembersVisibility,
    MembershipAction, MembershipBatchResult, MembershipResult, MembershipStatus,
};
use lattice_protocol::{ErrorBody, GroupId, IdentityId};
use serde_json::json;

use super::membership::{makes_cycle, Decision};
use super::{audit, Actor, SharingError, SharingResult, Viewer};
use crate::error::ApiError;
use crate::store::{GroupRecord, MembershipRecord, SharedStore};

/// Most actions in one membership batch.
pub const MAX_BATCH: usize = 100;

fn subject(id: GroupId) -> String {
    format!("group:{id}")
}

fn check_name(name: &str) -> SharingResult<String> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 100 {
        return Err(SharingError::Invalid(
            "name: use 1 to 100 characters".into(),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(SharingError::Invalid(
            "name: control characters are not allowed".into(),
        ));
    }
    Ok(trimmed.to_owned())
}

fn check_description(description: &str) -> SharingResult<()> {
    if description.chars().count() > 5_000 {
        return Err(SharingError::Invalid(
            "description: at most 5000 characters".into(),
        ));
    }
    Ok(())
}

/// The viewer's own membership row in `group` (through any linked identity).
async fn own_membership(
    store: &SharedStore,
    viewer: &Viewer,
    group: GroupId,
) -> SharingResult<Option<MembershipRecord>> {
    for id in viewer.identities() {
        if let Some(m) = store.membership(group, *id).await? {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

fn is_active_admin(m: Option<&MembershipRecord>) -> bool {
    m.is_some_and(|m| m.status == MembershipStatus::Active && m.role == GroupRole::Admin)
}

/// Loads a group the viewer may see: a member, invitee or requester sees
/// it; others only when its visibility is `authenticated`. Anything else
/// is "not found", so that private groups do not reveal that they exist.
async fn visible_group(
    store: &SharedStore,
    viewer: &Viewer,
    id: GroupId,
) -> SharingResult<(GroupRecord, Option<MembershipRecord>)> {
    let not_found = || SharingError::NotFound(format!("group {id} does not exist"));
    let group = store.group(id).await?.ok_or_else(not_found)?;
    let own = own_membership(store, viewer, id).await?;
    let involved = own.as_ref().is_some_and(|m| {
        matches!(
            m.status,
            MembershipStatus::Active | MembershipStatus::Invited | MembershipStatus::Pending
        )
    });
    let public =
        group.policies.visibility == GroupVisibility::Authenticated && viewer.is_authenticated();
    if involved || public {
        Ok((group, own))
    } else {
        Err(not_found())
    }
}

fn member_info(m: MembershipRecord, username: Option<String>) -> MemberInfo {
    MemberInfo {
        identity_id: m.identity_id,
        username,
        email: m.email,
        role: m.role,
        status: m.status,
        updated_at: m.updated_at,
    }
}

async fn info(
    store: &SharedStore,
    group: GroupRecord,
    own: Option<MembershipRecord>,
) -> SharingResult<GroupInfo> {
    let own_role = own
        .as_ref()
        .filter(|m| m.status == MembershipStatus::Active)
        .map(|m| m.role);
    let sees_members = matches!(
        (own_role, group.policies.members_visibility),
        (Some(GroupRole::Admin | GroupRole::Manager), _)
            | (Some(GroupRole::Member), MembersVisibility::Members)
    );
    let members = if sees_members {
        Some(
            store
                .members(group.id)
                .await?
                .into_iter()
                .map(|(m, username)| member_info(m, username))
                .collect(),
        )
    } else {
        None
    };
    Ok(GroupInfo {
        id: group.id,
        name: group.name,
        description: group.description,
        parent_id: group.parent_id,
        policies: group.policies,
        created_at: group.created_at,
        my_role: own.as_ref().map(|m| m.role),
        my_status: own.as_ref().map(|m| m.status),
        members,
    })
}

/// The caller must be an active admin of `parent` to hang a group under it.
async fn check_parent(
    store: &SharedStore,
    actor: &Actor,
    group: Option<GroupId>,
    parent: GroupId,
) -> SharingResult<()> {
    if store.group(parent).await?.is_none() {
        return Err(SharingError::NotFound(format!(
            "parent_id: group {parent} does not exist"
        )));
    }
    if !is_active_admin(own_membership(store, &actor.viewer, parent).await?.as_ref()) {
        return Err(SharingError::Denied(format!(
            "parent_id: only an admin of group {parent} may add subgroups to it"
        )));
    }
    if let Some(group) = group {
        let ancestors = store.group_ancestors(parent).await?;
        if makes_cycle(group, parent, &ancestors) {
            return Err(SharingError::Conflict(format!(
                "parent_id: group {parent} is this group or one of its subgroups; a group cannot become its own ancestor"
            )));
        }
    }
    Ok(())
}

pub async fn create(
    store: &SharedStore,
    actor: &Actor,
    request: GroupCreate,
) -> SharingResult<GroupInfo> {
    let name = check_name(&request.name)?;
    check_description(&request.description)?;
    if let Some(parent) = request.parent_id {
        check_parent(store, actor, None, parent).await?;
    }
    let now = Utc::now();
    let group = GroupRecord {
        id: GroupId::new(),
        name,
        description: request.description,
        parent_id: request.parent_id,
        policies: request.policies,
        created_by: actor.identity,
        created_at: now,
    };
    let creator = MembershipRecord {
        group_id: group.id,
        identity_id: Some(actor.identity),
        email: None,
        role: GroupRole::Admin,
        status: MembershipStatus::Active,
        created_at: now,
        updated_at: now,
    };
    store.insert_group(&group, &creator).await?;
    audit(
        store,
        actor,
        subject(group.id),
        "group.create",
        json!({"name": group.name, "parent_id": group.parent_id, "policies": group.policies}),
    )
    .await?;
    info(store, group, Some(creator)).await
}

pub async fn show(store: &SharedStore, viewer: &Viewer, id: GroupId) -> SharingResult<GroupInfo> {
    let (group, own) = visible_group(store, viewer, id).await?;
    info(store, group, own).await
}

/// The viewer's groups (active, invited or pending), and with `all` also
/// every group visible to all logged-in identities.
pub async fn list(
    store: &SharedStore,
    viewer: &Viewer,
    all: bool,
) -> SharingResult<Vec<GroupInfo>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (group, m) in store.groups_of(viewer.identities()).await? {
        let involved = matches!(
            m.status,
            MembershipStatus::Active | MembershipStatus::Invited | MembershipStatus::Pending
        );
        if involved && seen.insert(group.id) {
            let mut g = info(store, group, Some(m)).await?;
            g.members = None;
            out.push(g);
        }
    }
    if all && viewer.is_authenticated() {
        for group in store.public_groups().await? {
            if seen.insert(group.id) {
                let own = own_membership(store, viewer, group.id).await?;
                let mut g = info(store, group, own).await?;
                g.members = None;
                out.push(g);
            }
        }
    }
    Ok(out)
}

async fn admin_group(
    store: &SharedStore,
    actor: &Actor,
    id: GroupId,
    what: &str,
) -> SharingResult<GroupRecord> {
    let (group, own) = visible_group(store, &actor.viewer, id).await?;
    if !is_active_admin(own.as_ref()) {
        return Err(SharingError::Denied(format!(
            "only an admin of the group may {what} it"
        )));
    }
    Ok(group)
}

pub async fn update(
    store: &SharedStore,
    actor: &Actor,
    id: GroupId,
    update: GroupUpdate,
) -> SharingResult<GroupInfo> {
    let mut group = admin_group(store, actor, id, "update").await?;
    if let Some(name) = &update.name {
        group.name = check_name(name)?;
    }
    if let Some(description) = update.description.clone() {
        check_description(&description)?;
        group.description = description;
    }
    if let Some(parent) = update.parent_id {
        if let Some(parent) = parent {
            if group.parent_id != Some(parent) {
                check_parent(store, actor, Some(id), parent).await?;
            }
        }
        group.parent_id = parent;
    }
    if let Some(policies) = update.policies {
        group.policies = policies;
    }
    if !store.update_group(&group).await? {
        return Err(SharingError::NotFound(format!("group {id} does not exist")));
    }
    audit(
        store,
        actor,
        subject(id),
        "group.update",
        json!({"name": group.name, "description": group.description, "parent_id": group.parent_id, "policies": group.policies}),
    )
    .await?;
    show(store, &actor.viewer, id).await
}

pub async fn delete(store: &SharedStore, actor: &Actor, id: GroupId) -> SharingResult<()> {
    let group = admin_group(store, actor, id, "delete").await?;
    store.delete_group(id).await?;
    audit(
        store,
        actor,
        subject(id),
        "group.delete",
        json!({"name": group.name}),
    )
    .await
}

/// Applies each action on its own and says, per action, what became of it.
pub async fn apply_batch(
    state: &crate::AppState,
    actor: &Actor,
    id: GroupId,
    actions: Vec<MembershipAction>,
) -> SharingResult<MembershipBatchResult> {
    if actions.is_empty() || actions.len() > MAX_BATCH {
        return Err(SharingError::Invalid(format!(
            "actions: send 1 to {MAX_BATCH} actions"
        )));
    }
    // The group must be visible to the actor at all; each action then
    // succeeds or fails on its own.
    let store = &state.store;
    let (group, _) = visible_group(store, &actor.viewer, id).await?;
    let mut results = Vec::with_capacity(actions.len());
    for (index, action) in actions.into_iter().enumerate() {
        let name = action.name().to_owned();
        let result = apply_one(store, actor, &group, &action).await;
        results.push(match result {
            Ok(member) => {
                if matches!(action, MembershipAction::Invite { .. }) {
                    crate::notify::hooks::group_invited(state, actor.identity, &group, &member);
                }
                MembershipResult {
                    index,
                    action: name,
                    ok: true,
                    member: Some(member),
                    error: None,
                }
            }
            Err(SharingError::Store(e)) => return Err(SharingError::Store(e)),
            Err(e) => {
                let api: ApiError = e.into();
                MembershipResult {
                    index,
                    action: name,
                    ok: false,
                    member: None,
                    error: Some(ErrorBody {
                        code: api.code,
                        message: api.message,
                        request_id: None,
                        position: None,
                    }),
                }
            }
        });
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    Ok(MembershipBatchResult { failed, results })
}

fn check_email(email: &str) -> SharingResult<String> {
    let email = email.trim();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(user, domain)| {
            !user.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(SharingError::Invalid(format!(
            "email `{email}` is not an email address"
        )));
    }
    Ok(email.to_lowercase())
}

async fn apply_one(
    store: &SharedStore,
    actor: &Actor,
    group: &GroupRecord,
    action: &MembershipAction,
) -> SharingResult<MemberInfo> {
    let own = own_membership(store, &actor.viewer, group.id).await?;
    // Whose row the action is about.
    let mut target_email = None;
    let (target_identity, target) = match action {
        MembershipAction::Add { identity, .. }
        | MembershipAction::Approve { identity }
        | MembershipAction::Reject { identity }
        | MembershipAction::ChangeRole { identity, .. }
        | MembershipAction::Remove { identity } => {
            let identity = known_identity(store, *identity).await?;
            (Some(identity), store.membership(group.id, identity).await?)
        }
        MembershipAction::Invite {
            identity, email, ..
        } => match (identity, email) {
            (Some(identity), None) => {
                let identity = known_identity(store, *identity).await?;
                (Some(identity), store.membership(group.id, identity).await?)
            }
            (None, Some(email)) => {
                let email = check_email(email)?;
                let row = store.membership_by_email(group.id, &email).await?;
                target_email = Some(email);
                (None, row)
            }
            _ => {
                return Err(SharingError::Invalid(
                    "invite: give exactly one of identity and email".into(),
                ))
            }
        },
        MembershipAction::Accept
        | MembershipAction::Decline
        | MembershipAction::Request
        | MembershipAction::Leave => {
            let identity = own
                .as_ref()
                .and_then(|m| m.identity_id)
                .unwrap_or(actor.identity);
            (Some(identity), own.clone())
        }
    };
    let active_admins = store
        .members(group.id)
        .await?
        .iter()
        .filter(|(m, _)| m.status == MembershipStatus::Active && m.role == GroupRole::Admin)
        .count();
    let next = Decision {
        group,
        actor: own.as_ref(),
        target: target.as_ref(),
        target_identity,
        target_email: target_email.as_deref(),
        active_admins,
        now: Utc::now(),
    }
    .apply(action)?;
    store.put_membership(&next).await?;
    audit(
        store,
        actor,
        subject(group.id),
        &format!("member.{}", action.name()),
        json!({"identity_id": next.identity_id, "email": next.email, "role": next.role, "status": next.status}),
    )
    .await?;
    let username = match next.identity_id {
        Some(id) => store.identity(id).await?.map(|i| i.username),
        None => None,
    };
    Ok(member_info(next, username))
}

async fn known_identity(store: &SharedStore, id: IdentityId) -> SharingResult<IdentityId> {
    match store.identity(id).await? {
        Some(_) => Ok(id),
        None => Err(SharingError::NotFound(format!(
            "identity {id} does not exist"
        ))),
    }
}

/// The audit trail of a group, for its admins.
pub async fn audit_trail(
    store: &SharedStore,
    actor: &Actor,
    id: GroupId,
    after: i64,
    limit: u32,
) -> SharingResult<Vec<lattice_protocol::sharing::AuditEntry>> {
    admin_group(store, actor, id, "see the audit trail of").await?;
    Ok(store.audit(&subject(id), after, limit).await?)
}
