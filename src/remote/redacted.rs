//! Secret redaction, once for every kind: each kind's build names the credentials it was
//! configured with (S3's keys, a WebDAV password, a Tahoe write-cap), and every error text and
//! health-check report that leaves the remote passes through [`Redacted`], which replaces them.
//! Servers echo parts of a request in their errors (S3 the key id, a Tahoe gateway the cap in a
//! traceback); none of it may reach a log. It does not keep secrets out of URLs or requests:
//! that is each kind's (reqwest errors are stripped of their URL there).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use dropslot_actors::fileinfo::ContentHash;
use dropslot_actors::remote::{
    ContentStream, FileAttributes, Listed, PublishItem, Remote, RemoteError, RemoteRef, Staged,
};

use super::{CheckFailure, HealthCheck, Report};

const REDACTED: &str = "<redacted>";

/// Values shorter than this are not replaced: they would match everywhere and protect nothing.
const SHORTEST: usize = 3;

/// The secrets to replace.
#[derive(Clone, Default)]
pub struct Secrets(Arc<Vec<String>>);

impl Secrets {
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values.into_iter().filter(|s| s.len() >= SHORTEST).collect();
        // The longest first, so a secret containing another is replaced whole.
        values.sort_by_key(|s| std::cmp::Reverse(s.len()));
        values.dedup();
        Secrets(Arc::new(values))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn text(&self, text: &str) -> String {
        self.0.iter().fold(text.to_string(), |text, secret| {
            text.replace(secret, REDACTED)
        })
    }

    pub fn error(&self, mut error: RemoteError) -> RemoteError {
        error.message = self.text(&error.message);
        error
    }

    fn result<T>(&self, result: Result<T, RemoteError>) -> Result<T, RemoteError> {
        result.map_err(|e| self.error(e))
    }
}

/// A remote (or its health check) whose every error text is redacted.
pub struct Redacted<R: ?Sized> {
    pub inner: Arc<R>,
    pub secrets: Secrets,
}

#[async_trait]
impl Remote for Redacted<dyn Remote> {
    fn describe(&self) -> String {
        self.secrets.text(&self.inner.describe())
    }

    async fn check(&self) -> Result<(), RemoteError> {
        self.secrets.result(self.inner.check().await)
    }

    async fn reconcile(&self, interrupted: Vec<PathBuf>) -> Result<(), RemoteError> {
        self.secrets.result(self.inner.reconcile(interrupted).await)
    }

    async fn stage(
        &self,
        path: &Path,
        size: u64,
        attributes: FileAttributes,
        content: ContentStream,
    ) -> Result<Staged, RemoteError> {
        self.secrets
            .result(self.inner.stage(path, size, attributes, content).await)
    }

    async fn publish(&self, items: Vec<PublishItem>) -> Vec<Result<RemoteRef, RemoteError>> {
        let results = self.inner.publish(items).await;
        results
            .into_iter()
            .map(|r| self.secrets.result(r))
            .collect()
    }

    async fn confirm(&self, items: &[PublishItem]) -> Vec<Result<(), RemoteError>> {
        let results = self.inner.confirm(items).await;
        results
            .into_iter()
            .map(|r| self.secrets.result(r))
            .collect()
    }

    async fn stored_size(&self, path: &Path) -> Result<Option<u64>, RemoteError> {
        self.secrets.result(self.inner.stored_size(path).await)
    }

    async fn discard(&self, path: &Path, staged: Staged) {
        self.inner.discard(path, staged).await
    }

    async fn holds(
        &self,
        path: &Path,
        size: u64,
        sha256: &ContentHash,
    ) -> Result<bool, RemoteError> {
        self.secrets
            .result(self.inner.holds(path, size, sha256).await)
    }

    async fn list(&self) -> Result<Vec<Listed>, RemoteError> {
        self.secrets.result(self.inner.list().await)
    }

    async fn delete(&self, path: &Path) -> Result<(), RemoteError> {
        self.secrets.result(self.inner.delete(path).await)
    }

    fn directory_of(&self, path: &Path) -> PathBuf {
        self.inner.directory_of(path)
    }

    fn reference_of(&self, item: &PublishItem) -> RemoteRef {
        self.inner.reference_of(item)
    }
}

#[async_trait]
impl HealthCheck for Redacted<dyn HealthCheck> {
    async fn health_check(&self, report: Report<'_>) -> Result<(), CheckFailure> {
        let redacting = |step, detail: &str| report(step, &self.secrets.text(detail));
        self.inner
            .health_check(&redacting)
            .await
            .map_err(|f| CheckFailure {
                error: self.secrets.error(f.error),
                ..f
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configured_secret_is_replaced_and_short_values_are_not() {
        let secrets = Secrets::new([
            "AKIDEXAMPLE".into(),
            "AKIDEXAMPLE-longer".into(),
            "ab".into(),
        ]);
        let e = secrets.error(RemoteError::permanent(
            "denied for AKIDEXAMPLE-longer and AKIDEXAMPLE (ab)",
        ));
        assert_eq!(e.message, "denied for <redacted> and <redacted> (ab)");
        assert!(!e.is_transient());
    }
}
