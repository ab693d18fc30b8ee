//! Glob sets as the configuration uses them: a pattern matches the path relative to the drop
//! folder or the bare file name, so `*.log` and `.git` work at any depth. Owns matching only; what
//! a match means (ignore, treat as a log) is the caller's.

use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};

#[derive(Clone, Debug, Default)]
pub struct PathGlobs {
    set: GlobSet,
    patterns: Vec<String>,
}

impl PathGlobs {
    pub fn new(patterns: &[String]) -> Result<Self, globset::Error> {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            builder.add(Glob::new(p)?);
        }
        Ok(PathGlobs {
            set: builder.build()?,
            patterns: patterns.to_vec(),
        })
    }

    pub fn is_match(&self, rel: &Path) -> bool {
        self.first_match(rel).is_some()
    }

    /// The first pattern that matches `rel`, for saying why a path was treated as it was.
    pub fn first_match(&self, rel: &Path) -> Option<&str> {
        self.first_match_index(rel)
            .map(|i| self.patterns[i].as_str())
    }

    /// The position in the configured list of the first pattern that matches `rel`.
    pub fn first_match_index(&self, rel: &Path) -> Option<usize> {
        let mut hits = self.set.matches(rel);
        if let Some(name) = rel.file_name() {
            hits.extend(self.set.matches(name));
        }
        hits.into_iter().min()
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_the_relative_path_or_the_bare_name() {
        let globs = PathGlobs::new(&["*.log".into(), "cache/**".into()]).unwrap();
        assert_eq!(globs.first_match(Path::new("a/b/app.log")), Some("*.log"));
        assert_eq!(globs.first_match(Path::new("cache/x/y")), Some("cache/**"));
        assert!(!globs.is_match(Path::new("a/app.log.gz")));
        assert!(!PathGlobs::default().is_match(Path::new("x.log")));
    }
}
