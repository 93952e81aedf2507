//! Who may use the endpoint and what it may run.

use serde::{Deserialize, Serialize};

use super::mapping::Identity;

/// `[multi_user.policy]`: unset lists allow everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Function ids this endpoint runs (unset: any).
    #[serde(default)]
    pub allowed_functions: Option<Vec<String>>,
    /// Identity providers (issuer URLs) whose users may submit (unset: any).
    #[serde(default)]
    pub allowed_identity_providers: Option<Vec<String>>,
}

impl Policy {
    /// `Err(message)` when the task must not run.
    pub fn check(&self, identity: &Identity, function_id: &str) -> Result<(), String> {
        if let Some(allowed) = &self.allowed_identity_providers {
            let idp = identity.identity_provider.as_deref().unwrap_or("");
            if !allowed.iter().any(|a| a == idp) {
                return Err(format!(
                    "identity provider `{idp}` of identity {} is not allowed on this endpoint",
                    identity.identity_id
                ));
            }
        }
        if let Some(allowed) = &self.allowed_functions {
            if !allowed.iter().any(|a| a == function_id) {
                return Err(format!(
                    "function {function_id} is not allowed on this endpoint"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(idp: Option<&str>) -> Identity {
        Identity {
            identity_id: "i1".into(),
            username: "u".into(),
            email: None,
            identity_provider: idp.map(str::to_owned),
        }
    }

    #[test]
    fn default_allows_everything() {
        assert!(Policy::default().check(&ident(None), "f1").is_ok());
    }

    #[test]
    fn lists_restrict() {
        let p = Policy {
            allowed_functions: Some(vec!["f1".into()]),
            allowed_identity_providers: Some(vec!["https://idp.uni.edu".into()]),
        };
        assert!(p.check(&ident(Some("https://idp.uni.edu")), "f1").is_ok());
        assert!(p
            .check(&ident(Some("https://idp.uni.edu")), "f2")
            .unwrap_err()
            .contains("function f2 is not allowed"));
        assert!(p
            .check(&ident(Some("https://other")), "f1")
            .unwrap_err()
            .contains("not allowed"));
        assert!(p.check(&ident(None), "f1").is_err());
        // No list means nothing is allowed only when the list is empty.
        let none = Policy {
            allowed_functions: Some(vec![]),
            allowed_identity_providers: None,
        };
        assert!(none.check(&ident(None), "f1").is_err());
    }
}
