//! `lattice group ...`, `lattice acl ...` and `lattice collection
//! role|audit ...`: groups, access rules and roles. Principals may be
//! written as `identity:ID`, `group:ID`, `all_authenticated_users`,
//! `public`, or a username, email or group name the CLI resolves.

use clap::{Args, Subcommand, ValueEnum};
use lattice_client::Client;
use lattice_protocol::sharing::{
    AclRuleCreate, AclRuleInfo, AclRuleUpdate, AuditEntry, CollectionRole, GrantsAdd, GroupCreate,
    GroupInfo, GroupPolicies, GroupRole, GroupUpdate, GroupVisibility, GuestCollectionCreate,
    MemberInfo, MembersVisibility, MembershipAction, MembershipBatchResult, Permissions, Principal,
    RoleCreate, RoleInfo, ShareMode, SharePath,
};
use lattice_protocol::{AclRuleId, GroupId, IdentityId, RoleId};

use crate::commands::files::split_target;
use crate::commands::transfers::parse_deadline;
use crate::context::Context;
use crate::output::{id_of, Refused, UsageError};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum RoleArg {
    Member,
    Manager,
    Admin,
}

impl From<RoleArg> for GroupRole {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Member => GroupRole::Member,
            RoleArg::Manager => GroupRole::Manager,
            RoleArg::Admin => GroupRole::Admin,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum VisibilityArg {
    /// Any logged-in identity can see the group.
    Authenticated,
    /// Only its members and invitees can.
    Private,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum MembersVisibilityArg {
    /// Every active member sees the member list.
    Members,
    /// Only managers and admins do.
    Managers,
}

#[derive(Args, Debug)]
pub(crate) struct PolicyArgs {
    /// Who can see that the group exists.
    #[arg(long, value_enum)]
    visibility: Option<VisibilityArg>,
    /// Who can see the member list.
    #[arg(long, value_enum)]
    members_visibility: Option<MembersVisibilityArg>,
    /// Whether identities who can see the group may ask to join.
    #[arg(long, value_name = "true|false")]
    join_requests: Option<bool>,
}

impl PolicyArgs {
    fn apply(&self, mut policies: GroupPolicies) -> GroupPolicies {
        if let Some(v) = self.visibility {
            policies.visibility = match v {
                VisibilityArg::Authenticated => GroupVisibility::Authenticated,
                VisibilityArg::Private => GroupVisibility::Private,
            };
        }
        if let Some(v) = self.members_visibility {
            policies.members_visibility = match v {
                MembersVisibilityArg::Members => MembersVisibility::Members,
                MembersVisibilityArg::Managers => MembersVisibility::Managers,
            };
        }
        if let Some(j) = self.join_requests {
            policies.join_requests = j;
        }
        policies
    }

    fn is_empty(&self) -> bool {
        self.visibility.is_none()
            && self.members_visibility.is_none()
            && self.join_requests.is_none()
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum GroupCommand {
    /// Create a group; you become its admin.
    Create {
        /// The group's name (1 to 100 characters).
        name: String,
        /// What the group is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Make it a subgroup of GROUP (you must be an admin there): its
        /// active members count as members of GROUP.
        #[arg(long, value_name = "GROUP")]
        parent: Option<String>,
        #[command(flatten)]
        policies: PolicyArgs,
    },
    /// Your groups (active, invited, pending); --all adds every group
    /// visible to all logged-in identities.
    List {
        /// Also list every group visible to all logged-in identities.
        #[arg(long)]
        all: bool,
    },
    /// A group, with its members when you may see them.
    Show {
        /// Group id or name.
        group: String,
    },
    /// Delete a group (admins).
    Delete {
        /// Group id or name.
        group: String,
    },
    /// Invite identities (username, email or identity:ID); an email nobody
    /// has logged in with yet is claimed at that person's first login.
    Invite {
        /// Group id or name.
        group: String,
        /// Who to invite: usernames, emails (also of people who never logged in) or identity:ID.
        #[arg(required = true)]
        principals: Vec<String>,
        /// The role: member, manager or admin.
        #[arg(long, value_enum, default_value = "member")]
        role: RoleArg,
    },
    /// Accept an invitation, or ask to join when you are not invited.
    Join {
        /// Group id or name.
        group: String,
    },
    /// Decline an invitation.
    Decline {
        /// Group id or name.
        group: String,
    },
    /// Leave a group (the last admin cannot).
    Leave {
        /// Group id or name.
        group: String,
    },
    /// Add, remove or change the role of members (admins and managers).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Approve or reject join requests (admins and managers).
    #[command(subcommand)]
    Request(RequestCommand),
    /// Change a group's policies, name, description or parent (admins).
    SetPolicy {
        /// Group id or name.
        group: String,
        #[command(flatten)]
        policies: PolicyArgs,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// A new description.
        #[arg(long)]
        description: Option<String>,
        /// Make it a subgroup of GROUP.
        #[arg(long, value_name = "GROUP", conflicts_with = "no_parent")]
        parent: Option<String>,
        /// Detach it from its parent.
        #[arg(long)]
        no_parent: bool,
    },
    /// Every change to the group: who, when, what, from which client (admins).
    Audit {
        /// Group id or name.
        group: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum MemberCommand {
    /// Add identities as active members.
    Add {
        /// Group id or name.
        group: String,
        /// Identities: usernames, emails or identity:ID.
        #[arg(required = true)]
        identities: Vec<String>,
        /// The role: member, manager or admin.
        #[arg(long, value_enum, default_value = "member")]
        role: RoleArg,
    },
    /// Remove members.
    Remove {
        /// Group id or name.
        group: String,
        /// Identities: usernames, emails or identity:ID.
        #[arg(required = true)]
        identities: Vec<String>,
    },
    /// Change a member's role (admins).
    Role {
        /// Group id or name.
        group: String,
        /// An identity: username, email or identity:ID.
        identity: String,
        /// The role: member, manager or admin.
        #[arg(value_enum)]
        role: RoleArg,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum RequestCommand {
    /// Approve join requests: the identities become active members.
    Approve {
        /// Group id or name.
        group: String,
        /// Identities: usernames, emails or identity:ID.
        #[arg(required = true)]
        identities: Vec<String>,
    },
    /// Reject join requests.
    Reject {
        /// Group id or name.
        group: String,
        /// Identities: usernames, emails or identity:ID.
        #[arg(required = true)]
        identities: Vec<String>,
    },
}

/// A group by id or by the name of one you can see.
async fn group_id(client: &Client, given: &str) -> anyhow::Result<GroupId> {
    if let Ok(id) = given.parse() {
        return Ok(id);
    }
    let groups = client.groups(true).await?;
    Ok(crate::output::one_named(
        "group",
        given,
        &groups,
        |g| g.name.as_str(),
        |g| g.id,
    )?)
}

/// An identity by `identity:ID`, id, username or email.
async fn identity_id(client: &Client, given: &str) -> anyhow::Result<IdentityId> {
    if let Ok(Principal::Identity(id)) = given.parse::<Principal>() {
        return Ok(id);
    }
    if let Ok(id) = given.parse() {
        return Ok(id);
    }
    let found = client.identities_named(given).await?;
    match found.as_slice() {
        [one] => Ok(one.id),
        [] => Err(Refused(format!(
            "no identity has the username or email `{given}` (they must have logged in once; invite an email with `lattice group invite`)"
        ))
        .into()),
        many => Err(Refused(format!(
            "{} identities match `{given}`; give identity:ID ({})",
            many.len(),
            many.iter().map(|i| i.id.to_string()).collect::<Vec<_>>().join(", ")
        ))
        .into()),
    }
}

/// A principal as written: the four notations, or a username, email or
/// group name.
pub(crate) async fn principal(client: &Client, given: &str) -> anyhow::Result<Principal> {
    if let Ok(p) = given.parse::<Principal>() {
        return Ok(p);
    }
    if given.contains(':') {
        // Looks like an attempt at the notation: say what is wrong with it.
        return Err(UsageError(given.parse::<Principal>().unwrap_err().to_string()).into());
    }
    let identities = client.identities_named(given).await?;
    let groups: Vec<GroupInfo> = client
        .groups(true)
        .await?
        .into_iter()
        .filter(|g| g.name == given)
        .collect();
    match (identities.as_slice(), groups.as_slice()) {
        ([one], []) => Ok(Principal::Identity(one.id)),
        ([], [one]) => Ok(Principal::Group(one.id)),
        ([], []) => Err(Refused(format!(
            "`{given}` is no identity's username or email and no group you can see; write identity:ID, group:ID, all_authenticated_users or public"
        ))
        .into()),
        _ => Err(Refused(format!(
            "`{given}` names several identities or groups; write identity:ID or group:ID"
        ))
        .into()),
    }
}

fn describe_group(g: &GroupInfo) -> String {
    let mut out = format!(
        "{}\n  name:        {}\n  description: {}\n  parent:      {}\n  visibility:  {}, members visible to {}, join requests {}\n  you:         {}",
        g.id,
        g.name,
        g.description,
        g.parent_id.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        wire_name(&g.policies.visibility),
        wire_name(&g.policies.members_visibility),
        if g.policies.join_requests { "allowed" } else { "not allowed" },
        match (g.my_role, g.my_status) {
            (Some(r), Some(s)) => format!("{r:?} ({s:?})").to_lowercase(),
            _ => "not a member".into(),
        }
    );
    if let Some(members) = &g.members {
        out.push_str(&format!("\n  members ({}):", members.len()));
        for m in members {
            out.push_str(&format!("\n    {}", member_line(m)));
        }
    }
    out
}

/// A unit enum as the API spells it (`authenticated`, `managers`, ...).
fn wire_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn member_line(m: &MemberInfo) -> String {
    let who = match (&m.username, m.identity_id, &m.email) {
        (Some(u), Some(id), _) => format!("{u} (identity:{id})"),
        (None, Some(id), _) => format!("identity:{id}"),
        (_, None, Some(email)) => format!("{email} (not logged in yet)"),
        _ => "?".into(),
    };
    format!(
        "{:<8} {:<9} {who}",
        format!("{:?}", m.role).to_lowercase(),
        format!("{:?}", m.status).to_lowercase()
    )
}

/// Prints each action's outcome; fails (exit 4) if any action failed, so a
/// script never mistakes a partial failure for success.
fn report(ctx: &Context, result: MembershipBatchResult) -> anyhow::Result<()> {
    let failed = result.failed;
    ctx.output.emit(&result, |r| {
        r.results
            .iter()
            .map(|item| match (&item.member, &item.error) {
                (Some(m), _) => format!("ok      {:<12} {}", item.action, member_line(m)),
                (_, Some(e)) => format!("FAILED  {:<12} {}", item.action, e.message),
                _ => format!("?       {}", item.action),
            })
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    if failed > 0 {
        return Err(Refused(format!(
            "{failed} of {} action(s) failed",
            result.results.len()
        ))
        .into());
    }
    Ok(())
}

pub(crate) async fn group(ctx: &Context, command: GroupCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        GroupCommand::Create {
            name,
            description,
            parent,
            policies,
        } => {
            let parent_id = match parent {
                Some(p) => Some(group_id(&client, &p).await?),
                None => None,
            };
            let group = client
                .create_group(&GroupCreate {
                    name,
                    description,
                    parent_id,
                    policies: policies.apply(GroupPolicies::default()),
                })
                .await?;
            ctx.output.emit(&group, describe_group)
        }
        GroupCommand::List { all } => {
            let groups = client.groups(all).await?;
            ctx.output.emit(&groups, |groups| {
                if groups.is_empty() {
                    return "no groups (create one with `lattice group create NAME`)".into();
                }
                groups
                    .iter()
                    .map(|g| {
                        let you = match (g.my_role, g.my_status) {
                            (Some(r), Some(s)) => format!("{r:?} ({s:?})").to_lowercase(),
                            _ => "-".into(),
                        };
                        format!("{}  {:<24}  {you}", g.id, g.name)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        GroupCommand::Show { group } => {
            let id = group_id(&client, &group).await?;
            let info = client.group(id).await?;
            ctx.output.emit(&info, describe_group)
        }
        GroupCommand::Delete { group } => {
            let id = group_id(&client, &group).await?;
            client.delete_group(id).await?;
            eprintln!("Deleted group {id}.");
            Ok(())
        }
        GroupCommand::Invite {
            group,
            principals,
            role,
        } => {
            let id = group_id(&client, &group).await?;
            let mut actions = Vec::new();
            for p in &principals {
                let action = match identity_id(&client, p).await {
                    Ok(identity) => MembershipAction::Invite {
                        identity: Some(identity),
                        email: None,
                        role: role.into(),
                    },
                    // Someone who has never logged in: invite the address.
                    Err(_) if p.contains('@') && !p.contains(':') => MembershipAction::Invite {
                        identity: None,
                        email: Some(p.clone()),
                        role: role.into(),
                    },
                    Err(e) => return Err(e),
                };
                actions.push(action);
            }
            report(ctx, client.group_members(id, actions).await?)
        }
        GroupCommand::Join { group } => {
            let id = group_id(&client, &group).await?;
            let info = client.group(id).await?;
            let action =
                if info.my_status == Some(lattice_protocol::sharing::MembershipStatus::Invited) {
                    MembershipAction::Accept
                } else {
                    MembershipAction::Request
                };
            report(ctx, client.group_members(id, vec![action]).await?)
        }
        GroupCommand::Decline { group } => {
            let id = group_id(&client, &group).await?;
            report(
                ctx,
                client
                    .group_members(id, vec![MembershipAction::Decline])
                    .await?,
            )
        }
        GroupCommand::Leave { group } => {
            let id = group_id(&client, &group).await?;
            report(
                ctx,
                client
                    .group_members(id, vec![MembershipAction::Leave])
                    .await?,
            )
        }
        GroupCommand::Member(command) => {
            let (group, actions) = match command {
                MemberCommand::Add {
                    group,
                    identities,
                    role,
                } => {
                    let mut actions = Vec::new();
                    for i in &identities {
                        actions.push(MembershipAction::Add {
                            identity: identity_id(&client, i).await?,
                            role: role.into(),
                        });
                    }
                    (group, actions)
                }
                MemberCommand::Remove { group, identities } => {
                    let mut actions = Vec::new();
                    for i in &identities {
                        actions.push(MembershipAction::Remove {
                            identity: identity_id(&client, i).await?,
                        });
                    }
                    (group, actions)
                }
                MemberCommand::Role {
                    group,
                    identity,
                    role,
                } => {
                    let action = MembershipAction::ChangeRole {
                        identity: identity_id(&client, &identity).await?,
                        role: role.into(),
                    };
                    (group, vec![action])
                }
            };
            let id = group_id(&client, &group).await?;
            report(ctx, client.group_members(id, actions).await?)
        }
        GroupCommand::Request(command) => {
            let (group, identities, approve) = match command {
                RequestCommand::Approve { group, identities } => (group, identities, true),
                RequestCommand::Reject { group, identities } => (group, identities, false),
            };
            let mut actions = Vec::new();
            for i in &identities {
                let identity = identity_id(&client, i).await?;
                actions.push(if approve {
                    MembershipAction::Approve { identity }
                } else {
                    MembershipAction::Reject { identity }
                });
            }
            let id = group_id(&client, &group).await?;
            report(ctx, client.group_members(id, actions).await?)
        }
        GroupCommand::SetPolicy {
            group,
            policies,
            name,
            description,
            parent,
            no_parent,
        } => {
            let id = group_id(&client, &group).await?;
            if policies.is_empty()
                && name.is_none()
                && description.is_none()
                && parent.is_none()
                && !no_parent
            {
                return Err(UsageError(
                    "nothing to change: give --visibility, --members-visibility, --join-requests, --name, --description, --parent or --no-parent".into(),
                )
                .into());
            }
            let current = client.group(id).await?;
            let parent_id = match (parent, no_parent) {
                (Some(p), _) => Some(Some(group_id(&client, &p).await?)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let update = GroupUpdate {
                name,
                description,
                parent_id,
                policies: (!policies.is_empty()).then(|| policies.apply(current.policies)),
            };
            let info = client.update_group(id, &update).await?;
            ctx.output.emit(&info, describe_group)
        }
        GroupCommand::Audit { group } => {
            let id = group_id(&client, &group).await?;
            let entries = client.group_audit(id).await?;
            ctx.output.emit(&entries, |e| audit_table(e))
        }
    }
}

fn audit_table(entries: &[AuditEntry]) -> String {
    if entries.is_empty() {
        return "no changes recorded".into();
    }
    entries
        .iter()
        .map(|e| {
            format!(
                "{}  {:<14} by identity:{}{}  {}",
                e.time.to_rfc3339(),
                e.action,
                e.actor,
                e.client_id
                    .map(|c| format!(" (client {c})"))
                    .unwrap_or_default(),
                e.detail
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum PermissionsArg {
    /// Read: list, stat, transfer from.
    R,
    /// Read and write: also mkdir, rename, delete, transfer to.
    Rw,
}

impl From<PermissionsArg> for Permissions {
    fn from(p: PermissionsArg) -> Self {
        match p {
            PermissionsArg::R => Permissions::Read,
            PermissionsArg::Rw => Permissions::ReadWrite,
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum AclCommand {
    /// Grant a principal access under a path: `lattice acl add
    /// results:/shared/ group:ID --permissions r --expires 30d`. A path
    /// ending in `/` is a directory and everything beneath it; otherwise
    /// one file.
    Add {
        /// COLLECTION:/PATH
        target: String,
        /// identity:ID, group:ID, all_authenticated_users, public, or a
        /// username, email or group name.
        principal: String,
        /// r (read) or rw (read and write).
        #[arg(long, value_enum)]
        permissions: PermissionsArg,
        /// When the rule stops granting: RFC 3339 or a duration from now
        /// (30m, 12h, 30d).
        #[arg(long, value_name = "TIME", value_parser = parse_deadline)]
        expires: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// The collection's access rules (owner, administrators, access managers).
    List {
        /// Collection id or name.
        collection: String,
    },
    /// One rule.
    Show {
        /// Collection id or name.
        collection: String,
        /// Rule id (`lattice acl list COLLECTION` shows them).
        #[arg(value_parser = id_of::<AclRuleId>("rule", "`lattice acl list COLLECTION`"))]
        rule: AclRuleId,
    },
    /// Change a rule's permissions or expiry.
    Update {
        /// Collection id or name.
        collection: String,
        /// Rule id (`lattice acl list COLLECTION` shows them).
        #[arg(value_parser = id_of::<AclRuleId>("rule", "`lattice acl list COLLECTION`"))]
        rule: AclRuleId,
        /// New permissions: r or rw.
        #[arg(long, value_enum)]
        permissions: Option<PermissionsArg>,
        /// New expiry: RFC 3339 or a duration from now (30m, 12h, 30d).
        #[arg(long, value_name = "TIME", value_parser = parse_deadline, conflicts_with = "no_expiry")]
        expires: Option<chrono::DateTime<chrono::Utc>>,
        /// Remove the expiry.
        #[arg(long)]
        no_expiry: bool,
    },
    /// Delete a rule: access it granted ends at once (running transfers
    /// stop at their next item).
    Delete {
        /// Collection id or name.
        collection: String,
        /// Rule id (`lattice acl list COLLECTION` shows them).
        #[arg(value_parser = id_of::<AclRuleId>("rule", "`lattice acl list COLLECTION`"))]
        rule: AclRuleId,
    },
}

fn rule_line(r: &AclRuleInfo) -> String {
    format!(
        "{}  {:<2}  {:<24}  {}{}",
        r.id,
        r.permissions.as_str(),
        r.path,
        r.principal,
        r.expires_at
            .map(|t| format!("  (expires {})", t.to_rfc3339()))
            .unwrap_or_default()
    )
}

pub(crate) async fn acl(ctx: &Context, command: AclCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        AclCommand::Add {
            target,
            principal: given,
            permissions,
            expires,
        } => {
            let (collection, path) = split_target(&target)?;
            let principal = principal(&client, &given).await?;
            let rule = client
                .create_acl_rule(
                    &collection,
                    &AclRuleCreate {
                        principal,
                        path,
                        permissions: permissions.into(),
                        expires_at: expires,
                    },
                )
                .await?;
            ctx.output.emit(&rule, rule_line)
        }
        AclCommand::List { collection } => {
            let rules = client.acl_rules(&collection).await?;
            ctx.output.emit(&rules, |rules| {
                if rules.is_empty() {
                    return "no access rules: only the owner can use this collection".into();
                }
                rules.iter().map(rule_line).collect::<Vec<_>>().join("\n")
            })
        }
        AclCommand::Show { collection, rule } => {
            let rule = client.acl_rule(&collection, rule).await?;
            ctx.output.emit(&rule, rule_line)
        }
        AclCommand::Update {
            collection,
            rule,
            permissions,
            expires,
            no_expiry,
        } => {
            if permissions.is_none() && expires.is_none() && !no_expiry {
                return Err(UsageError(
                    "nothing to change: give --permissions, --expires or --no-expiry".into(),
                )
                .into());
            }
            let update = AclRuleUpdate {
                permissions: permissions.map(Into::into),
                expires_at: match (expires, no_expiry) {
                    (Some(t), _) => Some(Some(t)),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
            };
            let rule = client.update_acl_rule(&collection, rule, &update).await?;
            ctx.output.emit(&rule, rule_line)
        }
        AclCommand::Delete { collection, rule } => {
            client.delete_acl_rule(&collection, rule).await?;
            eprintln!("Deleted access rule {rule}.");
            Ok(())
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum CollectionRoleArg {
    /// Everything the owner can manage, roles included.
    Administrator,
    /// Manage access rules.
    AccessManager,
    /// See, pause and cancel transfers that touch the collection.
    ActivityManager,
    /// See transfers that touch the collection.
    ActivityMonitor,
}

impl From<CollectionRoleArg> for CollectionRole {
    fn from(r: CollectionRoleArg) -> Self {
        match r {
            CollectionRoleArg::Administrator => CollectionRole::Administrator,
            CollectionRoleArg::AccessManager => CollectionRole::AccessManager,
            CollectionRoleArg::ActivityManager => CollectionRole::ActivityManager,
            CollectionRoleArg::ActivityMonitor => CollectionRole::ActivityMonitor,
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum RoleCommand {
    /// Grant a role: `lattice collection role add results alice access-manager`.
    Add {
        /// Collection id or name.
        collection: String,
        /// identity:ID, group:ID, all_authenticated_users, public, or a username, email or group name.
        principal: String,
        /// The role to grant.
        #[arg(value_enum)]
        role: CollectionRoleArg,
    },
    /// The collection's roles.
    List {
        /// Collection id or name.
        collection: String,
    },
    /// Revoke a role.
    Delete {
        /// Collection id or name.
        collection: String,
        /// Role id (`lattice collection role list COLLECTION` shows them).
        #[arg(value_parser = id_of::<RoleId>("role", "`lattice collection role list COLLECTION`"))]
        role: RoleId,
    },
}

fn role_line(r: &RoleInfo) -> String {
    format!("{}  {:<16}  {}", r.id, r.role.as_str(), r.principal)
}

pub(crate) async fn role(ctx: &Context, command: RoleCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        RoleCommand::Add {
            collection,
            principal: given,
            role,
        } => {
            let principal = principal(&client, &given).await?;
            let role = client
                .create_role(
                    &collection,
                    &RoleCreate {
                        principal,
                        role: role.into(),
                    },
                )
                .await?;
            ctx.output.emit(&role, role_line)
        }
        RoleCommand::List { collection } => {
            let roles = client.roles(&collection).await?;
            ctx.output.emit(&roles, |roles| {
                if roles.is_empty() {
                    return "no roles granted".into();
                }
                roles.iter().map(role_line).collect::<Vec<_>>().join("\n")
            })
        }
        RoleCommand::Delete { collection, role } => {
            client.delete_role(&collection, role).await?;
            eprintln!("Revoked role {role}.");
            Ok(())
        }
    }
}

pub(crate) async fn collection_audit(ctx: &Context, collection: &str) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let entries = client.collection_audit(collection).await?;
    ctx.output.emit(&entries, |e| audit_table(e))
}

#[derive(Args, Debug)]
pub(crate) struct ShareArgs {
    /// HOST_COLLECTION:/path/ (a directory).
    target: String,
    /// The new collection's name (letters, digits, `-`, `_`, `.`).
    #[arg(long)]
    name: String,
}

pub(crate) async fn share(ctx: &Context, args: ShareArgs) -> anyhow::Result<()> {
    let (host, path) = split_target(&args.target)?;
    let path = if path.ends_with('/') {
        path
    } else {
        format!("{path}/")
    };
    let client = ctx.client().await?;
    let created = client
        .create_guest_collection(
            &host,
            &GuestCollectionCreate {
                path,
                name: args.name,
            },
        )
        .await?;
    ctx.output.emit(&created, |c| {
        format!(
            "{}\n  guest collection `{}` of `{}` at {}\n  share it: lattice acl add {}:/ PRINCIPAL --permissions r",
            c.id,
            c.name,
            host,
            c.host_path.as_deref().unwrap_or("/"),
            c.name
        )
    })
}

#[derive(Args, Debug)]
pub(crate) struct PolicyCommandArgs {
    /// Collection id or name.
    collection: String,
    /// Allow or forbid guest collections altogether.
    #[arg(long, value_name = "true|false")]
    guest_collections: Option<bool>,
    /// A path rule `/dir/=MODE` with MODE none, read or read_write
    /// (repeatable; replaces all path rules; the longest match wins).
    #[arg(long = "path", value_name = "/DIR/=MODE", value_parser = parse_share_path)]
    paths: Vec<SharePath>,
}

fn parse_share_path(text: &str) -> Result<SharePath, String> {
    let (path, mode) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("`{text}`: expected /DIR/=MODE, e.g. /projects/=read"))?;
    let mode = match mode {
        "none" => ShareMode::None,
        "read" => ShareMode::Read,
        "read_write" => ShareMode::ReadWrite,
        other => {
            return Err(format!(
                "`{other}`: the modes are none, read and read_write"
            ))
        }
    };
    Ok(SharePath {
        path: path.to_owned(),
        mode,
    })
}

pub(crate) async fn sharing_policy(ctx: &Context, args: PolicyCommandArgs) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let mut policy = client.sharing_policy(&args.collection).await?;
    if args.guest_collections.is_some() || !args.paths.is_empty() {
        if let Some(allowed) = args.guest_collections {
            policy.guest_collections = allowed;
        }
        if !args.paths.is_empty() {
            policy.paths = args.paths;
        }
        policy = client.set_sharing_policy(&args.collection, &policy).await?;
    }
    ctx.output.emit(&policy, |p| {
        let mut out = format!(
            "guest collections: {}",
            if p.guest_collections {
                "allowed"
            } else {
                "not allowed"
            }
        );
        for line in &p.paths {
            out.push_str(&format!("\n  {:<24} {:?}", line.path, line.mode));
        }
        out
    })
}

/// `lattice function share|unshare|shares` and the same for endpoints.
#[derive(Subcommand, Debug)]
pub(crate) enum GrantCommand {
    /// Let principals use it: run the function, or submit tasks to the
    /// endpoint (a multi-user endpoint then takes tasks from its grantees
    /// only).
    Share {
        /// Function or endpoint id or name.
        target: String,
        /// identity:ID, group:ID, all_authenticated_users, or a username,
        /// email or group name.
        principals: Vec<String>,
        /// Anyone with a token (functions only).
        #[arg(long)]
        public: bool,
    },
    /// Revoke a grant: new submissions are checked, running tasks finish.
    Unshare {
        /// Function or endpoint id or name.
        target: String,
        /// The principal to revoke (as `shares` lists it).
        principal: String,
    },
    /// Who it is shared with.
    Shares {
        /// Function or endpoint id or name.
        target: String,
    },
}

/// What a [`GrantCommand`] is about.
#[derive(Clone, Copy, Debug)]
pub(crate) enum GrantTarget {
    Function,
    Endpoint,
}

pub(crate) async fn grants(
    ctx: &Context,
    kind: GrantTarget,
    command: GrantCommand,
) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let path = |given: String| {
        let client = client.clone();
        async move {
            Ok::<_, anyhow::Error>(match kind {
                GrantTarget::Function => format!(
                    "v1/functions/{}/grants",
                    crate::commands::functions::resolve(&client, &given).await?
                ),
                GrantTarget::Endpoint => format!(
                    "v1/endpoints/{}/grants",
                    crate::commands::endpoints::resolve(&client, &given).await?
                ),
            })
        }
    };
    let show = |list: &Vec<Principal>| {
        if list.is_empty() {
            "not shared: only its owner uses it".to_owned()
        } else {
            list.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    match command {
        GrantCommand::Share {
            target,
            principals,
            public,
        } => {
            let mut resolved = Vec::new();
            for given in &principals {
                resolved.push(principal(&client, given).await?);
            }
            if public {
                resolved.push(Principal::Public);
            }
            if resolved.is_empty() {
                return Err(UsageError("give at least one principal (or --public)".into()).into());
            }
            let list: Vec<Principal> = client
                .post(
                    &path(target).await?,
                    &GrantsAdd {
                        principals: resolved,
                    },
                )
                .await?;
            ctx.output.emit(&list, show)
        }
        GrantCommand::Unshare {
            target,
            principal: given,
        } => {
            let resolved = principal(&client, &given).await?;
            client
                .revoke_grant(&format!("{}/{resolved}", path(target).await?))
                .await?;
            eprintln!("Revoked the grant to {resolved}.");
            Ok(())
        }
        GrantCommand::Shares { target } => {
            let list: Vec<Principal> = client.get(&path(target).await?).await?;
            ctx.output.emit(&list, show)
        }
    }
}
