//! Helpers shared by the integration tests.

use lattice_flows::model::State;
use lattice_flows::FlowDefinition;

/// The anchor's action URL mapped to the Lattice built-in provider path:
/// any Globus Compute URL to `/v1/actions/compute`, any other to its last
/// path segment (`https://transfer.actions.globus.org/ls` to
/// `/v1/actions/ls`).
fn lattice_url(url: &str) -> String {
    let name = if url.contains("compute") || url.contains("funcx") {
        "compute"
    } else {
        url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
    };
    format!("/v1/actions/{name}")
}

/// The only change a Globus flow needs to run on Lattice: its action URLs
/// (also inside `Parallel` branches and `Map` iterators).
pub(crate) fn with_lattice_urls(mut definition: FlowDefinition) -> FlowDefinition {
    for state in definition.states.values_mut() {
        match state {
            State::Action(a) => a.action_url = lattice_url(&a.action_url),
            State::Map(m) => m.iterator = with_lattice_urls(m.iterator.clone()),
            State::Parallel(p) => {
                p.branches = p.branches.drain(..).map(with_lattice_urls).collect();
            }
            _ => {}
        }
    }
    definition
}
