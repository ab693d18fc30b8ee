//! The local-directory remote, the embedded default: publishes into a directory on this machine.
//!
//! Staging writes into `<target>/.dropslot-partial/` (same file system as the target, so the
//! final `rename` is atomic and a reader sees either the old file or the complete new one, never
//! a partial one). The staged file is synced before it is renamed, and the directory after.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use dropslot_actors::remote::{ContentStream, PublishItem, Remote, RemoteError, RemoteRef, Staged};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

/// Where staged files wait, inside the target directory.
pub const STAGING_DIR: &str = ".dropslot-partial";

pub struct LocalRemote {
    root: PathBuf,
    staging: PathBuf,
}

impl LocalRemote {
    pub fn new(root: PathBuf) -> Self {
        let staging = root.join(STAGING_DIR);
        LocalRemote { root, staging }
    }

    fn staged_file(&self, staged: &Staged) -> PathBuf {
        self.staging.join(&staged.0)
    }
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

fn publish_one(root: &Path, staging: &Path, item: &PublishItem) -> Result<RemoteRef, RemoteError> {
    let dest = root.join(&item.path);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            classify(
                format!(
                    "cannot create the directory for {} in {}",
                    item.path.display(),
                    root.display()
                ),
                e,
            )
        })?;
    }
    if dest.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        return Err(RemoteError::permanent(format!(
            "cannot publish {}: a directory of that name is in the way in {}",
            item.path.display(),
            root.display()
        )));
    }
    std::fs::rename(staging.join(&item.staged.0), &dest).map_err(|e| {
        classify(
            format!(
                "cannot publish {} into {}",
                item.path.display(),
                root.display()
            ),
            e,
        )
    })?;
    Ok(RemoteRef(item.path.display().to_string()))
}

#[async_trait]
impl Remote for LocalRemote {
    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }

    async fn check(&self) -> Result<(), RemoteError> {
        tokio::fs::create_dir_all(&self.staging)
            .await
            .map_err(|e| classify(format!("cannot create {}", self.staging.display()), e))?;
        let probe = self.staging.join(format!("check-{}", uuid::Uuid::new_v4()));
        tokio::fs::write(&probe, b"dropslot check")
            .await
            .map_err(|e| classify(format!("cannot write into {}", self.root.display()), e))?;
        let _ = tokio::fs::remove_file(&probe).await;
        Ok(())
    }

    async fn reconcile(&self) -> Result<(), RemoteError> {
        match tokio::fs::remove_dir_all(&self.staging).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(classify(
                format!("cannot clean {}", self.staging.display()),
                e,
            )),
        }
    }

    async fn stage(
        &self,
        path: &Path,
        size: u64,
        mut content: ContentStream,
    ) -> Result<Staged, RemoteError> {
        let context = || {
            format!(
                "cannot stage {} in {}",
                path.display(),
                self.staging.display()
            )
        };
        tokio::fs::create_dir_all(&self.staging)
            .await
            .map_err(|e| classify(context(), e))?;
        let staged = Staged(uuid::Uuid::new_v4().to_string());
        let file = self.staged_file(&staged);
        let written = async {
            let mut out = tokio::fs::File::create(&file).await?;
            let mut total = 0u64;
            while let Some(chunk) = content.next().await {
                let chunk = chunk?;
                total += chunk.len() as u64;
                out.write_all(&chunk).await?;
            }
            out.flush().await?;
            out.sync_data().await?;
            Ok::<u64, io::Error>(total)
        }
        .await;
        match written {
            Ok(total) if total == size => Ok(staged),
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
        let (root, staging) = (self.root.clone(), self.staging.clone());
        let count = items.len();
        let joined = tokio::task::spawn_blocking(move || {
            let results: Vec<_> = items
                .iter()
                .map(|item| publish_one(&root, &staging, item))
                .collect();
            // One directory sync per batch makes the renames durable.
            if let Some(dir) = items
                .first()
                .and_then(|i| root.join(&i.path).parent().map(Path::to_path_buf))
            {
                if let Ok(d) = std::fs::File::open(&dir) {
                    let _ = d.sync_all();
                }
            }
            results
        })
        .await;
        joined.unwrap_or_else(|e| {
            (0..count)
                .map(|_| Err(RemoteError::transient(format!("publish task failed: {e}"))))
                .collect()
        })
    }

    async fn discard(&self, staged: Staged) {
        let _ = tokio::fs::remove_file(self.staged_file(&staged)).await;
    }

    async fn delete(&self, path: &Path) -> Result<(), RemoteError> {
        let dest = self.root.join(path);
        match tokio::fs::remove_file(&dest).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(classify(format!("cannot delete {}", dest.display()), e)),
        }
        // Empty directories left behind go too, up to (not including) the target itself.
        let mut dir = dest.parent();
        while let Some(d) = dir {
            if d == self.root || tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}
