//! Include/exclude glob filters of a transfer.

use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{FaultCode, TransferError};

/// Patterns without `/` match the final name; others the path relative to
/// the transfer root.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filters {
    include: Option<(GlobSet, GlobSet)>,
    exclude: Option<(GlobSet, GlobSet)>,
}

fn build(patterns: &[String]) -> Result<Option<(GlobSet, GlobSet)>, TransferError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut names = GlobSetBuilder::new();
    let mut paths = GlobSetBuilder::new();
    for pattern in patterns {
        let invalid = |e: globset::Error| {
            TransferError::fatal(FaultCode::InvalidPath, format!("filter `{pattern}`: {e}"))
        };
        if pattern.contains('/') {
            let trimmed = pattern.trim_start_matches('/');
            paths.add(
                GlobBuilder::new(trimmed)
                    .literal_separator(true)
                    .build()
                    .map_err(invalid)?,
            );
        } else {
            names.add(Glob::new(pattern).map_err(invalid)?);
        }
    }
    let built = |b: GlobSetBuilder| {
        b.build()
            .map_err(|e| TransferError::fatal(FaultCode::InvalidPath, format!("filters: {e}")))
    };
    Ok(Some((built(names)?, built(paths)?)))
}

fn matches(set: &(GlobSet, GlobSet), rel: &Path) -> bool {
    rel.file_name().is_some_and(|name| set.0.is_match(name)) || set.1.is_match(rel)
}

impl Filters {
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Result<Self, TransferError> {
        Ok(Filters {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    /// Whether a file (or, with `dir`, a directory) is left out. Include
    /// patterns only select files; directories are always walked unless excluded.
    pub(crate) fn excludes(&self, rel: &Path, dir: bool) -> bool {
        if self.exclude.as_ref().is_some_and(|set| matches(set, rel)) {
            return true;
        }
        !dir && self.include.as_ref().is_some_and(|set| !matches(set, rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let f = Filters::new(&["*.dat".into()], &["tmp".into(), "a/skip/*".into()]).unwrap();
        assert!(!f.excludes(Path::new("x/y.dat"), false));
        assert!(f.excludes(Path::new("x/y.txt"), false));
        assert!(!f.excludes(Path::new("x"), true));
        assert!(f.excludes(Path::new("x/tmp"), true));
        assert!(f.excludes(Path::new("a/skip/z.dat"), false));
        assert!(!f.excludes(Path::new("b/a/skip/z.dat"), false));
    }
}
