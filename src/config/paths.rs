//! The checks on the directories dropslot is given: each path is short enough for the kernel,
//! and the drop folder, the state directory (with its snapshot area) and a local remote never
//! overlap. Paths are compared absolute and lexically normalised, and again with the symbolic
//! links of their existing part resolved, so `a/../drop` and a symlinked parent are both seen.
//!
//! It does not create or open anything; whether the directories work is `check`'s business.

use std::path::{Component, Path, PathBuf};

use super::source::shown;

/// Linux's limits (`PATH_MAX` includes the terminating NUL).
const PATH_MAX: usize = 4096;
const NAME_MAX: usize = 255;

/// A path in the two forms compared.
pub struct Forms {
    /// Absolute, with `.` and `..` resolved on the text alone.
    lexical: PathBuf,
    /// The longest existing ancestor canonicalised (symlinks resolved), the rest appended.
    real: PathBuf,
}

impl Forms {
    pub fn of(path: &Path) -> Forms {
        let lexical = normalise(&super::absolute(path));
        let real = resolve_existing(&lexical);
        Forms { lexical, real }
    }

    /// How `self` lies relative to `other`, in either form.
    pub fn relation_to(&self, other: &Forms) -> Option<Relation> {
        relation(&self.lexical, &other.lexical).or_else(|| relation(&self.real, &other.real))
    }

    /// `self` is `other` or below it.
    pub fn is_within(&self, other: &Forms) -> bool {
        matches!(
            self.relation_to(other),
            Some(Relation::Same | Relation::Inside)
        )
    }

    /// The path for a message: as written, plus where it really is if links make a difference.
    pub fn describe(&self, configured: &Path) -> String {
        let written = shown(&configured.display().to_string());
        if self.real != self.lexical {
            format!(
                "{written}, really {}",
                shown(&self.real.display().to_string())
            )
        } else {
            written
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Same,
    /// The first path is below the second.
    Inside,
    /// The first path has the second below it.
    Contains,
}

fn relation(a: &Path, b: &Path) -> Option<Relation> {
    if a == b {
        Some(Relation::Same)
    } else if a.starts_with(b) {
        Some(Relation::Inside)
    } else if b.starts_with(a) {
        Some(Relation::Contains)
    } else {
        None
    }
}

/// `.` dropped, `..` removes the component before it (never above the root).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn resolve_existing(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// A path the kernel would refuse (`ENAMETOOLONG`) is a configuration error, said once here
/// rather than echoed by every later failure.
pub fn check_length(path: &Path) -> Result<(), String> {
    let absolute = super::absolute(path);
    let len = absolute.as_os_str().len();
    if len >= PATH_MAX {
        return Err(format!(
            "{} is too long: {len} bytes as an absolute path, the system's limit is {} (PATH_MAX)",
            shown(&path.display().to_string()),
            PATH_MAX - 1
        ));
    }
    if let Some(long) = absolute
        .components()
        .find(|c| c.as_os_str().len() > NAME_MAX)
    {
        return Err(format!(
            "{} has a name of {} bytes, the system's limit is {NAME_MAX} (NAME_MAX)",
            shown(&path.display().to_string()),
            long.as_os_str().len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_are_found_lexically_and_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let of = |p: &str| Forms::of(&dir.path().join(p));
        assert_eq!(
            of("link/drop").relation_to(&of("real")),
            Some(Relation::Inside)
        );
        assert_eq!(
            of("real/x/../drop").relation_to(&of("real/drop")),
            Some(Relation::Same)
        );
        assert_eq!(
            of("real").relation_to(&of("link/a/b")),
            Some(Relation::Contains)
        );
        assert_eq!(of("real/a").relation_to(&of("real/ab")), None);
    }

    #[test]
    fn over_long_paths_are_refused() {
        assert!(check_length(Path::new("/tmp/ok")).is_ok());
        let err = check_length(Path::new(&"a".repeat(300))).unwrap_err();
        assert!(
            err.contains("NAME_MAX") && err.contains("(300 bytes)"),
            "{err}"
        );
        let deep = vec!["b"; 3000].join("/");
        assert!(check_length(Path::new(&deep))
            .unwrap_err()
            .contains("PATH_MAX"));
    }
}
