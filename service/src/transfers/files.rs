//! File operations on behalf of a caller: the access check for each
//! operation's paths (`crate::sharing::access::check`: owner, or a rule
//! granting enough), then the relay to the hosting agent. The collection
//! routes and the flows' `ls` and `mkdir` actions both go through here.

use lattice_protocol::sharing::Permissions;
use lattice_protocol::transfer::{FileOp, FileOpOutcome};

use crate::error::ApiError;
use crate::sharing::{access, Viewer};
use crate::state::AppState;
use crate::store::CollectionRecord;

/// Checks the viewer's access for `op`, then relays it to the agent.
pub(crate) async fn checked(
    state: &AppState,
    viewer: &Viewer,
    collection: &str,
    op: FileOp,
) -> Result<(CollectionRecord, FileOpOutcome), ApiError> {
    let record = access::usable_collection(&state.store, viewer, collection).await?;
    let needs: Vec<(&str, Permissions)> = match &op {
        FileOp::List { path, .. } | FileOp::Stat { path } => vec![(path, Permissions::Read)],
        FileOp::Mkdir { path, .. } | FileOp::Delete { path, .. } => {
            vec![(path, Permissions::ReadWrite)]
        }
        FileOp::Rename { from, to } => {
            vec![(from, Permissions::ReadWrite), (to, Permissions::ReadWrite)]
        }
    };
    for (path, need) in needs {
        access::check(&state.store, viewer, &record, path, need).await?;
    }
    let outcome = super::file_op(state, &record, op).await?;
    Ok((record, outcome))
}
