//! The membership state machine: given who acts (and their own
//! membership), the row the action is about, the group's policies and how
//! many active admins it has, what the row becomes, or why the action is
//! refused. Pure (the clock is passed in); `groups.rs` loads the rows and
//! stores the result.

use chrono::{DateTime, Utc};
use lattice_protocol::sharing::{GroupRole, MembershipAction, MembershipStatus};
use lattice_protocol::{GroupId, IdentityId};

use super::SharingError;
use crate::store::{GroupRecord, MembershipRecord};

/// Everything one action is decided on.
pub(crate) struct Decision<'a> {
    pub group: &'a GroupRecord,
    /// The acting identity's own membership row.
    pub actor: Option<&'a MembershipRecord>,
    /// The row the action is about (the actor's own for accept, decline,
    /// request and leave); `None` if there is none yet.
    pub target: Option<&'a MembershipRecord>,
    /// Who the target is: an identity, or an email for an invitation.
    pub target_identity: Option<IdentityId>,
    pub target_email: Option<&'a str>,
    /// Active admins of the group now.
    pub active_admins: usize,
    pub now: DateTime<Utc>,
}

fn active_role(row: Option<&MembershipRecord>) -> Option<GroupRole> {
    row.filter(|m| m.status == MembershipStatus::Active)
        .map(|m| m.role)
}

fn status_of(row: Option<&MembershipRecord>) -> Option<MembershipStatus> {
    row.map(|m| m.status)
}

impl Decision<'_> {
    fn row(&self, role: GroupRole, status: MembershipStatus) -> MembershipRecord {
        MembershipRecord {
            group_id: self.group.id,
            identity_id: self.target_identity,
            email: self
                .target_email
                .map(str::to_owned)
                .or_else(|| self.target.and_then(|t| t.email.clone())),
            role,
            status,
            created_at: self.target.map(|t| t.created_at).unwrap_or(self.now),
            updated_at: self.now,
        }
    }

    /// The actor must be an active admin or manager; a manager may not
    /// act on admins or grant the admin role.
    fn require_manager(
        &self,
        action: &str,
        role_involved: Option<GroupRole>,
    ) -> Result<GroupRole, SharingError> {
        match active_role(self.actor) {
            Some(GroupRole::Admin) => Ok(GroupRole::Admin),
            Some(GroupRole::Manager) if role_involved == Some(GroupRole::Admin) => Err(
                SharingError::Denied(format!("only an admin of the group may {action} an admin")),
            ),
            Some(GroupRole::Manager) => Ok(GroupRole::Manager),
            _ => Err(SharingError::Denied(format!(
                "only admins and managers of the group may {action} members"
            ))),
        }
    }

    fn is_last_admin(&self, row: Option<&MembershipRecord>) -> bool {
        active_role(row) == Some(GroupRole::Admin) && self.active_admins <= 1
    }

    /// What the target row becomes under `action`.
    pub(crate) fn apply(
        &self,
        action: &MembershipAction,
    ) -> Result<MembershipRecord, SharingError> {
        use MembershipStatus::*;
        let target_status = status_of(self.target);
        let conflict = |why: String| Err(SharingError::Conflict(why));
        match action {
            MembershipAction::Add { role, .. } => {
                self.require_manager("add", Some(*role))?;
                if target_status == Some(Active) {
                    return conflict("the identity is already an active member".into());
                }
                Ok(self.row(*role, Active))
            }
            MembershipAction::Invite { role, .. } => {
                self.require_manager("invite", Some(*role))?;
                match target_status {
                    Some(Active) => conflict("the identity is already an active member".into()),
                    Some(Invited) => conflict("already invited; the invitation is pending".into()),
                    _ => Ok(self.row(*role, Invited)),
                }
            }
            MembershipAction::Accept | MembershipAction::Decline => {
                if target_status != Some(Invited) {
                    return conflict("you have no pending invitation to this group".into());
                }
                let role = self.target.map(|t| t.role).unwrap_or(GroupRole::Member);
                let status = if *action == MembershipAction::Accept { Active } else { Declined };
                Ok(self.row(role, status))
            }
            MembershipAction::Request => {
                if !self.group.policies.join_requests {
                    return Err(SharingError::Denied(
                        "this group does not accept join requests; ask an admin to invite you".into(),
                    ));
                }
                match target_status {
                    Some(Active) => conflict("you are already an active member".into()),
                    Some(Pending) => conflict("your join request is already pending".into()),
                    Some(Invited) => conflict("you are invited: accept the invitation instead".into()),
                    _ => Ok(self.row(GroupRole::Member, Pending)),
                }
            }
            MembershipAction::Approve { .. } | MembershipAction::Reject { .. } => {
                let verb = action.name();
                self.require_manager(verb, None)?;
                if target_status != Some(Pending) {
                    return conflict(format!("there is no pending join request to {verb}"));
                }
                let status = if verb == "approve" { Active } else { Rejected };
                Ok(self.row(GroupRole::Member, status))
            }
            MembershipAction::ChangeRole { role, .. } => {
                if active_role(self.actor) != Some(GroupRole::Admin) {
                    return Err(SharingError::Denied(
                        "only an admin of the group may change roles".into(),
                    ));
                }
                if target_status != Some(Active) {
                    return conflict("only an active member's role can change".into());
                }
                if *role != GroupRole::Admin && self.is_last_admin(self.target) {
                    return conflict(
                        "this is the group's last admin; make another member admin first".into(),
                    );
                }
                Ok(self.row(*role, Active))
            }
            MembershipAction::Remove { .. } => {
                let target_role = self.target.map(|t| t.role);
                self.require_manager("remove", target_role)?;
                if self.target.is_some()
                    && self.target.and_then(|t| t.identity_id) == self.actor.and_then(|a| a.identity_id)
                {
                    return Err(SharingError::Invalid(
                        "to remove yourself, leave the group".into(),
                    ));
                }
                match target_status {
                    Some(Active) | Some(Invited) | Some(Pending) => {}
                    _ => return conflict("the identity is not a member of this group".into()),
                }
                if self.is_last_admin(self.target) {
                    return conflict("the group's last admin cannot be removed".into());
                }
                Ok(self.row(target_role.unwrap_or(GroupRole::Member), Removed))
            }
            MembershipAction::Leave => match target_status {
                Some(Active) if self.is_last_admin(self.target) => conflict(
                    "the last admin cannot leave; make another member admin first (or delete the group)"
                        .into(),
                ),
                Some(Active) | Some(Pending) => {
                    Ok(self.row(self.target.map(|t| t.role).unwrap_or(GroupRole::Member), Left))
                }
                _ => conflict("you are not a member of this group".into()),
            },
        }
    }
}

/// Whether making `parent` the parent of `group` would make `group` its
/// own ancestor; `parent_ancestors` are the parent's ancestors.
pub(crate) fn makes_cycle(group: GroupId, parent: GroupId, parent_ancestors: &[GroupId]) -> bool {
    parent == group || parent_ancestors.contains(&group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_protocol::sharing::GroupPolicies;

    fn group(join_requests: bool) -> GroupRecord {
        GroupRecord {
            id: GroupId::new(),
            name: "lab".into(),
            description: String::new(),
            parent_id: None,
            policies: GroupPolicies {
                join_requests,
                ..GroupPolicies::default()
            },
            created_by: IdentityId::new(),
            created_at: Utc::now(),
        }
    }

    fn row(
        group: &GroupRecord,
        who: IdentityId,
        role: GroupRole,
        status: MembershipStatus,
    ) -> MembershipRecord {
        MembershipRecord {
            group_id: group.id,
            identity_id: Some(who),
            email: None,
            role,
            status,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    struct Case {
        group: GroupRecord,
        actor: Option<MembershipRecord>,
        target: Option<MembershipRecord>,
        target_id: IdentityId,
        admins: usize,
    }

    impl Case {
        fn new(
            actor: Option<(GroupRole, MembershipStatus)>,
            target: Option<(GroupRole, MembershipStatus)>,
        ) -> Self {
            let group = group(true);
            let (a, t) = (IdentityId::new(), IdentityId::new());
            Case {
                actor: actor.map(|(r, s)| row(&group, a, r, s)),
                target: target.map(|(r, s)| row(&group, t, r, s)),
                group,
                target_id: t,
                admins: 1,
            }
        }

        fn apply(&self, action: MembershipAction) -> Result<MembershipRecord, SharingError> {
            Decision {
                group: &self.group,
                actor: self.actor.as_ref(),
                target: self.target.as_ref(),
                target_identity: Some(self.target_id),
                target_email: None,
                active_admins: self.admins,
                now: Utc::now(),
            }
            .apply(&action)
        }
    }

    use GroupRole::*;
    use MembershipStatus::*;

    fn denied(r: Result<MembershipRecord, SharingError>) -> String {
        match r {
            Err(SharingError::Denied(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn conflicted(r: Result<MembershipRecord, SharingError>) -> String {
        match r {
            Err(SharingError::Conflict(why)) => why,
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn admins_and_managers_add_members_plain_members_cannot() {
        let id = IdentityId::new();
        let add = |role| MembershipAction::Add { identity: id, role };
        assert_eq!(
            Case::new(Some((Admin, Active)), None)
                .apply(add(Member))
                .unwrap()
                .status,
            Active
        );
        assert_eq!(
            Case::new(Some((Manager, Active)), None)
                .apply(add(Member))
                .unwrap()
                .role,
            Member
        );
        denied(Case::new(Some((Member, Active)), None).apply(add(Member)));
        denied(Case::new(None, None).apply(add(Member)));
        // An invited admin is not an admin yet.
        denied(Case::new(Some((Admin, Invited)), None).apply(add(Member)));
        // Managers cannot make admins.
        let why = denied(Case::new(Some((Manager, Active)), None).apply(add(Admin)));
        assert!(why.contains("only an admin"), "{why}");
        conflicted(Case::new(Some((Admin, Active)), Some((Member, Active))).apply(add(Member)));
    }

    #[test]
    fn invitations_are_accepted_or_declined_by_the_invitee_only() {
        let invite = MembershipAction::Invite {
            identity: Some(IdentityId::new()),
            email: None,
            role: Manager,
        };
        let invited = Case::new(Some((Admin, Active)), None)
            .apply(invite.clone())
            .unwrap();
        assert_eq!((invited.status, invited.role), (Invited, Manager));
        conflicted(Case::new(Some((Admin, Active)), Some((Member, Invited))).apply(invite));
        // The invitee acts on their own row (actor == target).
        let accepted = Case::new(None, Some((Manager, Invited)))
            .apply(MembershipAction::Accept)
            .unwrap();
        assert_eq!((accepted.status, accepted.role), (Active, Manager));
        let declined = Case::new(None, Some((Member, Invited)))
            .apply(MembershipAction::Decline)
            .unwrap();
        assert_eq!(declined.status, Declined);
        conflicted(Case::new(None, None).apply(MembershipAction::Accept));
        conflicted(Case::new(None, Some((Member, Removed))).apply(MembershipAction::Accept));
    }

    #[test]
    fn join_requests_follow_the_policy_and_are_approved_by_managers() {
        let pending = Case::new(None, None)
            .apply(MembershipAction::Request)
            .unwrap();
        assert_eq!(pending.status, Pending);
        let mut closed = Case::new(None, None);
        closed.group.policies.join_requests = false;
        denied(closed.apply(MembershipAction::Request));
        conflicted(Case::new(None, Some((Member, Pending))).apply(MembershipAction::Request));
        conflicted(Case::new(None, Some((Member, Active))).apply(MembershipAction::Request));
        // Someone who left may ask again.
        assert!(Case::new(None, Some((Member, Left)))
            .apply(MembershipAction::Request)
            .is_ok());

        let approve = MembershipAction::Approve {
            identity: IdentityId::new(),
        };
        let reject = MembershipAction::Reject {
            identity: IdentityId::new(),
        };
        assert_eq!(
            Case::new(Some((Manager, Active)), Some((Member, Pending)))
                .apply(approve.clone())
                .unwrap()
                .status,
            Active
        );
        assert_eq!(
            Case::new(Some((Admin, Active)), Some((Member, Pending)))
                .apply(reject)
                .unwrap()
                .status,
            Rejected
        );
        denied(Case::new(Some((Member, Active)), Some((Member, Pending))).apply(approve.clone()));
        conflicted(Case::new(Some((Admin, Active)), Some((Member, Invited))).apply(approve));
    }

    #[test]
    fn only_admins_change_roles_and_nobody_promotes_themselves() {
        let promote = MembershipAction::ChangeRole {
            identity: IdentityId::new(),
            role: Admin,
        };
        assert_eq!(
            Case::new(Some((Admin, Active)), Some((Member, Active)))
                .apply(promote.clone())
                .unwrap()
                .role,
            Admin
        );
        // A manager (or member) asking for admin, for themselves or others.
        denied(Case::new(Some((Manager, Active)), Some((Manager, Active))).apply(promote.clone()));
        denied(Case::new(Some((Member, Active)), Some((Member, Active))).apply(promote));
        // The last admin cannot step down.
        let demote = MembershipAction::ChangeRole {
            identity: IdentityId::new(),
            role: Member,
        };
        let why = conflicted(
            Case::new(Some((Admin, Active)), Some((Admin, Active))).apply(demote.clone()),
        );
        assert!(why.contains("last admin"), "{why}");
        let mut two = Case::new(Some((Admin, Active)), Some((Admin, Active)));
        two.admins = 2;
        assert_eq!(two.apply(demote).unwrap().role, Member);
    }

    #[test]
    fn removal_and_leaving_protect_the_last_admin() {
        let remove = MembershipAction::Remove {
            identity: IdentityId::new(),
        };
        assert_eq!(
            Case::new(Some((Manager, Active)), Some((Member, Active)))
                .apply(remove.clone())
                .unwrap()
                .status,
            Removed
        );
        denied(Case::new(Some((Manager, Active)), Some((Admin, Active))).apply(remove.clone()));
        denied(Case::new(Some((Member, Active)), Some((Member, Active))).apply(remove.clone()));
        conflicted(Case::new(Some((Admin, Active)), Some((Member, Left))).apply(remove.clone()));
        let mut two = Case::new(Some((Admin, Active)), Some((Admin, Active)));
        two.admins = 2;
        assert_eq!(two.apply(remove).unwrap().status, Removed);

        let why = conflicted(Case::new(None, Some((Admin, Active))).apply(MembershipAction::Leave));
        assert!(why.contains("last admin"), "{why}");
        assert_eq!(
            Case::new(None, Some((Member, Active)))
                .apply(MembershipAction::Leave)
                .unwrap()
                .status,
            Left
        );
        conflicted(Case::new(None, Some((Member, Removed))).apply(MembershipAction::Leave));
    }

    #[test]
    fn a_group_cannot_become_its_own_ancestor() {
        let (a, b, c) = (GroupId::new(), GroupId::new(), GroupId::new());
        // c's ancestors are b, a: making a's parent c closes a loop.
        assert!(makes_cycle(a, c, &[b, a]));
        assert!(makes_cycle(a, a, &[]));
        assert!(!makes_cycle(c, a, &[]));
    }
}
