//! The local-directory remote, the embedded default: publishes into a directory on this machine.
//!
//! A file is staged under a temporary name in its destination directory
//! (`.dropslot-<hash of the name>.partial`) and published by an atomic `rename`, so a reader sees
//! the old file or the complete new one, never a partial one. Staging beside the destination (as
//! rsync and rclone do) keeps the rename inside one directory; a single shared staging directory
//! made ext4's inode allocation the bottleneck of bursts of small files (3.5x slower per file).
//! The temporary name is derived from the file's name, so an interrupted upload's leftover is
//! found from the ledger's pending entries and overwritten by the next attempt anyway.
//!
//! Durability: one `syncfs` per published batch, before the linker records the batch in the
//! ledger, so "published" in the ledger means "on disk" without an fsync per file.
//!
//! Kept besides content: the permission bits (`0o777`; never setuid, setgid or sticky) and the
//! modification time of the source, set on the staged file so the rename publishes them too.
//! A delete removes the directories it leaves empty, up to (not including) the target.

mod config;
pub use config::LocalConfig;

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use dropslot_actors::fileinfo::{hash_file, is_gone, ContentHash};
use dropslot_actors::remote::{
    ContentStream, FileAttributes, Listed, PublishItem, Remote, RemoteError, RemoteRef, Staged,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

#[derive(Clone)]
pub struct LocalRemote {
    root: PathBuf,
}

impl LocalRemote {
    pub fn new(root: PathBuf) -> Self {
        LocalRemote { root }
    }

    /// Where `path` (relative) is staged: beside its destination.
    fn staging_file(&self, path: &Path) -> PathBuf {
        self.root
            .join(path)
            .with_file_name(super::staging_name(path))
    }
}

/// Files up to this size are gathered in memory and written in one blocking step: a burst of small
/// files spent more time handing each `tokio::fs` call to a thread than writing.
const SMALL_FILE: u64 = 1 << 20;

/// Gives the staged file the source's mode and modification time (a later rename keeps both).
fn apply_attributes(file: &std::fs::File, attributes: FileAttributes) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(mode) = attributes.mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
    }
    if let Some(ns) = attributes.mtime_ns {
        let since_epoch = std::time::Duration::from_nanos(ns.unsigned_abs());
        let mtime = if ns >= 0 {
            std::time::UNIX_EPOCH + since_epoch
        } else {
            std::time::UNIX_EPOCH - since_epoch
        };
        file.set_modified(mtime)?;
    }
    Ok(())
}

/// Creates the staging file and its directories. A delete or discarded upload in the same
/// directory may remove a directory just made (it was empty for a moment), so a vanished parent
/// is made again, once.
fn create_staging(file: &Path) -> io::Result<std::fs::File> {
    let mut again = true;
    loop {
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::File::create(file) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && again => again = false,
            created => return created,
        }
    }
}

async fn stage_small(
    file: PathBuf,
    size: u64,
    attributes: FileAttributes,
    mut content: ContentStream,
) -> io::Result<Staged> {
    let mut bytes = Vec::with_capacity(size as usize);
    while let Some(chunk) = content.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    if bytes.len() as u64 != size {
        return Err(io::Error::other(format!(
            "read {} bytes, expected {size}",
            bytes.len()
        )));
    }
    tokio::task::spawn_blocking(move || {
        let written = create_staging(&file).and_then(|mut out| {
            io::Write::write_all(&mut out, &bytes)?;
            apply_attributes(&out, attributes)
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&file);
            return Err(e);
        }
        Ok(Staged(file.display().to_string()))
    })
    .await
    .map_err(io::Error::other)?
}

/// A full or failing disk may recover; a name or permission problem will not.
fn classify(context: String, e: io::Error) -> RemoteError {
    use io::ErrorKind::*;
    let message = format!("{context}: {e}");
    match e.kind() {
        PermissionDenied | ReadOnlyFilesystem | IsADirectory | NotADirectory
        | DirectoryNotEmpty | InvalidFilename | InvalidInput | AlreadyExists => {
            RemoteError::permanent(message)
        }
        _ => RemoteError::transient(message),
    }
}

fn sync_file_system(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open for the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl LocalRemote {
    /// Removes the directories above `file` that are empty now, up to (not including) the
    /// target itself: a delete or a discarded upload leaves no empty directory behind.
    async fn prune(&self, file: &Path) {
        let mut dir = file.parent();
        while let Some(d) = dir {
            if d == self.root
                || !d.starts_with(&self.root)
                || tokio::fs::remove_dir(d).await.is_err()
            {
                break;
            }
            dir = d.parent();
        }
    }

    fn publish_one(&self, item: &PublishItem) -> Result<RemoteRef, RemoteError> {
        let dest = self.root.join(&item.path);
        if dest.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            return Err(RemoteError::permanent(format!(
                "cannot publish {}: a directory of that name is in the way in {}",
                item.path.display(),
                self.root.display()
            )));
        }
        match std::fs::rename(self.staging_file(&item.path), &dest) {
            Ok(()) => {}
            // Renamed by an earlier attempt whose confirmation failed: in place already, if the
            // content says so.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    && hash_file(&dest).is_ok_and(|(hash, meta)| {
                        meta.size == item.size && hash == item.sha256
                    }) => {}
            Err(e) => {
                let context = format!(
                    "cannot publish {} into {}",
                    item.path.display(),
                    self.root.display()
                );
                return Err(classify(context, e));
            }
        }
        Ok(RemoteRef(item.path.display().to_string()))
    }
}

#[async_trait]
impl super::HealthCheck for LocalRemote {
    async fn health_check(&self, report: super::Report<'_>) -> Result<(), super::CheckFailure> {
        let root = &self.root;
        let reach = async {
            let existed = root.is_dir();
            match tokio::fs::create_dir_all(root).await {
                Ok(()) if existed => Ok(format!("{} exists", root.display())),
                Ok(()) => Ok(format!("created {}", root.display())),
                Err(e) => {
                    let why = match e.kind() {
                        io::ErrorKind::NotADirectory | io::ErrorKind::AlreadyExists => {
                            "it (or a directory above it) is not a directory: fix remote.path"
                                .to_string()
                        }
                        io::ErrorKind::PermissionDenied => format!(
                            "permission denied: this user (uid {}) may not create it",
                            effective_uid()
                        ),
                        _ => "cannot create it".to_string(),
                    };
                    Err(classify(
                        format!("remote.path {}: {why}", root.display()),
                        e,
                    ))
                }
            }
        };
        super::step(report, super::Step::Reach, reach, Clone::clone).await?;
        super::probe(self, report).await.map_err(|mut f| {
            if f.error.message.contains("ermission denied") {
                f.error.message = format!(
                    "{} (this user, uid {}, may not write in remote.path {})",
                    f.error.message,
                    effective_uid(),
                    root.display()
                );
            }
            f
        })
    }
}

/// Every regular file below `root` with its size; links are not followed (the local remote
/// never makes one, so a link is not something dropslot published). A target that does not
/// exist holds nothing.
fn list_tree(root: &Path) -> Result<Vec<Listed>, RemoteError> {
    let mut found = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(root.join(&dir)) {
            Ok(entries) => entries,
            Err(e) if dir.as_os_str().is_empty() && e.kind() == io::ErrorKind::NotFound => {
                return Ok(found)
            }
            Err(e) => {
                return Err(classify(
                    format!("cannot list {}", root.join(&dir).display()),
                    e,
                ))
            }
        };
        for entry in entries {
            let entry =
                entry.map_err(|e| classify(format!("cannot list {}", root.join(&dir).display()), e))?;
            let rel = dir.join(entry.file_name());
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if is_gone(&e) => continue,
                Err(e) => return Err(classify(format!("cannot stat {}", rel.display()), e)),
            };
            if meta.is_dir() {
                dirs.push(rel);
            } else if meta.is_file() {
                found.push(Listed {
                    path: rel,
                    size: meta.len(),
                });
            }
        }
    }
    Ok(found)
}

/// The effective user id, for messages about permissions.
fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[async_trait]
impl Remote for LocalRemote {
    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }

    async fn check(&self) -> Result<(), RemoteError> {
        super::silent_check(self).await
    }

    async fn reconcile(&self, interrupted: Vec<PathBuf>) -> Result<(), RemoteError> {
        for path in interrupted {
            match tokio::fs::remove_file(self.staging_file(&path)).await {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed the leftover of an interrupted upload")
                }
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.kind() == io::ErrorKind::NotADirectory => {}
                Err(e) => {
                    return Err(classify(
                        format!("cannot clean up after {}", path.display()),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }

    async fn stage(
        &self,
        path: &Path,
        size: u64,
        attributes: FileAttributes,
        mut content: ContentStream,
    ) -> Result<Staged, RemoteError> {
        let file = self.staging_file(path);
        let context = || format!("cannot stage {} in {}", path.display(), self.root.display());
        if size <= SMALL_FILE {
            return stage_small(file, size, attributes, content)
                .await
                .map_err(|e| classify(context(), e));
        }
        let written = async {
            let creating = file.clone();
            let out = tokio::task::spawn_blocking(move || create_staging(&creating))
                .await
                .map_err(io::Error::other)??;
            let mut out = tokio::fs::File::from_std(out);
            let mut total = 0u64;
            while let Some(chunk) = content.next().await {
                let chunk = chunk?;
                total += chunk.len() as u64;
                out.write_all(&chunk).await?;
            }
            out.flush().await?;
            let out = out.into_std().await;
            tokio::task::spawn_blocking(move || apply_attributes(&out, attributes))
                .await
                .map_err(io::Error::other)??;
            Ok::<u64, io::Error>(total)
        }
        .await;
        match written {
            Ok(total) if total == size => Ok(Staged(file.display().to_string())),
            Ok(total) => {
                let _ = tokio::fs::remove_file(&file).await;
                Err(RemoteError::transient(format!(
                    "{}: read {total} bytes, expected {size}",
                    context()
                )))
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&file).await;
                Err(classify(context(), e))
            }
        }
    }

    async fn publish(&self, items: Vec<PublishItem>) -> Vec<Result<RemoteRef, RemoteError>> {
        let remote = self.clone();
        let count = items.len();
        let published = tokio::task::spawn_blocking(move || {
            let mut results: Vec<_> = items.iter().map(|item| remote.publish_one(item)).collect();
            if results.iter().any(Result::is_ok) {
                if let Err(e) = sync_file_system(&remote.root) {
                    let message = format!("cannot sync {}: {e}", remote.root.display());
                    for result in results.iter_mut().filter(|r| r.is_ok()) {
                        *result = Err(RemoteError::transient(message.clone()));
                    }
                }
            }
            results
        })
        .await;
        published.unwrap_or_else(|e| {
            (0..count)
                .map(|_| Err(RemoteError::transient(format!("publish task failed: {e}"))))
                .collect()
        })
    }

    async fn stored_size(&self, path: &Path) -> Result<Option<u64>, RemoteError> {
        match tokio::fs::symlink_metadata(self.root.join(path)).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if is_gone(&e) => Ok(None),
            Err(e) => Err(classify(format!("cannot stat {}", path.display()), e)),
        }
    }

    async fn discard(&self, path: &Path, _staged: Staged) {
        let staged = self.staging_file(path);
        let _ = tokio::fs::remove_file(&staged).await;
        self.prune(&staged).await;
    }

    async fn holds(
        &self,
        path: &Path,
        size: u64,
        sha256: &ContentHash,
    ) -> Result<bool, RemoteError> {
        let dest = self.root.join(path);
        let found = tokio::task::spawn_blocking(move || hash_file(&dest))
            .await
            .map_err(|e| RemoteError::transient(format!("read-back task failed: {e}")))?;
        match found {
            Ok((hash, meta)) => Ok(meta.size == size && hash == *sha256),
            Err(e) if is_gone(&e) => Ok(false),
            Err(e) => Err(classify(format!("cannot read back {}", path.display()), e)),
        }
    }

    async fn list(&self) -> Result<Vec<Listed>, RemoteError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || list_tree(&root))
            .await
            .map_err(|e| RemoteError::transient(format!("listing task failed: {e}")))?
    }

    async fn delete(&self, path: &Path) -> Result<(), RemoteError> {
        let dest = self.root.join(path);
        match tokio::fs::remove_file(&dest).await {
            Ok(()) => {}
            // Never published: its directories may still have been made for staging.
            Err(e) if is_gone(&e) => {}
            Err(e) => return Err(classify(format!("cannot delete {}", dest.display()), e)),
        }
        self.prune(&dest).await;
        Ok(())
    }
}
