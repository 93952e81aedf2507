//! Paths as sharing sees them: the path of an access rule (strict: what an
//! administrator writes down) and the path of a request (lenient: what the
//! file operations accept), both reduced to components so that a rule on
//! `/shared/` covers `/shared/x` but never `/shared-private/x`.
//!
//! Pure: no store, no I/O.

/// A validated rule path: a directory (written with a trailing `/`) or
/// one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RulePath {
    components: Vec<String>,
    directory: bool,
}

impl RulePath {
    /// Checks a rule path as written. It must start with `/`; a directory
    /// ends with `/`; no empty (`//`), `.` or `..` components, no NUL or
    /// other control characters, no component with leading or trailing
    /// white space (almost always a copy-and-paste accident).
    pub(crate) fn parse(path: &str) -> Result<Self, String> {
        let problem = |why: &str| format!("path `{path}`: {why}");
        if !path.starts_with('/') {
            return Err(problem(
                "must start with `/` (paths are from the collection's root)",
            ));
        }
        if path.len() > 4096 {
            return Err(problem("is longer than 4096 bytes"));
        }
        if path.chars().any(char::is_control) {
            return Err(problem("contains a control character"));
        }
        let directory = path.ends_with('/');
        let inner = path[1..].strip_suffix('/').unwrap_or(&path[1..]);
        let mut components = Vec::new();
        if !inner.is_empty() {
            for component in inner.split('/') {
                match component {
                    "" => return Err(problem("contains an empty component (`//`)")),
                    "." | ".." => {
                        return Err(problem("`.` and `..` are not allowed in a rule path"))
                    }
                    c if c.trim() != c => {
                        return Err(problem("a component starts or ends with white space"))
                    }
                    c => components.push(c.to_owned()),
                }
            }
        }
        Ok(Self {
            components,
            directory: directory || path == "/",
        })
    }

    /// Whether the rule applies to the request path `components`: a
    /// directory rule to the directory itself and everything beneath it,
    /// a file rule to that file only.
    pub(crate) fn covers(&self, request: &[&str]) -> bool {
        if self.directory {
            request.len() >= self.components.len()
                && self.components.iter().zip(request).all(|(a, b)| a == b)
        } else {
            request.len() == self.components.len()
                && self.components.iter().zip(request).all(|(a, b)| a == b)
        }
    }

    /// The canonical spelling (what is stored and shown).
    pub(crate) fn canonical(&self) -> String {
        let mut out = String::from("/");
        out.push_str(&self.components.join("/"));
        if self.directory && !self.components.is_empty() {
            out.push('/');
        }
        out
    }
}

/// The components of a request path (absolute or relative to the root,
/// `.` and empty components ignored, as the agent resolves them). `..` is
/// refused: the agent refuses it too, and allowing it here would let a
/// rule check pass for a path that resolves elsewhere.
pub(crate) fn request_components(path: &str) -> Result<Vec<&str>, String> {
    if path.contains('\0') {
        return Err(format!("path `{path}`: contains NUL"));
    }
    let mut out = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "path `{path}`: `..` is not allowed (paths are from the collection's root)"
                ))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(rule: &str, request: &str) -> bool {
        RulePath::parse(rule)
            .unwrap()
            .covers(&request_components(request).unwrap())
    }

    #[test]
    fn a_directory_rule_covers_itself_and_what_is_beneath_whole_components_only() {
        assert!(covers("/shared/", "/shared"));
        assert!(covers("/shared/", "/shared/"));
        assert!(covers("/shared/", "/shared/a/b.txt"));
        assert!(covers("/shared/", "shared/a"));
        assert!(!covers("/shared/", "/shared-private/a"));
        assert!(!covers("/shared/", "/sharedx"));
        assert!(!covers("/shared/", "/"));
        assert!(!covers("/shared/", "/other/shared/a"));
        assert!(covers("/", "/anything/at/all"));
        assert!(covers("/", "/"));
    }

    #[test]
    fn a_file_rule_covers_that_file_only() {
        assert!(covers("/data/run.csv", "/data/run.csv"));
        assert!(covers("/data/run.csv", "data/./run.csv"));
        assert!(!covers("/data/run.csv", "/data/run.csv.bak"));
        assert!(!covers("/data/run.csv", "/data/run.csv/inner"));
        assert!(!covers("/data/run.csv", "/data"));
    }

    #[test]
    fn malformed_rule_paths_are_refused_with_the_reason() {
        for (path, why) in [
            ("shared/", "must start with `/`"),
            ("", "must start with `/`"),
            ("/a//b/", "empty component"),
            ("/a/../b/", "`..`"),
            ("/a/./b/", "`..`"),
            ("/a/b /", "white space"),
            ("/ a/", "white space"),
            ("/a\u{0}/", "control character"),
            ("/a\n/", "control character"),
        ] {
            let err = RulePath::parse(path).unwrap_err();
            assert!(err.contains(why), "{path:?}: {err}");
        }
    }

    #[test]
    fn rule_paths_have_one_spelling() {
        assert_eq!(RulePath::parse("/").unwrap().canonical(), "/");
        assert_eq!(RulePath::parse("/a/b/").unwrap().canonical(), "/a/b/");
        assert_eq!(RulePath::parse("/a/f.txt").unwrap().canonical(), "/a/f.txt");
    }

    #[test]
    fn request_paths_refuse_dot_dot_and_nul() {
        assert!(request_components("/a/../b").is_err());
        assert!(request_components("..").is_err());
        assert!(request_components("/a\0b").is_err());
        assert_eq!(request_components("//a/./b/").unwrap(), vec!["a", "b"]);
    }
}
