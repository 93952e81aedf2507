//! The sharing vocabulary: principals, groups and their memberships,
//! access rules and roles on collections, and the audit trail.
//!
//! One principal notation serves every place that names "who": access
//! rules, roles, shared functions and endpoints, and later search
//! visibility and flow roles. The service decides what a principal may do;
//! this module only spells it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{AclRuleId, ClientId, CollectionId, GroupId, IdentityId, RoleId};

// ----------------------------------------------------------------- principals

/// Who a grant is for: `identity:ID`, `group:ID`, `all_authenticated_users`
/// (anyone with a valid token) or `public` (anyone, no token needed).
/// The anchor's URNs (`urn:globus:auth:identity:ID`,
/// `urn:globus:groups:id:ID`) are accepted on input; output is always the
/// short form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    Identity(IdentityId),
    Group(GroupId),
    AllAuthenticatedUsers,
    Public,
}

/// Why a principal could not be read; the message names the accepted forms.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("principal `{given}` is not valid: {reason} (use identity:ID, group:ID, all_authenticated_users or public)")]
pub struct PrincipalError {
    pub given: String,
    pub reason: &'static str,
}

impl FromStr for Principal {
    type Err = PrincipalError;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let err = |reason| PrincipalError {
            given: given.to_owned(),
            reason,
        };
        match given {
            "public" => return Ok(Principal::Public),
            "all_authenticated_users" => return Ok(Principal::AllAuthenticatedUsers),
            _ => {}
        }
        let (kind, id) = if let Some(id) = given
            .strip_prefix("identity:")
            .or_else(|| given.strip_prefix("urn:globus:auth:identity:"))
        {
            ("identity", id)
        } else if let Some(id) = given
            .strip_prefix("group:")
            .or_else(|| given.strip_prefix("urn:globus:groups:id:"))
        {
            ("group", id)
        } else {
            return Err(err("unknown kind"));
        };
        // Only the canonical hyphenated form: `Uuid::parse_str` also takes
        // braces, URNs and simple hex, which would give one principal many
        // spellings.
        if id.len() != 36 {
            return Err(err("the id is not a UUID"));
        }
        let uuid = uuid::Uuid::parse_str(id).map_err(|_| err("the id is not a UUID"))?;
        Ok(match kind {
            "identity" => Principal::Identity(IdentityId(uuid)),
            _ => Principal::Group(GroupId(uuid)),
        })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Identity(id) => write!(f, "identity:{id}"),
            Principal::Group(id) => write!(f, "group:{id}"),
            Principal::AllAuthenticatedUsers => f.write_str("all_authenticated_users"),
            Principal::Public => f.write_str("public"),
        }
    }
}

impl Serialize for Principal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Principal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Principal {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "identity:ID, group:ID, all_authenticated_users or public",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Principal {}

// --------------------------------------------------------------------- groups

/// A member's role in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GroupRole {
    Member,
    Manager,
    Admin,
}

/// Where a membership stands. Only `active` members are members; the others
/// are kept so that the history of a membership is visible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MembershipStatus {
    Invited,
    Pending,
    Active,
    Declined,
    Rejected,
    Left,
    Removed,
}

/// Who can see that a group exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GroupVisibility {
    /// Any logged-in identity.
    Authenticated,
    /// Its members and invitees only.
    #[default]
    Private,
}

/// Who can see a group's member list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MembersVisibility {
    /// Every active member.
    #[default]
    Members,
    /// Managers and admins only.
    Managers,
}

/// A group's policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupPolicies {
    #[serde(default)]
    pub visibility: GroupVisibility,
    #[serde(default)]
    pub members_visibility: MembersVisibility,
    /// Whether identities who can see the group may ask to join it.
    #[serde(default)]
    pub join_requests: bool,
}

/// `POST /v1/groups`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupCreate {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Makes the new group a subgroup: its active members become effective
    /// members of the parent. The caller must be an admin of the parent.
    #[serde(default)]
    pub parent_id: Option<GroupId>,
    #[serde(default)]
    pub policies: GroupPolicies,
}

/// `PATCH /v1/groups/{id}`: only the fields given change.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// `{"parent_id": null}` detaches the group from its parent; a missing
    /// field leaves the parent as it is.
    #[serde(default, with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<GroupId>))]
    pub parent_id: Option<Option<GroupId>>,
    #[serde(default)]
    pub policies: Option<GroupPolicies>,
}

/// A group as its viewer may see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupInfo {
    pub id: GroupId,
    pub name: String,
    pub description: String,
    pub parent_id: Option<GroupId>,
    pub policies: GroupPolicies,
    pub created_at: DateTime<Utc>,
    /// The viewer's own membership, if any.
    pub my_role: Option<GroupRole>,
    pub my_status: Option<MembershipStatus>,
    /// Present when the viewer may see the members (per the policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberInfo>>,
}

/// One membership of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberInfo {
    /// `None` for an invitation by email not yet claimed.
    pub identity_id: Option<IdentityId>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub role: GroupRole,
    pub status: MembershipStatus,
    pub updated_at: DateTime<Utc>,
}

/// One membership action. `identity` may be an identity id or, in the CLI,
/// a username or email the CLI resolved first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MembershipAction {
    /// An admin or manager adds an identity as an active member.
    Add {
        identity: IdentityId,
        #[serde(default = "member")]
        role: GroupRole,
    },
    /// An admin or manager invites an identity, or an email address of
    /// someone who has not logged in yet (claimed at their first login
    /// with that verified email).
    Invite {
        #[serde(default)]
        identity: Option<IdentityId>,
        #[serde(default)]
        email: Option<String>,
        #[serde(default = "member")]
        role: GroupRole,
    },
    /// The invitee accepts.
    Accept,
    /// The invitee declines.
    Decline,
    /// An identity who can see the group asks to join (if the policy allows).
    Request,
    /// An admin or manager approves a join request.
    Approve { identity: IdentityId },
    /// An admin or manager rejects a join request.
    Reject { identity: IdentityId },
    /// An admin changes an active member's role.
    ChangeRole {
        identity: IdentityId,
        role: GroupRole,
    },
    /// An admin or manager removes a member (managers cannot remove admins).
    Remove { identity: IdentityId },
    /// A member leaves (the last admin cannot).
    Leave,
}

fn member() -> GroupRole {
    GroupRole::Member
}

impl MembershipAction {
    /// The action's wire name, for results and the audit trail.
    pub fn name(&self) -> &'static str {
        match self {
            MembershipAction::Add { .. } => "add",
            MembershipAction::Invite { .. } => "invite",
            MembershipAction::Accept => "accept",
            MembershipAction::Decline => "decline",
            MembershipAction::Request => "request",
            MembershipAction::Approve { .. } => "approve",
            MembershipAction::Reject { .. } => "reject",
            MembershipAction::ChangeRole { .. } => "change_role",
            MembershipAction::Remove { .. } => "remove",
            MembershipAction::Leave => "leave",
        }
    }
}

/// `POST /v1/groups/{id}/members`: several actions, each applied on its own.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MembershipBatch {
    pub actions: Vec<MembershipAction>,
}

/// What became of one action of a batch: `member` when it succeeded,
/// `error` (code and reason) when it failed. Never both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MembershipResult {
    /// Position of the action in the request.
    pub index: usize,
    pub action: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::ErrorBody>,
}

/// The answer to a [`MembershipBatch`]: one result per action, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MembershipBatchResult {
    /// How many actions failed (0 when all succeeded).
    pub failed: usize,
    pub results: Vec<MembershipResult>,
}

// --------------------------------------------------------- rules and roles

/// What an access rule grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Permissions {
    /// Read: list, stat, transfer from.
    #[serde(rename = "r")]
    Read,
    /// Read and write: also mkdir, rename, delete, transfer to.
    #[serde(rename = "rw")]
    ReadWrite,
}

impl Permissions {
    pub fn as_str(self) -> &'static str {
        match self {
            Permissions::Read => "r",
            Permissions::ReadWrite => "rw",
        }
    }

    /// Whether this grant covers `need`.
    pub fn covers(self, need: Permissions) -> bool {
        self >= need
    }
}

impl FromStr for Permissions {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "r" => Ok(Permissions::Read),
            "rw" => Ok(Permissions::ReadWrite),
            other => Err(format!("permissions `{other}`: use r or rw")),
        }
    }
}

/// `POST /v1/collections/{c}/acl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AclRuleCreate {
    pub principal: Principal,
    /// A directory (ending in `/`) or one file, from the collection's root.
    pub path: String,
    pub permissions: Permissions,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// `PATCH /v1/collections/{c}/acl/{id}`: only the fields given change.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AclRuleUpdate {
    #[serde(default)]
    pub permissions: Option<Permissions>,
    /// `{"expires_at": null}` removes the expiry.
    #[serde(default, with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<DateTime<Utc>>))]
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// An access rule: `principal` may do `permissions` under `path`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AclRuleInfo {
    pub id: AclRuleId,
    pub collection_id: CollectionId,
    pub principal: Principal,
    pub path: String,
    pub permissions: Permissions,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: IdentityId,
    pub created_at: DateTime<Utc>,
}

/// A role on a collection. Roles manage; they grant no file access by
/// themselves (access rules do), as in the anchor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CollectionRole {
    /// See the collection's activity.
    ActivityMonitor,
    /// See, pause and cancel transfers that touch the collection.
    ActivityManager,
    /// Manage access rules.
    AccessManager,
    /// Everything the owner can manage, roles included.
    Administrator,
}

impl CollectionRole {
    pub fn as_str(self) -> &'static str {
        match self {
            CollectionRole::ActivityMonitor => "activity_monitor",
            CollectionRole::ActivityManager => "activity_manager",
            CollectionRole::AccessManager => "access_manager",
            CollectionRole::Administrator => "administrator",
        }
    }
}

/// `POST /v1/collections/{c}/roles`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoleCreate {
    pub principal: Principal,
    pub role: CollectionRole,
}

/// A role granted on a collection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoleInfo {
    pub id: RoleId,
    pub collection_id: CollectionId,
    pub principal: Principal,
    pub role: CollectionRole,
    pub created_by: IdentityId,
    pub created_at: DateTime<Utc>,
}

/// How much of a host collection may be shared through guest collections:
/// the longest matching path wins; no match means `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ShareMode {
    None,
    Read,
    ReadWrite,
}

/// One line of a host collection's sharing policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharePath {
    /// A directory from the collection's root, ending in `/`.
    pub path: String,
    pub mode: ShareMode,
}

/// `PUT /v1/collections/{c}/sharing`: the whole policy at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharingPolicy {
    /// Whether guest collections may be created on this collection at all.
    pub guest_collections: bool,
    pub paths: Vec<SharePath>,
}

impl Default for SharingPolicy {
    /// Guest collections allowed everywhere: whoever creates one still
    /// needs read access to the path, and writes through it need write access.
    fn default() -> Self {
        SharingPolicy {
            guest_collections: true,
            paths: vec![SharePath {
                path: "/".to_owned(),
                mode: ShareMode::ReadWrite,
            }],
        }
    }
}

/// `POST /v1/collections/{host}/guests`: a guest collection rooted at
/// `path` of the host collection.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuestCollectionCreate {
    pub path: String,
    pub name: String,
}

// ------------------------------------------------- functions and endpoints

/// `POST /v1/functions/{id}/grants` and `/v1/endpoints/{id}/grants`: who
/// else may use the function (run it), or submit to the endpoint.
/// `public` on a function means anyone with a token.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrantsAdd {
    pub principals: Vec<Principal>,
}

// ---------------------------------------------------------------------- audit

/// One recorded change to a group, an access rule, a role or a sharing
/// policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub seq: i64,
    pub time: DateTime<Utc>,
    /// Who made the change.
    pub actor: IdentityId,
    /// The client application the actor's token was issued to, if any.
    pub client_id: Option<ClientId>,
    /// `group:ID` or `collection:ID`.
    pub subject: String,
    /// What happened, e.g. `acl.create`, `member.remove`.
    pub action: String,
    /// The change's details (the rule, the role, the membership...).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
}

/// `Option<Option<T>>` that tells a missing field (no change) from an
/// explicit `null` (clear the value).
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            None => serializer.serialize_none(),
            Some(inner) => inner.serialize(serializer),
        }
    }

    pub(super) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_round_trip_and_accept_the_anchors_urns() {
        let id = IdentityId::new();
        let group = GroupId::new();
        for (text, expected) in [
            (format!("identity:{id}"), Principal::Identity(id)),
            (
                format!("urn:globus:auth:identity:{id}"),
                Principal::Identity(id),
            ),
            (format!("group:{group}"), Principal::Group(group)),
            (
                format!("urn:globus:groups:id:{group}"),
                Principal::Group(group),
            ),
            ("public".to_owned(), Principal::Public),
            (
                "all_authenticated_users".to_owned(),
                Principal::AllAuthenticatedUsers,
            ),
        ] {
            let parsed: Principal = text.parse().unwrap();
            assert_eq!(parsed, expected, "{text}");
            let json = serde_json::to_string(&parsed).unwrap();
            let back: Principal = serde_json::from_str(&json).unwrap();
            assert_eq!(back, expected);
        }
        assert_eq!(
            Principal::Group(group).to_string(),
            format!("group:{group}")
        );
    }

    #[test]
    fn malformed_principals_say_why() {
        let id = IdentityId::new();
        for (text, reason) in [
            ("", "unknown kind"),
            ("user:alice", "unknown kind"),
            ("identity:", "the id is not a UUID"),
            ("identity:not-a-uuid", "the id is not a UUID"),
            (
                "group:{00000000-0000-0000-0000-000000000000}",
                "the id is not a UUID",
            ),
            ("Public", "unknown kind"),
        ] {
            let err = text.parse::<Principal>().unwrap_err();
            assert_eq!(err.reason, reason, "{text}");
            assert!(err.to_string().contains("group:ID"), "{err}");
        }
        let spaced = format!(" identity:{id}");
        assert!(spaced.parse::<Principal>().is_err());
        assert!(serde_json::from_str::<Principal>("\"identity:x\"").is_err());
    }

    #[test]
    fn membership_actions_are_tagged_by_name() {
        let id = IdentityId::new();
        let action: MembershipAction =
            serde_json::from_str(&format!(r#"{{"action":"add","identity":"{id}"}}"#)).unwrap();
        assert_eq!(
            action,
            MembershipAction::Add {
                identity: id,
                role: GroupRole::Member
            }
        );
        assert_eq!(action.name(), "add");
        let leave: MembershipAction = serde_json::from_str(r#"{"action":"leave"}"#).unwrap();
        assert_eq!(leave, MembershipAction::Leave);
        assert!(serde_json::from_str::<MembershipAction>(r#"{"action":"promote"}"#).is_err());
    }

    #[test]
    fn updates_tell_a_missing_field_from_null() {
        let clear: AclRuleUpdate = serde_json::from_str(r#"{"expires_at":null}"#).unwrap();
        assert_eq!(clear.expires_at, Some(None));
        let keep: AclRuleUpdate = serde_json::from_str(r#"{"permissions":"r"}"#).unwrap();
        assert_eq!(keep.expires_at, None);
        assert_eq!(keep.permissions, Some(Permissions::Read));
        assert!(Permissions::ReadWrite.covers(Permissions::Read));
        assert!(!Permissions::Read.covers(Permissions::ReadWrite));
    }
}
