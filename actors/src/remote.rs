//! The one trait every remote kind implements. Owns the contract between the pipeline and a
//! storage backend; it does not own retries (the slots and the linker retry) nor bookkeeping (the
//! ledger does).
//!
//! An upload happens in two steps so that readers of the remote never see a partial file:
//! [`Remote::stage`] moves the bytes somewhere invisible (a temporary name, an immutable object),
//! and [`Remote::publish`] makes a batch of staged uploads visible under their names. The
//! directory linker calls `publish` for one remote directory at a time, then
//! [`Remote::confirm`]s each file with the remote before the ledger records it: an answer of
//! "done" is not evidence that the remote keeps the content (a broken server or a proxy may
//! acknowledge writes and store nothing).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::fileinfo::ContentHash;

/// A file's content as it is read from disk, chunk by chunk.
pub type ContentStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// An upload that holds the content but is not visible under its name yet. The token is the
/// remote's own (a temporary file name, an upload id, a Tahoe cap).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged(pub String);

/// What the remote calls a published file; kept in the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteRef(pub String);

/// Requests of one kind (publishes, confirmations) a batch may have in flight at once: each is an
/// independent step, and with network latency they dominate a burst of small files.
pub const PUBLISH_CONCURRENCY: usize = 16;

/// What a remote may keep of a file besides its content, where it can (see each kind's docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileAttributes {
    /// Permission bits (`0o777` at most: setuid, setgid and sticky bits are never passed on,
    /// since the people writing to the drop folder are not trusted).
    pub mode: Option<u32>,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: Option<i64>,
}

impl FileAttributes {
    /// The attributes of an opened source file's metadata.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileAttributes {
            mode: Some(meta.mode() & 0o777),
            mtime_ns: Some(meta.mtime() * 1_000_000_000 + meta.mtime_nsec()),
        }
    }
}

/// A file a remote holds, as [`Remote::list`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Relative to the target, like the drop folder's names.
    pub path: PathBuf,
    pub size: u64,
}

/// One staged upload to publish under `path` (relative to the drop folder).
#[derive(Clone, Debug)]
pub struct PublishItem {
    pub path: PathBuf,
    pub staged: Staged,
    /// What was staged, so a remote can recognise its own earlier publish when the answer to it
    /// was lost and the retry finds the staged upload already gone.
    pub size: u64,
    pub sha256: ContentHash,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Worth retrying: timeouts, resets, server errors, a full or missing disk that may return.
    Transient,
    /// Retrying would fail the same way: the name is impossible, access is denied.
    Permanent,
}

/// An error from a remote. Its message must never contain secrets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub class: ErrorClass,
    pub message: String,
}

impl RemoteError {
    pub fn transient(message: impl Into<String>) -> Self {
        RemoteError {
            class: ErrorClass::Transient,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        RemoteError {
            class: ErrorClass::Permanent,
            message: message.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }
}

#[async_trait]
pub trait Remote: Send + Sync + 'static {
    /// Says where files go, for logs and `check`. No secrets.
    fn describe(&self) -> String;

    /// Verifies that the remote is reachable and writable.
    async fn check(&self) -> Result<(), RemoteError>;

    /// Removes what interrupted uploads of these paths left behind (called once at start-up
    /// with the ledger's pending entries). Nothing, for a kind whose interrupted uploads leave
    /// nothing a reader could see or that costs anything to keep.
    async fn reconcile(&self, _interrupted: Vec<PathBuf>) -> Result<(), RemoteError> {
        Ok(())
    }

    /// Stores `content` (exactly `size` bytes) invisibly, ready to be published as `path`, with
    /// whatever of `attributes` this kind keeps.
    async fn stage(
        &self,
        path: &Path,
        size: u64,
        attributes: FileAttributes,
        content: ContentStream,
    ) -> Result<Staged, RemoteError>;

    /// Makes staged uploads visible. All items share one remote directory ([`Remote::directory_of`]);
    /// the result has one entry per item, in order.
    async fn publish(&self, items: Vec<PublishItem>) -> Vec<Result<RemoteRef, RemoteError>>;

    /// Evidence, asked of the remote itself, that publishes `publish` answered with success took:
    /// the remote now holds an object of the staged size under each name. The items share one
    /// directory, like `publish`'s; the result has one entry per item, in order. The linker
    /// records nothing it could not confirm; a failure is retried like a failed publish (so a
    /// kind keeps what a retry of `publish` needs until `confirm` succeeds or `discard` is
    /// called). The default asks [`Remote::stored_size`] for each item, several at once.
    async fn confirm(&self, items: &[PublishItem]) -> Vec<Result<(), RemoteError>> {
        confirm_sizes(self, items).await
    }

    /// The size of what the remote holds under `path`, read from the remote (a stat, a HEAD, a
    /// listing), never from anything dropslot remembers; `None` if it holds nothing there.
    async fn stored_size(&self, path: &Path) -> Result<Option<u64>, RemoteError>;

    /// Forgets the staged upload of `path` that will not be published.
    async fn discard(&self, path: &Path, staged: Staged);

    /// Whether `path` is published with exactly this content (read back and hashed). It tells a
    /// publish whose answer was lost from one that never happened, and lets a lost ledger be
    /// rebuilt without sending everything again. `false` where a remote cannot tell.
    async fn holds(
        &self,
        _path: &Path,
        _size: u64,
        _sha256: &ContentHash,
    ) -> Result<bool, RemoteError> {
        Ok(false)
    }

    /// Every file the remote holds under the target (names relative to it, dropslot's own
    /// staging names included), with its size, read from the remote itself: what `dropslot
    /// verify` compares with the ledger. The default is a permanent error for kinds that cannot
    /// list.
    async fn list(&self) -> Result<Vec<Listed>, RemoteError> {
        Err(RemoteError::permanent(format!(
            "{}: this kind of remote cannot list what it holds",
            self.describe()
        )))
    }

    /// Removes the published file `path`; a file that is not there is not an error.
    async fn delete(&self, path: &Path) -> Result<(), RemoteError>;

    /// The remote directory whose listing changes when `path` is published; the linker never
    /// changes one directory from two requests at once.
    fn directory_of(&self, path: &Path) -> PathBuf {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    /// What [`Remote::publish`] returns for `item` when it succeeds: the reference the ledger
    /// keeps when the linker finds a publish whose answer was lost already in place.
    fn reference_of(&self, item: &PublishItem) -> RemoteRef {
        RemoteRef(item.path.display().to_string())
    }
}

/// [`Remote::confirm`]'s default, for kinds that add to it: [`confirm_size`] for each item,
/// [`PUBLISH_CONCURRENCY`] at once (one request each: a burst of small files is not serialised
/// on round trips).
pub async fn confirm_sizes<R: Remote + ?Sized>(
    remote: &R,
    items: &[PublishItem],
) -> Vec<Result<(), RemoteError>> {
    use futures_util::StreamExt;
    // Built first, then run: a closure inside the stream trips the compiler's lifetime
    // inference under async_trait.
    let confirmations: Vec<_> = items
        .iter()
        .map(|item| confirm_size(remote, item))
        .collect();
    futures_util::stream::iter(confirmations)
        .buffered(PUBLISH_CONCURRENCY)
        .collect()
        .await
}

/// The remote reports an object of the staged size under the item's name. Every failure is
/// transient (the publish is retried).
pub async fn confirm_size<R: Remote + ?Sized>(
    remote: &R,
    item: &PublishItem,
) -> Result<(), RemoteError> {
    let path = item.path.display();
    match remote.stored_size(&item.path).await {
        Ok(Some(size)) if size == item.size => Ok(()),
        Ok(Some(size)) => Err(RemoteError::transient(format!(
            "{path}: the remote answered that it was published but holds {size} bytes under that \
             name, not {}",
            item.size
        ))),
        Ok(None) => Err(RemoteError::transient(format!(
            "{path}: the remote answered that it was published but does not hold it"
        ))),
        Err(e) => Err(RemoteError::transient(format!(
            "cannot confirm that {path} was published: {e}"
        ))),
    }
}
