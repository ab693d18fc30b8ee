//! `dropslot verify`: compares what the remote holds with what the ledger says was published and
//! with the drop folder, for the configured folder (one process serves one folder). Owns the
//! comparison and its report; listing and reading back are the remote's ([`Remote::list`],
//! [`Remote::stored_size`], [`Remote::holds`]), re-uploading is the next `run`'s.
//!
//! What differs:
//! - **missing**: published according to the ledger, not on the remote;
//! - **different**: on the remote with another size, or (with `deep`) other content read back;
//! - **extra**: on the remote, unknown to the ledger (dropslot's own `.dropslot-*` names aside);
//! - **unpublished**: in the drop folder, but not published as it is now (new or changed size).
//!
//! `repair` marks the missing and different entries whose file is still in the drop folder as
//! failed in the ledger, so the next `run` uploads them again through the usual pipeline. It
//! never deletes extra objects (dropslot removes nothing it did not publish) and cannot restore a
//! file that left the drop folder.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dropslot_actors::remote::Remote;
use futures_util::StreamExt;
use serde::Serialize;

use crate::ledger::{KnownFile, SqliteLedger};
use crate::remote::RESERVED_PREFIX;

/// One object that differs, and how.
#[derive(Debug, Serialize)]
pub struct Difference {
    pub path: String,
    pub why: String,
}

/// What `verify` found (printed as text or JSON).
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub folder: String,
    pub remote: String,
    /// Content was read back and hashed, not only sizes compared.
    pub deep: bool,
    /// Files the ledger records as published (all checked).
    pub checked: u64,
    pub missing: Vec<Difference>,
    pub different: Vec<Difference>,
    pub extra: Vec<Difference>,
    pub unpublished: Vec<Difference>,
    /// Paths marked for upload by `repair`.
    pub requeued: Vec<String>,
    /// Differences `repair` could not re-queue, and why.
    pub not_repaired: Vec<Difference>,
}

impl VerifyReport {
    /// The remote, the ledger and the drop folder agree.
    pub fn equal(&self) -> bool {
        self.missing.is_empty()
            && self.different.is_empty()
            && self.extra.is_empty()
            && self.unpublished.is_empty()
    }
}

/// The settings of one comparison.
pub struct Verify<'a> {
    pub remote: Arc<dyn Remote>,
    pub ledger: &'a SqliteLedger,
    pub folder: &'a Path,
    /// The drop folder's regular files (relative), ignored paths left out.
    pub local_files: Vec<PathBuf>,
    pub deep: bool,
    pub repair: bool,
    /// Read-backs in flight at once.
    pub concurrency: usize,
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

fn is_dropslots_own(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    path.components().any(|c| {
        c.as_os_str()
            .as_bytes()
            .starts_with(RESERVED_PREFIX.as_bytes())
    })
}

impl Verify<'_> {
    pub async fn run(self) -> anyhow::Result<VerifyReport> {
        let mut report = VerifyReport {
            folder: shown(self.folder),
            remote: self.remote.describe(),
            deep: self.deep,
            ..VerifyReport::default()
        };
        let known = self.ledger.entries()?;
        let listed: HashMap<PathBuf, u64> = self
            .remote
            .list()
            .await
            .map_err(|e| anyhow::anyhow!("cannot list the remote {}: {e}", report.remote))?
            .into_iter()
            .filter(|l| !is_dropslots_own(&l.path))
            .map(|l| (l.path, l.size))
            .collect();

        let published: Vec<&KnownFile> = known.iter().filter(|k| k.published).collect();
        report.checked = published.len() as u64;
        // Sizes come from the listing; a name it did not show is asked for directly (a server may
        // hide some names from listings, as nginx does dot files).
        let deep = self.deep;
        let sizes = futures_util::stream::iter(published.iter().map(|entry| {
            let remote = self.remote.clone();
            let listed = listed.get(&entry.path).copied();
            async move {
                let size = match listed {
                    Some(size) => Ok(Some(size)),
                    None => remote.stored_size(&entry.path).await,
                };
                let held = match (&size, entry.sha256) {
                    (Ok(Some(size)), Some(sha256)) if deep && *size == entry.size => {
                        Some(remote.holds(&entry.path, *size, &sha256).await)
                    }
                    _ => None,
                };
                (*entry, size, held)
            }
        }))
        .buffered(self.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
        let mut to_repair = Vec::new();
        for (entry, size, held) in sizes {
            let path = shown(&entry.path);
            let difference = match (size, held) {
                (Err(e), _) => anyhow::bail!("cannot verify {path}: {e}"),
                (_, Some(Err(e))) => anyhow::bail!("cannot read back {path}: {e}"),
                (Ok(None), _) => Some((
                    true,
                    format!("not on the remote ({} bytes published)", entry.size),
                )),
                (Ok(Some(size)), _) if size != entry.size => Some((
                    false,
                    format!("{size} bytes on the remote, {} published", entry.size),
                )),
                (_, Some(Ok(false))) => Some((
                    false,
                    "same size, other content on the remote (read back and hashed)".to_string(),
                )),
                _ => None,
            };
            if let Some((missing, why)) = difference {
                let list = if missing {
                    &mut report.missing
                } else {
                    &mut report.different
                };
                list.push(Difference {
                    path: path.clone(),
                    why: why.clone(),
                });
                to_repair.push((entry.path.clone(), why));
            }
        }

        let known_paths: HashSet<&Path> = known.iter().map(|k| k.path.as_path()).collect();
        let mut extra: Vec<_> = listed
            .iter()
            .filter(|(path, _)| !known_paths.contains(path.as_path()))
            .collect();
        extra.sort();
        report.extra = extra
            .into_iter()
            .map(|(path, size)| Difference {
                path: shown(path),
                why: format!("{size} bytes on the remote, unknown to the ledger"),
            })
            .collect();

        let by_path: HashMap<&Path, &KnownFile> =
            known.iter().map(|k| (k.path.as_path(), k)).collect();
        let mut local_files = self.local_files.clone();
        local_files.sort();
        for rel in &local_files {
            let why = match by_path.get(rel.as_path()) {
                None => "in the drop folder, not in the ledger".to_string(),
                Some(k) if !k.published => "in the drop folder, not published yet".to_string(),
                Some(k) => match std::fs::symlink_metadata(self.folder.join(rel)) {
                    Ok(meta) if meta.len() != k.size => format!(
                        "{} bytes in the drop folder, {} published",
                        meta.len(),
                        k.size
                    ),
                    _ => continue,
                },
            };
            report.unpublished.push(Difference {
                path: shown(rel),
                why,
            });
        }

        if self.repair {
            let present: HashSet<&Path> = local_files.iter().map(PathBuf::as_path).collect();
            let mut requeue = Vec::new();
            for (path, why) in to_repair {
                if present.contains(path.as_path()) {
                    report.requeued.push(shown(&path));
                    requeue.push(path);
                } else {
                    report.not_repaired.push(Difference {
                        path: shown(&path),
                        why: format!("{why}; the file is no longer in the drop folder"),
                    });
                }
            }
            self.ledger.mark_for_upload(
                &requeue,
                "dropslot verify: the remote does not hold the published version; uploaded again by the next run",
            )?;
            for extra in &report.extra {
                report.not_repaired.push(Difference {
                    path: extra.path.clone(),
                    why: "extra object left in place: dropslot deletes nothing it did not publish"
                        .to_string(),
                });
            }
        }
        Ok(report)
    }
}

/// The report as text, one line per difference.
pub fn print_text(report: &VerifyReport) {
    let how = if report.deep {
        "sizes and content (read back)"
    } else {
        "sizes"
    };
    println!(
        "verified folder {} against {} ({how}): {} published file(s) checked",
        report.folder, report.remote, report.checked
    );
    for (label, list) in [
        ("missing", &report.missing),
        ("different", &report.different),
        ("extra", &report.extra),
        ("unpublished", &report.unpublished),
    ] {
        println!("{label}: {}", list.len());
        for d in list.iter() {
            println!("  {}: {}", d.path, d.why);
        }
    }
    if !report.requeued.is_empty() {
        println!(
            "re-queued for the next run: {} (marked failed in the ledger)",
            report.requeued.len()
        );
        for path in &report.requeued {
            println!("  {path}");
        }
    }
    if !report.not_repaired.is_empty() {
        println!("not repaired: {}", report.not_repaired.len());
        for d in &report.not_repaired {
            println!("  {}: {}", d.path, d.why);
        }
    }
    println!("{}", if report.equal() { "equal" } else { "NOT equal" });
}
