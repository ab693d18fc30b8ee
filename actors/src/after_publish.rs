//! The after-publish action: what happens to a local file once the remote confirmed it and the
//! ledger recorded it (`folder.after_publish`: keep it, delete it, or move it to an archive
//! directory). Owns the order of the steps and their recovery after a crash; the file-system
//! work (the version check right before the unlink or rename, links never followed) is
//! [`DropRoot::take_away`], and when to call it is the linker's.
//!
//! The steps, each durable before the next: (1) the ledger records the publish and the intent in
//! one transaction; (2) the file is deleted or archived if it is still exactly the published
//! version; (3) the ledger forgets the entry (or only the intent, if the file changed). While an
//! intent is recorded, the file's disappearance is ours: the stability checker does not turn it
//! into a remote delete. At start-up, [`recover`] finishes every recorded intent (step 2 is
//! idempotent: an unchanged file is removed, a missing one was removed already).

use std::path::{Path, PathBuf};

use crate::confined::{DropRoot, TakeAway};
use crate::ledger::{EntryStatus, Ledger, LedgerError};

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum AfterPublish {
    #[default]
    Keep,
    Delete,
    /// Into this directory (outside the drop folder), keeping the path relative to the folder.
    Move(PathBuf),
}

impl AfterPublish {
    pub fn acts(&self) -> bool {
        *self != AfterPublish::Keep
    }

    fn archive(&self) -> Option<&Path> {
        match self {
            AfterPublish::Move(dir) => Some(dir),
            _ => None,
        }
    }

    /// Step 2 for one file published with metadata `meta`.
    pub fn take_away(
        &self,
        root: &DropRoot,
        rel: &Path,
        meta: &crate::fileinfo::FileMeta,
    ) -> std::io::Result<TakeAway> {
        match self {
            AfterPublish::Keep => Ok(TakeAway::Changed),
            _ => root.take_away(rel, meta, self.archive()),
        }
    }
}

/// Finishes the intents a crash interrupted, before the pipeline starts. Returns how many files
/// were removed now, and how many were found removed already or changed.
pub fn recover(
    ledger: &dyn Ledger,
    root: &DropRoot,
    action: &AfterPublish,
) -> Result<(usize, usize), LedgerError> {
    let mut paths = Vec::new();
    ledger.for_each_after_publish(&mut |p| paths.push(p.to_path_buf()))?;
    let (mut removed, mut other) = (0, 0);
    for path in paths {
        let entry = ledger.lookup(&path)?;
        let outcome = match entry {
            // With the setting now "keep", the file stays (losing a file is worse than keeping it).
            Some(e) if e.status == EntryStatus::Published => action.take_away(root, &path, &e.meta),
            _ => Ok(TakeAway::Changed),
        };
        let done = match outcome {
            Ok(TakeAway::Done) => {
                removed += 1;
                true
            }
            // Removed before the crash (or by someone else meanwhile: either way not a delete
            // to propagate, and the remote keeps its copy).
            Ok(TakeAway::Gone) => {
                other += 1;
                true
            }
            Ok(TakeAway::Changed) => {
                other += 1;
                false
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "after-publish action failed: {e}; the file is kept");
                false
            }
        };
        ledger.after_publish_done(&path, done)?;
        if done {
            tracing::info!(path = %path.display(), "after-publish action finished at start-up");
        }
    }
    Ok((removed, other))
}
