//! Who holds which role on a flow and on a run: pure decisions over a
//! [`Viewer`] and the stored role lists, so every route, the driver and
//! the listings apply the same rules.
//!
//! On a flow: the owner holds every role; `administrator` implies every
//! other role; `starter` implies `viewer`; `run_manager` implies
//! `run_monitor`. Anyone may hold `viewer` through `public`, and
//! `all_authenticated_users` may be a starter.
//!
//! On a run: its starter is `run_owner` (which can do everything a
//! manager can); `run_manager` comes from the run's own `run_managers`
//! or from the flow's owner, administrators and run managers;
//! `run_monitor` from the run's `run_monitors`, the flow's run monitors,
//! or any manager.

use std::collections::BTreeSet;
use std::str::FromStr;

use lattice_protocol::flows::FlowRoleName;
use lattice_protocol::sharing::Principal;

use crate::sharing::Viewer;
use crate::store::{FlowRecord, RunRecord};

/// The roles a viewer holds on a flow (implied roles included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowRoles {
    pub owner: bool,
    pub held: BTreeSet<FlowRoleName>,
}

impl FlowRoles {
    pub fn of(viewer: &Viewer, flow: &FlowRecord) -> Self {
        let owner = viewer.is(flow.owner);
        let mut held = BTreeSet::new();
        if owner {
            held.extend(FlowRoleName::ALL);
        }
        for (role, principal) in &flow.roles {
            if matches(viewer, principal) {
                held.insert(*role);
            }
        }
        if held.contains(&FlowRoleName::Administrator) {
            held.extend(FlowRoleName::ALL);
        }
        if held.contains(&FlowRoleName::Starter) {
            held.insert(FlowRoleName::Viewer);
        }
        if held.contains(&FlowRoleName::RunManager) {
            held.insert(FlowRoleName::RunMonitor);
        }
        Self { owner, held }
    }

    pub fn has(&self, role: FlowRoleName) -> bool {
        self.held.contains(&role)
    }

    /// Any role at all: the viewer may know the flow exists.
    pub fn any(&self) -> bool {
        !self.held.is_empty()
    }

    /// As the API lists them: `owner` first, then the roles by name.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.owner {
            out.push("owner".to_owned());
        }
        for role in &self.held {
            out.push(role_name(*role).to_owned());
        }
        out
    }
}

pub fn role_name(role: FlowRoleName) -> &'static str {
    match role {
        FlowRoleName::Administrator => "flow_administrator",
        FlowRoleName::Starter => "flow_starter",
        FlowRoleName::Viewer => "flow_viewer",
        FlowRoleName::RunManager => "run_manager",
        FlowRoleName::RunMonitor => "run_monitor",
    }
}

/// The roles a viewer holds on one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunRoles {
    pub owner: bool,
    pub manager: bool,
    pub monitor: bool,
}

impl RunRoles {
    /// `flow` is the run's flow when it still exists.
    pub fn of(viewer: &Viewer, run: &RunRecord, flow: Option<&FlowRecord>) -> Self {
        let owner = viewer.is(run.starter);
        let on_flow = flow.map(|f| FlowRoles::of(viewer, f)).unwrap_or_default();
        let manager = owner
            || on_flow.has(FlowRoleName::RunManager)
            || run.run_managers.iter().any(|p| matches(viewer, p));
        let monitor = manager
            || on_flow.has(FlowRoleName::RunMonitor)
            || run.run_monitors.iter().any(|p| matches(viewer, p));
        Self {
            owner,
            manager,
            monitor,
        }
    }

    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.owner {
            out.push("run_owner".to_owned());
        }
        if self.manager {
            out.push("run_manager".to_owned());
        }
        if self.monitor {
            out.push("run_monitor".to_owned());
        }
        out
    }
}

/// Whether `principal` (wire form) names the viewer; an unreadable
/// principal names no one.
pub fn matches(viewer: &Viewer, principal: &str) -> bool {
    Principal::from_str(principal).is_ok_and(|p| viewer.matches(&p))
}

/// Checks a role list: each entry a principal in its wire form, with
/// `public` only where `public_allowed`. Returns them in canonical form,
/// deduplicated, in order.
pub fn canonical_principals(
    field: &str,
    given: &[String],
    public_allowed: bool,
) -> Result<Vec<Principal>, String> {
    let mut out: Vec<Principal> = Vec::new();
    for p in given {
        let principal = Principal::from_str(p).map_err(|e| format!("{field}: {e}"))?;
        if principal == Principal::Public && !public_allowed {
            return Err(format!(
                "{field}: `public` may only view; use all_authenticated_users for anyone logged in"
            ));
        }
        if !out.contains(&principal) {
            out.push(principal);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use lattice_protocol::flows::RunStatus;
    use lattice_protocol::{FlowId, FlowRunId, IdentityId};
    use serde_json::json;

    fn flow(owner: IdentityId, roles: Vec<(FlowRoleName, String)>) -> FlowRecord {
        FlowRecord {
            id: FlowId::new(),
            owner,
            title: "t".into(),
            subtitle: String::new(),
            description: String::new(),
            keywords: vec![],
            definition: json!({}),
            input_schema: json!({}),
            roles,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn run(starter: IdentityId, managers: Vec<String>, monitors: Vec<String>) -> RunRecord {
        RunRecord {
            id: FlowRunId::new(),
            flow_id: FlowId::new(),
            flow_title: "t".into(),
            starter,
            request_id: None,
            label: None,
            tags: vec![],
            run_managers: managers,
            run_monitors: monitors,
            status: RunStatus::Active,
            transitions: 0,
            machine: String::new(),
            details: json!({}),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            completed_at: None,
        }
    }

    #[test]
    fn flow_roles_imply_the_lesser_ones() {
        let (owner, admin, starter, stranger) = (
            IdentityId::new(),
            IdentityId::new(),
            IdentityId::new(),
            IdentityId::new(),
        );
        let f = flow(
            owner,
            vec![
                (FlowRoleName::Administrator, format!("identity:{admin}")),
                (FlowRoleName::Starter, format!("identity:{starter}")),
                (FlowRoleName::Viewer, "public".into()),
            ],
        );
        let of = |id| FlowRoles::of(&Viewer::with(id, &[]), &f);
        assert!(of(owner).owner && of(owner).has(FlowRoleName::RunManager));
        assert!(!of(admin).owner && of(admin).has(FlowRoleName::Starter));
        let s = of(starter);
        assert!(s.has(FlowRoleName::Starter) && s.has(FlowRoleName::Viewer));
        assert!(!s.has(FlowRoleName::Administrator) && !s.has(FlowRoleName::RunMonitor));
        let x = of(stranger);
        assert_eq!(
            x.held.iter().copied().collect::<Vec<_>>(),
            vec![FlowRoleName::Viewer]
        );
        let anonymous = FlowRoles::of(&Viewer::anonymous(), &f);
        assert!(anonymous.has(FlowRoleName::Viewer) && !anonymous.has(FlowRoleName::Starter));
    }

    #[test]
    fn run_roles_come_from_the_run_and_from_its_flow() {
        let (owner, starter, manager, monitor, flow_monitor, stranger) = (
            IdentityId::new(),
            IdentityId::new(),
            IdentityId::new(),
            IdentityId::new(),
            IdentityId::new(),
            IdentityId::new(),
        );
        let f = flow(
            owner,
            vec![(FlowRoleName::RunMonitor, format!("identity:{flow_monitor}"))],
        );
        let r = run(
            starter,
            vec![format!("identity:{manager}")],
            vec![format!("identity:{monitor}")],
        );
        let of = |id| RunRoles::of(&Viewer::with(id, &[]), &r, Some(&f));
        assert_eq!(
            of(starter),
            RunRoles {
                owner: true,
                manager: true,
                monitor: true
            }
        );
        assert_eq!(
            of(owner),
            RunRoles {
                owner: false,
                manager: true,
                monitor: true
            }
        );
        assert_eq!(
            of(manager),
            RunRoles {
                owner: false,
                manager: true,
                monitor: true
            }
        );
        assert_eq!(
            of(monitor),
            RunRoles {
                owner: false,
                manager: false,
                monitor: true
            }
        );
        assert_eq!(
            of(flow_monitor),
            RunRoles {
                owner: false,
                manager: false,
                monitor: true
            }
        );
        assert_eq!(of(stranger), RunRoles::default());
        // The flow gone: its roles no longer count.
        let gone = RunRoles::of(&Viewer::with(flow_monitor, &[]), &r, None);
        assert_eq!(gone, RunRoles::default());
    }

    #[test]
    fn principal_lists_are_checked_and_deduplicated() {
        let id = IdentityId::new();
        let given = vec![
            format!("identity:{id}"),
            format!("identity:{id}"),
            "all_authenticated_users".into(),
        ];
        assert_eq!(
            canonical_principals("flow_starters", &given, false)
                .unwrap()
                .len(),
            2
        );
        let e = canonical_principals("flow_starters", &["public".into()], false).unwrap_err();
        assert!(
            e.contains("flow_starters") && e.contains("may only view"),
            "{e}"
        );
        let e = canonical_principals("flow_viewers", &["bob".into()], true).unwrap_err();
        assert!(e.contains("flow_viewers") && e.contains("bob"), "{e}");
    }
}
