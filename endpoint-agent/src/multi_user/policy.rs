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
    /// Unix groups whose members may use the endpoint: the account an
    /// identity maps to must be in at least one (unset: any account).
    #[serde(default)]
    pub allowed_groups: Option<Vec<String>>,
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

    /// After mapping: `Err(message)` unless the account is in an allowed
    /// group. `groups` are the names of the account's groups.
    pub fn check_groups(&self, account: &str, groups: &[String]) -> Result<(), String> {
        let Some(allowed) = &self.allowed_groups else {
            return Ok(());
        };
        if groups.iter().any(|g| allowed.contains(g)) {
            return Ok(());
        }
        Err(format!(
            "local account `{account}` is not in a group allowed on this endpoint ({})",
            allowed.join(", ")
        ))
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
            allowed_groups: None,
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
            allowed_groups: None,
        };
        assert!(none.check(&ident(None), "f1").is_err());
    }

    #[test]
    fn groups_restrict_after_mapping() {
        let p = Policy {
            allowed_groups: Some(vec!["hpc".into(), "lattice-users".into()]),
            ..Policy::default()
        };
        assert!(p
            .check_groups("alice", &["alice".into(), "hpc".into()])
            .is_ok());
        let err = p.check_groups("bob", &["bob".into()]).unwrap_err();
        assert!(err.contains("`bob` is not in a group allowed"), "{err}");
        assert!(Policy::default().check_groups("bob", &[]).is_ok());
    }
}
