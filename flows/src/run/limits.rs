//! The per-run limits ([`Limits`]) and the checks that enforce them: a
//! limit hit ends the run at once with a `Lattice.*` error that no `Retry`
//! or `Catch` sees ([`Fatal`]).
//!
//! The transition count is checked on entering a state (`states`), the
//! lifetime by a timer set at start; this module owns the size and depth
//! check of state data.

use super::Run;
use crate::expr::Budget;
use crate::model::RunError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A limit was hit: the run fails at once.
pub(super) struct Fatal(pub(super) RunError);

/// Per-run limits.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// State entries (retries included) over the whole run, inner machines
    /// included.
    pub max_transitions: u64,
    /// Largest state data (serialized JSON) after any state, in bytes.
    pub max_state_bytes: usize,
    /// Deepest nesting of objects and lists in state data.
    pub max_state_depth: usize,
    /// Most items one `Map` state may fan out to.
    pub max_map_items: usize,
    /// Seconds from start after which a run that has not finished fails.
    pub max_lifetime_seconds: u64,
    /// Budget of each expression evaluation.
    pub expression: Budget,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_transitions: 10_000,
            max_state_bytes: 1024 * 1024,
            max_state_depth: 64,
            max_map_items: 10_000,
            max_lifetime_seconds: 30 * 24 * 3600,
            expression: Budget::default(),
        }
    }
}

impl Run {
    pub(super) fn check_size(&self, data: &Value, what: &str) -> Result<(), Fatal> {
        // Depth first, without recursion: serializing (and dropping) a
        // value nested thousands deep would exhaust the stack.
        let mut stack = vec![(data, 1usize)];
        while let Some((v, depth)) = stack.pop() {
            if depth > self.limits.max_state_depth {
                return Err(Fatal(RunError {
                    error: "Lattice.StateDepthLimitExceeded".into(),
                    cause: format!(
                        "{what} nests deeper than the limit of {} levels",
                        self.limits.max_state_depth
                    ),
                }));
            }
            match v {
                Value::Array(items) => stack.extend(items.iter().map(|x| (x, depth + 1))),
                Value::Object(map) => stack.extend(map.values().map(|x| (x, depth + 1))),
                _ => {}
            }
        }
        let size = serde_json::to_vec(data)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > self.limits.max_state_bytes {
            return Err(Fatal(RunError {
                error: "Lattice.StateSizeLimitExceeded".into(),
                cause: format!(
                    "{what} is {size} bytes, more than the limit of {} bytes",
                    self.limits.max_state_bytes
                ),
            }));
        }
        Ok(())
    }
}
