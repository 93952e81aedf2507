//! The names users give endpoints and collections: one rule each, checked
//! the same way by the service (registration, announcements), the agent
//! (config files, its state directory) and the CLI.

/// Why a name was refused, in words for the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(String);

/// An endpoint's name: 1-64 letters, digits, `-`, `_` or `.`, not starting
/// with `.`. It becomes a directory name under the agent's config dir, so
/// `.`, `..` and hidden names are out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointName(String);

impl EndpointName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(name: &str) -> Result<Self, NameError> {
        let ok = !name.is_empty()
            && name.len() <= Self::MAX_LEN
            && !name.starts_with('.')
            && name.bytes().all(name_byte);
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(NameError(format!(
                "invalid endpoint name `{name}`: use 1-{} letters, digits, `-`, `_` and `.` (not first)",
                Self::MAX_LEN
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A collection's name: 1-100 letters, digits, `-`, `_` or `.` (no `:`,
/// which separates collection and path on the command line).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CollectionName(String);

impl CollectionName {
    pub const MAX_LEN: usize = 100;

    pub fn parse(name: &str) -> Result<Self, NameError> {
        let ok = !name.is_empty() && name.len() <= Self::MAX_LEN && name.bytes().all(name_byte);
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(NameError(format!(
                "invalid collection name `{name}`: use 1-{} letters, digits, `-`, `_` or `.`",
                Self::MAX_LEN
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_are_safe_directory_names() {
        for good in ["local", "hpc-1", "lab_server.2", &"e".repeat(64)] {
            assert!(EndpointName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a:b",
            "é",
            "a b",
            &"e".repeat(65),
        ] {
            let err = EndpointName::parse(bad).unwrap_err().to_string();
            assert!(err.contains("invalid endpoint name"), "{bad}: {err}");
        }
    }

    #[test]
    fn collection_names_have_no_colon() {
        for good in ["local", "scratch.v2", ".dot", &"c".repeat(100)] {
            assert!(CollectionName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "a:b", "a/b", "a b", &"c".repeat(101)] {
            assert!(CollectionName::parse(bad).is_err(), "{bad}");
        }
    }
}
