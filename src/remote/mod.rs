//! The remote kinds, each a folder (`<kind>/mod.rs` the remote behind
//! [`dropslot_actors::remote::Remote`] and its error mapping, `<kind>/config.rs` its keys,
//! defaults and checks) listed once in [`config`]; the one function that builds the configured
//! one (wrapped in [`ReservedNames`], the one place that keeps user files off dropslot's own
//! names, and in [`redacted::Redacted`], the one place that keeps its secrets out of error
//! texts); `check`'s probe round trip shared by every kind. The HTTP plumbing the network kinds
//! share is [`http`]'s. Retries and bookkeeping are the pipeline's, not the remotes'.

#[macro_use]
pub mod config;
pub mod http;
pub mod redacted;

// The remote kinds: each a folder, and a line here.
kinds! {
    "local" => Local(local::LocalConfig),
    "s3" => S3(s3::S3Config),
    "webdav" => Webdav(webdav::WebdavConfig),
    "tahoe" => Tahoe(tahoe::TahoeConfig),
}

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use dropslot_actors::fileinfo::ContentHash;
pub use dropslot_actors::remote::PUBLISH_CONCURRENCY;
use dropslot_actors::remote::{
    ContentStream, FileAttributes, Listed, PublishItem, Remote, RemoteError, RemoteRef, Staged,
};

pub use config::{OnDelete, RemoteConfig};

/// Builds the configured remote. Errors name the setting or file at fault, never a secret.
pub fn build(config: &RemoteConfig) -> Result<Arc<dyn Remote>, BuildError> {
    Ok(build_checked(config)?.remote)
}

/// A remote the configuration cannot produce (a dircap file that holds no cap, a credentials
/// file without keys): the message names the setting or file. Exit code 2, like any other
/// configuration error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// The configured remote, and its health check (which writes dropslot's own probe name, so it
/// goes to the kind itself, not through [`ReservedNames`]); both redacted
/// ([`redacted::Redacted`]) when the kind has secrets.
pub struct Built {
    pub remote: Arc<dyn Remote>,
    pub health: Arc<dyn HealthCheck>,
}

/// [`build`], with the same remote's health check.
pub fn build_checked(config: &RemoteConfig) -> Result<Built, BuildError> {
    config.kind.config().build()
}

impl Built {
    /// A kind's remote: used through [`ReservedNames`], checked as itself.
    pub fn of<K: Remote + HealthCheck + 'static>(kind: K) -> Built {
        let kind = Arc::new(kind);
        Built {
            remote: Arc::new(ReservedNames(kind.clone())),
            health: kind,
        }
    }

    /// The same remote and health check, with `secrets` replaced in every error text.
    pub fn redacting(self, secrets: impl IntoIterator<Item = String>) -> Built {
        let secrets = redacted::Secrets::new(secrets);
        if secrets.is_empty() {
            return self;
        }
        Built {
            remote: Arc::new(redacted::Redacted {
                inner: self.remote,
                secrets: secrets.clone(),
            }),
            health: Arc::new(redacted::Redacted {
                inner: self.health,
                secrets,
            }),
        }
    }
}

/// The steps of the health check (`dropslot check`, and `run` at start-up), in order: the same
/// requests a file's upload makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The target itself: the server answers, the credentials are accepted, the bucket,
    /// collection or directory exists.
    Reach,
    Upload,
    Publish,
    Confirm,
    ReadBack,
    Delete,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Reach => "reach the target",
            Step::Upload => "upload a probe",
            Step::Publish => "publish it",
            Step::Confirm => "confirm it",
            Step::ReadBack => "read it back",
            Step::Delete => "delete it",
        }
    }
}

/// Where a health check reports each step that succeeded, with what it found, as it happens.
pub type Report<'a> = &'a (dyn Fn(Step, &str) + Send + Sync);

/// The step a health check stopped at, and why.
#[derive(Debug, Clone)]
pub struct CheckFailure {
    pub step: Step,
    pub error: RemoteError,
}

impl CheckFailure {
    /// The configuration itself is wrong (no such bucket, denied, not a directory): retrying
    /// cannot help, and `run` refuses to start. An unreachable server, or one that loses what
    /// it acknowledged, is not this: the pipeline retries and confirms file by file.
    pub fn misconfigured(&self) -> bool {
        !self.error.is_transient()
            && matches!(self.step, Step::Reach | Step::Upload | Step::Publish)
    }
}

impl std::fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step.name(), self.error.message)
    }
}

/// A remote kind's health check: [`Step::Reach`] is the kind's own, the probe round trip is
/// shared ([`probe`]). Each kind's [`Remote::check`] is this without a report.
#[async_trait]
pub trait HealthCheck: Send + Sync {
    async fn health_check(&self, report: Report<'_>) -> Result<(), CheckFailure>;
}

/// [`Remote::check`] for a kind: its health check, reported nowhere.
pub async fn silent_check<K: HealthCheck + ?Sized>(kind: &K) -> Result<(), RemoteError> {
    kind.health_check(&|_, _| {})
        .await
        .map_err(|f| RemoteError {
            class: f.error.class,
            message: f.to_string(),
        })
}

/// Runs `step`: its success is reported with the detail `ok` gives, its failure is the check's.
pub async fn step<T>(
    report: Report<'_>,
    step: Step,
    work: impl std::future::Future<Output = Result<T, RemoteError>>,
    ok: impl FnOnce(&T) -> String,
) -> Result<T, CheckFailure> {
    match work.await {
        Ok(value) => {
            report(step, &ok(&value));
            Ok(value)
        }
        Err(error) => Err(CheckFailure { step, error }),
    }
}

/// The start of every name dropslot itself writes on a remote (staging files, `check`'s probe).
pub const RESERVED_PREFIX: &str = ".dropslot-";

/// The name `check`'s probe is published under, at the top of the target.
pub const PROBE: &str = ".dropslot-check";

/// Why `path` may not be published because a component of it is one of dropslot's own names;
/// `None` if it may.
pub fn reserved_name_problem(path: &Path) -> Option<RemoteError> {
    use std::os::unix::ffi::OsStrExt;
    path.components()
        .any(|c| {
            c.as_os_str()
                .as_bytes()
                .starts_with(RESERVED_PREFIX.as_bytes())
        })
        .then(|| {
            RemoteError::permanent(format!(
                "{}: the name prefix {RESERVED_PREFIX} is reserved for dropslot's staging files",
                path.display()
            ))
        })
}

/// Every configured remote is used through this wrapper, so that no user file can take a name
/// dropslot writes itself (a staging name like `.dropslot-<hash of another name>.partial` would
/// otherwise publish one file's bytes under another's name). Everything else is the inner
/// kind's.
pub struct ReservedNames(pub Arc<dyn Remote>);

#[async_trait]
impl Remote for ReservedNames {
    fn describe(&self) -> String {
        self.0.describe()
    }

    async fn check(&self) -> Result<(), RemoteError> {
        self.0.check().await
    }

    async fn reconcile(&self, interrupted: Vec<PathBuf>) -> Result<(), RemoteError> {
        let allowed = interrupted
            .into_iter()
            .filter(|p| reserved_name_problem(p).is_none())
            .collect();
        self.0.reconcile(allowed).await
    }

    async fn stage(
        &self,
        path: &Path,
        size: u64,
        attributes: FileAttributes,
        content: ContentStream,
    ) -> Result<Staged, RemoteError> {
        if let Some(refused) = reserved_name_problem(path) {
            return Err(refused);
        }
        self.0.stage(path, size, attributes, content).await
    }

    async fn publish(&self, items: Vec<PublishItem>) -> Vec<Result<RemoteRef, RemoteError>> {
        self.0.publish(items).await
    }

    async fn confirm(&self, items: &[PublishItem]) -> Vec<Result<(), RemoteError>> {
        self.0.confirm(items).await
    }

    async fn stored_size(&self, path: &Path) -> Result<Option<u64>, RemoteError> {
        self.0.stored_size(path).await
    }

    async fn discard(&self, path: &Path, staged: Staged) {
        self.0.discard(path, staged).await
    }

    async fn holds(
        &self,
        path: &Path,
        size: u64,
        sha256: &ContentHash,
    ) -> Result<bool, RemoteError> {
        if reserved_name_problem(path).is_some() {
            return Ok(false);
        }
        self.0.holds(path, size, sha256).await
    }

    async fn list(&self) -> Result<Vec<Listed>, RemoteError> {
        self.0.list().await
    }

    async fn delete(&self, path: &Path) -> Result<(), RemoteError> {
        // Such a file was refused, so never published under that name; deleting the name could
        // only remove another file's staged upload.
        if reserved_name_problem(path).is_some() {
            return Ok(());
        }
        self.0.delete(path).await
    }

    fn directory_of(&self, path: &Path) -> PathBuf {
        self.0.directory_of(path)
    }

    fn reference_of(&self, item: &PublishItem) -> RemoteRef {
        self.0.reference_of(item)
    }
}

/// Stages `check`'s probe: fresh content each time, so an earlier probe left on the remote cannot
/// pass for this one, and longer than 55 bytes, so Tahoe stores it on the grid instead of inside
/// its cap (a LIT cap). Returns the staged upload, its size and SHA-256.
pub async fn stage_probe<R: Remote + ?Sized>(
    remote: &R,
    report: Report<'_>,
) -> Result<(Staged, u64, ContentHash), CheckFailure> {
    use sha2::Digest;
    let content = bytes::Bytes::from(format!(
        "dropslot check {}: written, read back and deleted by `dropslot check`\n",
        uuid::Uuid::new_v4().as_hyphenated()
    ));
    let size = content.len() as u64;
    let sha256: ContentHash = sha2::Sha256::digest(&content).into();
    let stream: ContentStream = Box::pin(futures_util::stream::once(async move { Ok(content) }));
    let staged = step(
        report,
        Step::Upload,
        remote.stage(Path::new(PROBE), size, FileAttributes::default(), stream),
        |_| format!("{PROBE}, {size} bytes"),
    )
    .await?;
    Ok((staged, size, sha256))
}

/// The error for a probe the remote acknowledged but did not give back.
pub fn probe_not_kept(how: &str) -> RemoteError {
    RemoteError::permanent(format!(
        "the remote did not keep the probe {PROBE}: it acknowledged the upload, but {how} gave \
         other content or nothing"
    ))
}

/// `check`'s round trip, the same steps a file takes: a small probe with fresh content is staged,
/// published, confirmed ([`Remote::confirm`]) and read back (size and SHA-256), then deleted. A
/// remote that acknowledges writes and keeps nothing fails here, not after a day of uploads.
pub async fn probe<R: Remote + ?Sized>(remote: &R, report: Report<'_>) -> Result<(), CheckFailure> {
    let path = Path::new(PROBE);
    let (staged, size, sha256) = stage_probe(remote, report).await?;
    let item = PublishItem {
        path: path.to_path_buf(),
        staged: staged.clone(),
        size,
        sha256,
    };
    let kept = async {
        let published = async {
            match remote.publish(vec![item.clone()]).await.into_iter().next() {
                Some(result) => result,
                None => Err(RemoteError::transient("the remote gave no answer for it")),
            }
        };
        step(report, Step::Publish, published, |r| format!("as {}", r.0)).await?;
        let confirmed = async {
            let mut results = remote.confirm(std::slice::from_ref(&item)).await;
            results
                .pop()
                .unwrap_or_else(|| Err(RemoteError::transient("the remote gave no answer for it")))
        };
        step(report, Step::Confirm, confirmed, |_| {
            format!("the remote holds {size} bytes under {PROBE}")
        })
        .await
        .map_err(|f| CheckFailure {
            error: RemoteError {
                class: f.error.class,
                message: format!(
                    "the remote did not keep the probe (it acknowledged the upload): {}",
                    f.error.message
                ),
            },
            ..f
        })?;
        let held = async {
            match remote.holds(path, size, &sha256).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(probe_not_kept("reading it back")),
                Err(e) => Err(e),
            }
        };
        step(report, Step::ReadBack, held, |_| {
            format!("{size} bytes, SHA-256 matches")
        })
        .await
    }
    .await;
    if kept.is_err() {
        remote.discard(path, staged).await;
    }
    let removed = step(report, Step::Delete, remote.delete(path), |_| String::new()).await;
    kept.and(removed)
}

/// Whether a downloaded body hashes to `sha256`; a failed read is the caller's kind of error.
pub async fn body_matches<E>(
    body: impl futures_util::Stream<Item = Result<bytes::Bytes, E>>,
    sha256: &ContentHash,
    error: impl Fn(E) -> RemoteError,
) -> Result<bool, RemoteError> {
    use futures_util::StreamExt;
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        hasher.update(&chunk.map_err(&error)?);
    }
    Ok(<ContentHash>::from(hasher.finalize()) == *sha256)
}

/// The temporary name under which `path` is staged beside its destination: derived from the
/// name, so an interrupted upload's leftover can be found again, and of fixed length, so it fits
/// wherever the real name fits.
pub fn staging_name(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    let (hash, _) = dropslot_actors::fileinfo::hash_stream(name, name.len() as u64, |_| Ok(()))
        .expect("hashing a slice cannot fail");
    format!(
        ".dropslot-{}.partial",
        &dropslot_actors::fileinfo::to_hex(&hash)[..16]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropslot_names_are_refused_at_any_depth() {
        assert!(reserved_name_problem(Path::new("a/b.txt")).is_none());
        assert!(reserved_name_problem(Path::new("x.dropslot-y")).is_none());
        let refused = reserved_name_problem(Path::new("d/.dropslot-0123.partial")).unwrap();
        assert!(!refused.is_transient());
        assert!(refused.message.contains("d/.dropslot-0123.partial"));
        assert!(refused.message.contains("reserved"));
        assert!(reserved_name_problem(Path::new(".dropslot-x/f")).is_some());
    }
}
