//! Who is asking, as a set of principals: the identity, the identities
//! linked with it, every group it is an effective member of (active
//! memberships and, through subgroups, their ancestors),
//! `all_authenticated_users`, and `public`. An anonymous viewer is only
//! `public`.
//!
//! Every permission check of the service matches grants against a
//! [`Viewer`]; nothing else decides who a principal is.

use std::collections::HashSet;

use lattice_protocol::sharing::Principal;
use lattice_protocol::{GroupId, IdentityId};

use crate::store::{SharedStore, StoreResult};

/// The principals of one caller, loaded once per request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Viewer {
    /// The identity that called; `None` for an anonymous request.
    pub identity: Option<IdentityId>,
    /// The identity and every identity linked with it.
    identities: Vec<IdentityId>,
    groups: HashSet<GroupId>,
}

impl Viewer {
    /// A request without a token: only `public` grants apply.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Loads the linked identities and effective groups of `identity`.
    pub async fn of(store: &SharedStore, identity: IdentityId) -> StoreResult<Self> {
        let primary = store.primary_identity(identity).await?;
        let mut identities: Vec<IdentityId> = store
            .linked_identities(primary)
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect();
        if !identities.contains(&identity) {
            identities.push(identity);
        }
        let groups = store
            .effective_groups(&identities)
            .await?
            .into_iter()
            .collect();
        Ok(Self {
            identity: Some(identity),
            identities,
            groups,
        })
    }

    /// A viewer with exactly these principals (for unit tests of the
    /// pure decisions).
    #[cfg(test)]
    pub(crate) fn with(identity: IdentityId, groups: &[GroupId]) -> Self {
        Self {
            identity: Some(identity),
            identities: vec![identity],
            groups: groups.iter().copied().collect(),
        }
    }

    /// Whether `id` is this viewer (or linked with it).
    pub fn is(&self, id: IdentityId) -> bool {
        self.identities.contains(&id)
    }

    pub fn is_authenticated(&self) -> bool {
        self.identity.is_some()
    }

    /// The identities this viewer acts as (the caller and linked ones).
    pub fn identities(&self) -> &[IdentityId] {
        &self.identities
    }

    /// Whether a grant to `principal` applies to this viewer.
    pub fn matches(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Public => true,
            Principal::AllAuthenticatedUsers => self.is_authenticated(),
            Principal::Identity(id) => self.is(*id),
            Principal::Group(id) => self.groups.contains(id),
        }
    }

    /// Every principal this viewer matches, for store queries.
    pub fn principals(&self) -> Vec<Principal> {
        let mut out = vec![Principal::Public];
        if self.is_authenticated() {
            out.push(Principal::AllAuthenticatedUsers);
        }
        out.extend(self.identities.iter().map(|i| Principal::Identity(*i)));
        out.extend(self.groups.iter().map(|g| Principal::Group(*g)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grant to one identity counts for every identity linked with it,
    /// and a group membership of a linked identity counts too.
    #[tokio::test]
    async fn linked_identities_and_their_groups_are_one_viewer() {
        use crate::store::testing::TestStore;
        use crate::store::{GroupRecord, MembershipRecord};
        use lattice_protocol::api::Identity;
        use lattice_protocol::sharing::{GroupPolicies, GroupRole, MembershipStatus};
        let test = TestStore::sqlite().await;
        let store = &test.store;
        let person = |subject: &str| Identity {
            id: IdentityId::new(),
            username: subject.into(),
            display_name: None,
            email: None,
            identity_provider: "https://idp.example.org".into(),
            subject: subject.into(),
            created_at: chrono::Utc::now(),
        };
        let (work, home, other) = (person("work"), person("home"), person("other"));
        for i in [&work, &home, &other] {
            store.insert_identity(i).await.unwrap();
        }
        store.link_identity(home.id, work.id).await.unwrap();
        let group = GroupRecord {
            id: GroupId::new(),
            name: "lab".into(),
            description: String::new(),
            parent_id: None,
            policies: GroupPolicies::default(),
            created_by: home.id,
            created_at: chrono::Utc::now(),
        };
        let membership = MembershipRecord {
            group_id: group.id,
            identity_id: Some(home.id),
            email: None,
            role: GroupRole::Admin,
            status: MembershipStatus::Active,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        store.insert_group(&group, &membership).await.unwrap();

        let viewer = Viewer::of(store, work.id).await.unwrap();
        assert!(viewer.matches(&Principal::Identity(work.id)));
        assert!(viewer.matches(&Principal::Identity(home.id)), "linked");
        assert!(
            viewer.matches(&Principal::Group(group.id)),
            "the linked identity's group"
        );
        assert!(!viewer.matches(&Principal::Identity(other.id)));
        let stranger = Viewer::of(store, other.id).await.unwrap();
        assert!(!stranger.matches(&Principal::Group(group.id)));
        assert!(!stranger.matches(&Principal::Identity(work.id)));
    }

    #[test]
    fn anonymous_viewers_match_public_only() {
        let viewer = Viewer::anonymous();
        assert!(viewer.matches(&Principal::Public));
        assert!(!viewer.matches(&Principal::AllAuthenticatedUsers));
        assert!(!viewer.matches(&Principal::Identity(IdentityId::new())));
        assert_eq!(viewer.principals(), vec![Principal::Public]);
    }

    #[test]
    fn identities_match_themselves_their_groups_and_everyone() {
        let me = IdentityId::new();
        let group = GroupId::new();
        let viewer = Viewer::with(me, &[group]);
        assert!(viewer.matches(&Principal::Identity(me)));
        assert!(!viewer.matches(&Principal::Identity(IdentityId::new())));
        assert!(viewer.matches(&Principal::Group(group)));
        assert!(!viewer.matches(&Principal::Group(GroupId::new())));
        assert!(viewer.matches(&Principal::AllAuthenticatedUsers));
        assert!(viewer.matches(&Principal::Public));
        assert_eq!(viewer.principals().len(), 4);
    }
}
