//! Flows: create (validated: every problem of the definition at once, and
//! the input schema must be a usable JSON Schema), list, show, update,
//! delete, and the roles on them. Who may do what is decided by
//! [`super::roles`]; runs are in [`super::runs`].

use chrono::Utc;
use lattice_flows::validate::{Problem, Report};
use lattice_flows::FlowDefinition;
use lattice_protocol::flows::{
    flow_action_url, DefinitionProblem, FlowCreate, FlowInfo, FlowList, FlowRoleName, FlowUpdate,
    ValidationReport, MAX_FLOW_BYTES,
};
use lattice_protocol::FlowId;
use serde_json::Value;

use super::roles::{canonical_principals, FlowRoles};
use super::{FlowError, FlowResult};
use crate::sharing::Viewer;
use crate::store::{FlowRecord, SharedStore};

/// Longest title, subtitle or keyword, in characters.
const MAX_TEXT: usize = 1024;
/// Longest description, in characters.
const MAX_DESCRIPTION: usize = 64 * 1024;
/// Most principals in one role list.
const MAX_PRINCIPALS: usize = 256;

fn problem(p: Problem) -> DefinitionProblem {
    DefinitionProblem {
        state: p.state,
        field: p.field,
        message: p.message,
    }
}

/// Checks a definition and an input schema without storing anything.
pub fn check(
    definition: &Value,
    input_schema: &Value,
) -> (Option<FlowDefinition>, ValidationReport) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let size = definition.to_string().len();
    let parsed = if size > MAX_FLOW_BYTES {
        errors.push(DefinitionProblem {
            state: String::new(),
            field: "definition".into(),
            message: format!("{size} bytes, over the limit of {MAX_FLOW_BYTES}"),
        });
        None
    } else {
        match lattice_flows::validate_document(definition) {
            Ok((
                def,
                Report {
                    errors: e,
                    warnings: w,
                },
            )) => {
                errors.extend(e.into_iter().map(problem));
                warnings.extend(w.into_iter().map(problem));
                Some(def)
            }
            Err(e) => {
                errors.push(DefinitionProblem {
                    state: String::new(),
                    field: "definition".into(),
                    message: e.to_string(),
                });
                None
            }
        }
    };
    if let Err(e) = lattice_flows::definition::check_input_schema(input_schema) {
        errors.push(DefinitionProblem {
            state: String::new(),
            field: "input_schema".into(),
            message: e.to_string(),
        });
    }
    let valid = errors.is_empty();
    (
        parsed.filter(|_| valid),
        ValidationReport {
            valid,
            errors,
            warnings,
        },
    )
}

/// [`check`], refusing a definition with errors (400 listing them all).
fn checked(definition: &Value, input_schema: &Value) -> FlowResult<Vec<DefinitionProblem>> {
    let (_, report) = check(definition, input_schema);
    if report.valid {
        Ok(report.warnings)
    } else {
        Err(FlowError::Definition {
            message: format!("the flow has {} problem(s)", report.errors.len()),
            problems: report.errors,
        })
    }
}

fn check_text(field: &str, value: &str, max: usize) -> FlowResult<()> {
    if value.chars().count() > max {
        return Err(FlowError::Invalid(format!(
            "{field}: at most {max} characters"
        )));
    }
    if value.contains('\0') {
        return Err(FlowError::Invalid(format!("{field}: NUL is not allowed")));
    }
    Ok(())
}

/// Every role list of a create or update, checked and in canonical form.
async fn role_pairs(
    store: &SharedStore,
    lists: [(&str, FlowRoleName, &[String]); 5],
) -> FlowResult<Vec<(FlowRoleName, String)>> {
    let mut out = Vec::new();
    for (field, role, given) in lists {
        if given.len() > MAX_PRINCIPALS {
            return Err(FlowError::Invalid(format!(
                "{field}: at most {MAX_PRINCIPALS} principals"
            )));
        }
        let public_allowed = role == FlowRoleName::Viewer;
        let principals =
            canonical_principals(field, given, public_allowed).map_err(FlowError::Invalid)?;
        for p in principals {
            crate::sharing::check_principal_exists(store, &p).await?;
            out.push((role, p.to_string()));
        }
    }
    Ok(out)
}

fn list_of(flow: &FlowRecord, role: FlowRoleName) -> Vec<String> {
    flow.roles
        .iter()
        .filter(|(r, _)| *r == role)
        .map(|(_, p)| p.clone())
        .collect()
}

/// What the API shows of a flow to `viewer`.
pub fn info(flow: FlowRecord, roles: &FlowRoles, warnings: Vec<DefinitionProblem>) -> FlowInfo {
    FlowInfo {
        action_url: flow_action_url(flow.id),
        flow_administrators: list_of(&flow, FlowRoleName::Administrator),
        flow_starters: list_of(&flow, FlowRoleName::Starter),
        flow_viewers: list_of(&flow, FlowRoleName::Viewer),
        run_managers: list_of(&flow, FlowRoleName::RunManager),
        run_monitors: list_of(&flow, FlowRoleName::RunMonitor),
        id: flow.id,
        owner: flow.owner,
        title: flow.title,
        subtitle: flow.subtitle,
        description: flow.description,
        keywords: flow.keywords,
        definition: flow.definition,
        input_schema: flow.input_schema,
        user_roles: roles.names(),
        created_at: flow.created_at,
        updated_at: flow.updated_at,
        warnings,
    }
}

fn check_metadata(
    title: &str,
    subtitle: &str,
    description: &str,
    keywords: &[String],
) -> FlowResult<()> {
    check_text("title", title, MAX_TEXT)?;
    check_text("subtitle", subtitle, MAX_TEXT)?;
    check_text("description", description, MAX_DESCRIPTION)?;
    if keywords.len() > 64 {
        return Err(FlowError::Invalid("keywords: at most 64".into()));
    }
    for k in keywords {
        check_text("keywords", k, MAX_TEXT)?;
    }
    Ok(())
}

/// Refuses a flow document over [`MAX_FLOW_BYTES`] (413).
fn check_size(document: &impl serde::Serialize) -> FlowResult<()> {
    let size = serde_json::to_vec(document).map(|v| v.len()).unwrap_or(0);
    if size > MAX_FLOW_BYTES {
        return Err(FlowError::TooLarge(format!(
            "the flow document is {size} bytes, over the limit of {MAX_FLOW_BYTES}"
        )));
    }
    Ok(())
}

/// Creates a flow owned by `viewer`'s identity.
pub async fn create(
    store: &SharedStore,
    viewer: &Viewer,
    request: FlowCreate,
) -> FlowResult<FlowInfo> {
    let owner = viewer
        .identity
        .ok_or_else(|| FlowError::Denied("creating a flow needs a token".into()))?;
    check_size(&request)?;
    let warnings = checked(&request.definition, &request.input_schema)?;
    check_metadata(
        &request.title,
        &request.subtitle,
        &request.description,
        &request.keywords,
    )?;
    let roles = role_pairs(
        store,
        [
            (
                "flow_administrators",
                FlowRoleName::Administrator,
                &request.flow_administrators,
            ),
            (
                "flow_starters",
                FlowRoleName::Starter,
                &request.flow_starters,
            ),
            ("flow_viewers", FlowRoleName::Viewer, &request.flow_viewers),
            (
                "run_managers",
                FlowRoleName::RunManager,
                &request.run_managers,
            ),
            (
                "run_monitors",
                FlowRoleName::RunMonitor,
                &request.run_monitors,
            ),
        ],
    )
    .await?;
    let now = Utc::now();
    let flow = FlowRecord {
        id: FlowId::new(),
        owner,
        title: request.title,
        subtitle: request.subtitle,
        description: request.description,
        keywords: request.keywords,
        definition: request.definition,
        input_schema: request.input_schema,
        roles,
        created_at: now,
        updated_at: now,
    };
    store.insert_flow(&flow).await?;
    tracing::info!(flow_id = %flow.id, "flow created");
    let roles = FlowRoles::of(viewer, &flow);
    Ok(info(flow, &roles, warnings))
}

/// A flow `viewer` may know exists (any role, `public` viewers included):
/// 404 otherwise, so strangers learn nothing.
pub async fn visible(
    store: &SharedStore,
    viewer: &Viewer,
    id: FlowId,
) -> FlowResult<(FlowRecord, FlowRoles)> {
    let not_found = || FlowError::NotFound(format!("flow {id} does not exist"));
    let flow = store.flow(id).await?.ok_or_else(not_found)?;
    let roles = FlowRoles::of(viewer, &flow);
    if !roles.any() {
        return Err(not_found());
    }
    Ok((flow, roles))
}

/// [`visible`], then 403 unless the viewer holds `role`.
pub async fn with_role(
    store: &SharedStore,
    viewer: &Viewer,
    id: FlowId,
    role: FlowRoleName,
    to: &str,
) -> FlowResult<(FlowRecord, FlowRoles)> {
    let (flow, roles) = visible(store, viewer, id).await?;
    if !roles.has(role) {
        return Err(FlowError::Denied(format!(
            "only the flow's owner or a {} may {to}",
            super::roles::role_name(role).replace('_', " ")
        )));
    }
    Ok((flow, roles))
}

pub async fn show(store: &SharedStore, viewer: &Viewer, id: FlowId) -> FlowResult<FlowInfo> {
    let (flow, roles) = visible(store, viewer, id).await?;
    Ok(info(flow, &roles, Vec::new()))
}

pub async fn list(store: &SharedStore, viewer: &Viewer) -> FlowResult<FlowList> {
    let Some(me) = viewer.identity else {
        return Ok(FlowList { flows: Vec::new() });
    };
    let principals: Vec<String> = viewer
        .principals()
        .iter()
        .filter(|p| **p != lattice_protocol::sharing::Principal::Public)
        .map(ToString::to_string)
        .collect();
    let flows = store.flows_for(me, &principals).await?;
    Ok(FlowList {
        flows: flows
            .into_iter()
            .map(|f| {
                let roles = FlowRoles::of(viewer, &f);
                info(f, &roles, Vec::new())
            })
            .collect(),
    })
}

pub async fn update(
    store: &SharedStore,
    viewer: &Viewer,
    id: FlowId,
    update: FlowUpdate,
) -> FlowResult<FlowInfo> {
    check_size(&update)?;
    let (mut flow, _) = with_role(
        store,
        viewer,
        id,
        FlowRoleName::Administrator,
        "change the flow",
    )
    .await?;
    let definition = update.definition.unwrap_or(flow.definition);
    let input_schema = update.input_schema.unwrap_or(flow.input_schema);
    let warnings = checked(&definition, &input_schema)?;
    flow.definition = definition;
    flow.input_schema = input_schema;
    if let Some(v) = update.title {
        flow.title = v;
    }
    if let Some(v) = update.subtitle {
        flow.subtitle = v;
    }
    if let Some(v) = update.description {
        flow.description = v;
    }
    if let Some(v) = update.keywords {
        flow.keywords = v;
    }
    check_metadata(
        &flow.title,
        &flow.subtitle,
        &flow.description,
        &flow.keywords,
    )?;
    let current = |role| list_of(&flow, role);
    let lists = [
        (
            "flow_administrators",
            FlowRoleName::Administrator,
            update
                .flow_administrators
                .unwrap_or_else(|| current(FlowRoleName::Administrator)),
        ),
        (
            "flow_starters",
            FlowRoleName::Starter,
            update
                .flow_starters
                .unwrap_or_else(|| current(FlowRoleName::Starter)),
        ),
        (
            "flow_viewers",
            FlowRoleName::Viewer,
            update
                .flow_viewers
                .unwrap_or_else(|| current(FlowRoleName::Viewer)),
        ),
        (
            "run_managers",
            FlowRoleName::RunManager,
            update
                .run_managers
                .unwrap_or_else(|| current(FlowRoleName::RunManager)),
        ),
        (
            "run_monitors",
            FlowRoleName::RunMonitor,
            update
                .run_monitors
                .unwrap_or_else(|| current(FlowRoleName::RunMonitor)),
        ),
    ];
    flow.roles = role_pairs(
        store,
        [
            (lists[0].0, lists[0].1, &lists[0].2),
            (lists[1].0, lists[1].1, &lists[1].2),
            (lists[2].0, lists[2].1, &lists[2].2),
            (lists[3].0, lists[3].1, &lists[3].2),
            (lists[4].0, lists[4].1, &lists[4].2),
        ],
    )
    .await?;
    flow.updated_at = Utc::now();
    if !store.update_flow(&flow).await? {
        return Err(FlowError::NotFound(format!("flow {id} does not exist")));
    }
    let roles = FlowRoles::of(viewer, &flow);
    Ok(info(flow, &roles, warnings))
}

/// Deletes a flow (owner or administrators). Its runs go on and stay
/// visible to their starters.
pub async fn delete(store: &SharedStore, viewer: &Viewer, id: FlowId) -> FlowResult<()> {
    with_role(
        store,
        viewer,
        id,
        FlowRoleName::Administrator,
        "delete the flow",
    )
    .await?;
    store.delete_flow(id).await?;
    tracing::info!(flow_id = %id, "flow deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn check_reports_every_problem_with_its_state() {
        let broken = json!({"StartAt": "A", "States": {
            "A": {"Type": "Pass", "Next": "Nowhere"},
            "B": {"Type": "Pass", "End": true}}});
        let (parsed, report) = check(&broken, &json!({"type": "nonsense"}));
        assert!(parsed.is_none() && !report.valid);
        let where_: Vec<(&str, &str)> = report
            .errors
            .iter()
            .map(|p| (p.state.as_str(), p.field.as_str()))
            .collect();
        assert!(where_.contains(&("A", "Next")), "{where_:?}");
        assert!(where_.iter().any(|(s, _)| *s == "B"), "{where_:?}");
        assert!(where_.contains(&("", "input_schema")), "{where_:?}");

        let good = json!({"StartAt": "A", "States": {"A": {"Type": "Succeed"}}});
        let (parsed, report) = check(&good, &json!({}));
        assert!(parsed.is_some() && report.valid && report.errors.is_empty());

        let (_, report) = check(&json!({"States": {}}), &json!({}));
        assert_eq!(report.errors[0].field, "definition");
    }

    #[test]
    fn oversized_documents_and_fields_are_refused() {
        let big = FlowCreate {
            definition: json!({"StartAt": "A", "States": {"A": {"Type": "Succeed"}}}),
            input_schema: json!({}),
            title: String::new(),
            subtitle: String::new(),
            description: "x".repeat(MAX_FLOW_BYTES),
            keywords: vec![],
            flow_administrators: vec![],
            flow_starters: vec![],
            flow_viewers: vec![],
            run_managers: vec![],
            run_monitors: vec![],
        };
        assert!(matches!(check_size(&big), Err(FlowError::TooLarge(_))));
        assert!(check_metadata(&"t".repeat(MAX_TEXT + 1), "", "", &[]).is_err());
        assert!(check_metadata("t", "", "", &["\0".into()]).is_err());
        assert!(check_metadata("t", "s", "d", &["k".into()]).is_ok());
    }
}
