//! Retries and failure reports, driven through the real pipeline, SQLite ledger and local remote,
//! with one injected fault: a wrapper remote that fails chosen uploads with transient errors.
//! The wrapper is a mock of a remote outage, which a local directory cannot produce on demand;
//! S3, WebDAV and Tahoe outages are tested against real servers in their own tests.

use dropslot_testkit as common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::*;
use dropslot::ledger::SqliteLedger;
use dropslot::pipeline::Pipeline;
use dropslot::remote::local::LocalRemote;
use dropslot_actors::ledger::{EntryStatus, Ledger};
use dropslot_actors::remote::{
    ContentStream, FileAttributes, PublishItem, Remote, RemoteError, RemoteRef, Staged,
};

/// Fails `stage` for chosen paths: a number of times, or always.
struct FlakyRemote {
    inner: LocalRemote,
    failures_left: Mutex<HashMap<PathBuf, u32>>,
    always_failing: PathBuf,
    stage_calls: AtomicU32,
}

#[async_trait]
impl Remote for FlakyRemote {
    fn describe(&self) -> String {
        format!("flaky {}", self.inner.describe())
    }
    async fn check(&self) -> Result<(), RemoteError> {
        self.inner.check().await
    }
    async fn reconcile(&self, interrupted: Vec<PathBuf>) -> Result<(), RemoteError> {
        self.inner.reconcile(interrupted).await
    }
    async fn stage(
        &self,
        path: &Path,
        size: u64,
        attributes: FileAttributes,
        content: ContentStream,
    ) -> Result<Staged, RemoteError> {
        self.stage_calls.fetch_add(1, Ordering::SeqCst);
        if path == self.always_failing {
            return Err(RemoteError::transient("injected outage"));
        }
        if let Some(left) = self.failures_left.lock().unwrap().get_mut(path) {
            if *left > 0 {
                *left -= 1;
                return Err(RemoteError::transient("injected hiccup"));
            }
        }
        self.inner.stage(path, size, attributes, content).await
    }
    async fn publish(&self, items: Vec<PublishItem>) -> Vec<Result<RemoteRef, RemoteError>> {
        self.inner.publish(items).await
    }
    async fn confirm(&self, items: &[PublishItem]) -> Vec<Result<(), RemoteError>> {
        self.inner.confirm(items).await
    }
    async fn stored_size(&self, path: &Path) -> Result<Option<u64>, RemoteError> {
        self.inner.stored_size(path).await
    }
    async fn discard(&self, path: &Path, staged: Staged) {
        self.inner.discard(path, staged).await
    }
    async fn delete(&self, path: &Path) -> Result<(), RemoteError> {
        self.inner.delete(path).await
    }
}

#[test]
fn transient_errors_are_retried_and_exhausted_ones_are_recorded_by_name() {
    let mut env = Env::new();
    // Counts the attempts of one round; the later rounds for files whose attempts ran out
    // (`upload.retry_failed_after`) are tested in trust_moves.rs.
    env.set("upload.max_attempts", "3")
        .set("upload.retry_failed_after", "0s");
    for i in 0..10 {
        env.write(&format!("f{i}.txt"), format!("file {i}").as_bytes());
    }
    // The pipeline reads its settings like the binary does (file plus environment).
    for (k, v) in &env.vars {
        std::env::set_var(k, v);
    }
    let settings = dropslot::config::load(Some(&env.config)).unwrap().settings;
    let remote = Arc::new(FlakyRemote {
        inner: LocalRemote::new(env.target.clone()),
        failures_left: Mutex::new(
            (0..5)
                .map(|i| (PathBuf::from(format!("f{i}.txt")), 2))
                .collect(),
        ),
        always_failing: PathBuf::from("f9.txt"),
        stage_calls: AtomicU32::new(0),
    });
    let ledger = Arc::new(SqliteLedger::open(&settings.ledger_path()).unwrap());
    let (remote_dyn, ledger_dyn): (Arc<dyn Remote>, Arc<dyn Ledger>) =
        (remote.clone(), ledger.clone());
    actix::System::new().block_on(async move {
        let pipeline = Pipeline::start(&settings, remote_dyn, ledger_dyn).unwrap();
        tokio::time::timeout(DEADLINE, pipeline.wait_idle())
            .await
            .expect("pipeline went idle");
        pipeline.shutdown(std::time::Duration::from_secs(5)).await;
    });

    for i in 0..9 {
        assert!(has_content(
            &env.target.join(format!("f{i}.txt")),
            format!("file {i}").as_bytes()
        ));
    }
    assert!(!env.target.join("f9.txt").exists());
    // 5 files needed 3 attempts, 4 needed 1, the failing one used all 3.
    assert_eq!(remote.stage_calls.load(Ordering::SeqCst), 5 * 3 + 4 + 3);
    let failed = ledger.lookup(Path::new("f9.txt")).unwrap().unwrap();
    assert_eq!(failed.status, EntryStatus::Failed);
    assert_eq!(failed.attempts, 3);
    assert!(failed.last_error.unwrap().contains("injected outage"));
    let report = ledger.status().unwrap();
    assert_eq!((report.published, report.failed), (9, 1));
    assert_eq!(report.failures[0].path, "f9.txt");
}
