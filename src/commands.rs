//! The commands: `run` (the daemon, or `--once`), `status`, `check`, `verify` and `rebuild-ledger`. Owns what each
//! command prints and its exit code; the work is done by the pipeline, the ledger and the remote.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dropslot_actors::ledger::Ledger;

use crate::config::{self, Loaded};
use crate::ledger::SqliteLedger;
use crate::pipeline::Pipeline;
use crate::remote;
use crate::systemd;

/// How a command ended, as a process exit code.
pub type ExitCode = u8;
pub const EXIT_OK: ExitCode = 0;
pub const EXIT_FAILED: ExitCode = 1;
pub const EXIT_CONFIG: ExitCode = 2;

fn open_ledger(loaded: &Loaded) -> anyhow::Result<SqliteLedger> {
    Ok(SqliteLedger::open(&loaded.settings.ledger_path())?)
}

/// `dropslot run`: the daemon until SIGINT/SIGTERM, or with `once`, until everything pending is
/// done (exit 1 listing the files that failed).
pub fn run(loaded: Loaded, once: bool) -> anyhow::Result<ExitCode> {
    let ledger = Arc::new(open_ledger(&loaded)?);
    let settings = loaded.settings;
    let remote::Built { remote, health } = match remote::build_checked(&settings.remote) {
        Ok(built) => built,
        Err(e) => return Ok(config_error(&e)),
    };
    let system = actix::System::new();
    system.block_on(async move {
        // Listening first: a stop request during start-up then ends the run cleanly instead of
        // killing the process (the default action of SIGTERM).
        let stop_requested = stop_signal()?;
        tracing::info!(
            drop_folder = %settings.watch.path.display(),
            remote = %remote.describe(),
            slots = settings.upload.slots,
            bandwidth_limit = %settings.upload.bandwidth_limit,
            config = %loaded.source_name,
            "starting"
        );
        // Like a sink's health check in vector: logged, and fatal only when retrying cannot
        // help (the configuration names a bucket, directory or credentials that do not work).
        let logged = |step: remote::Step, detail: &str| {
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            };
            tracing::info!(step = step.name(), "remote health check: {}: ok{detail}", step.name())
        };
        match health_check(health.as_ref(), &logged).await {
            Ok(()) => tracing::info!(remote = %remote.describe(), "remote health check passed"),
            Err(failure) if failure.misconfigured() => {
                tracing::error!(
                    remote = %remote.describe(),
                    "remote health check failed: {failure}; fix the configuration (nothing is uploaded until then)"
                );
                eprintln!("dropslot: configuration error: remote {}: {failure}", remote.describe());
                return Ok(EXIT_CONFIG);
            }
            Err(failure) => tracing::warn!(
                remote = %remote.describe(),
                "remote health check failed: {failure}; running anyway: uploads are retried until the remote answers"
            ),
        }
        let interrupted = ledger.pending_paths()?;
        ledger.reset_waiting_for_writer()?;
        if let Err(e) = remote.reconcile(interrupted).await {
            tracing::warn!("cleaning up interrupted uploads failed: {e}");
        }
        // After-publish actions a crash interrupted are finished before anything looks at the
        // drop folder, so the scan sees the outcome and never a half-done state.
        let (removed, other) = dropslot_actors::after_publish::recover(
            &*ledger,
            &settings.drop_root(),
            &settings.after_publish(),
        )?;
        if removed + other > 0 {
            tracing::info!(removed, other, "finished after-publish actions interrupted by a stop");
        }
        let pipeline = Pipeline::start(&settings, remote, ledger.clone())?;
        let shutdown_timeout = settings.upload.shutdown_timeout;
        // Ready once the health check ran and the first scan started; the pings that follow are
        // sent from this thread, the actors' thread, so a stalled actor stops them.
        let notifier = systemd::Notifier::from_env();
        let keep_alive = async {
            match &notifier {
                Some(n) => {
                    n.send(&format!("READY=1\nSTATUS={}", pipeline.status_line()));
                    n.keep_alive(|| pipeline.status_line()).await
                }
                None => std::future::pending().await,
            }
        };
        let stopping = || {
            if let Some(n) = &notifier {
                n.send("STOPPING=1");
            }
        };
        if once {
            let stopped = tokio::select! {
                _ = pipeline.wait_idle() => false,
                _ = stop_requested => true,
                _ = keep_alive => unreachable!("keep_alive never ends"),
            };
            stopping();
            if stopped {
                tracing::info!("stopping before everything was done");
                pipeline.shutdown(shutdown_timeout).await;
                return Ok(EXIT_FAILED);
            }
            let missing = pipeline.drop_folder_missing();
            pipeline.shutdown(shutdown_timeout).await;
            if missing {
                anyhow::bail!(
                    "the drop folder {} does not exist",
                    settings.watch.path.display()
                );
            }
            return report_failures(&ledger);
        }
        tokio::select! {
            _ = stop_requested => {},
            _ = keep_alive => unreachable!("keep_alive never ends"),
        }
        stopping();
        tracing::info!("stopping: no new uploads start; running ones may finish");
        pipeline.shutdown(shutdown_timeout).await;
        Ok(EXIT_OK)
    })
}

/// Starts listening for SIGTERM and SIGINT; the future completes when either arrives.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}

fn report_failures(ledger: &SqliteLedger) -> anyhow::Result<ExitCode> {
    let report = ledger.status()?;
    if report.failures.is_empty() {
        return Ok(EXIT_OK);
    }
    eprintln!("{} file(s) failed:", report.failures.len());
    for f in &report.failures {
        eprintln!("  {}: {} (attempts: {})", f.path, f.error, f.attempts);
    }
    Ok(EXIT_FAILED)
}

/// `dropslot status`: counts from the ledger, and every failed file with its error.
pub fn status(loaded: Loaded, json: bool) -> anyhow::Result<ExitCode> {
    let report = open_ledger(&loaded)?.status()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("published: {}", report.published);
        println!("pending:   {}", report.pending);
        println!("failed:    {}", report.failed);
        for f in &report.failures {
            println!("  {}: {} (attempts: {})", f.path, f.error, f.attempts);
        }
        println!(
            "waiting for a writer to close: {}",
            report.waiting_for_writer.len()
        );
        for path in &report.waiting_for_writer {
            println!("  {path}");
        }
    }
    Ok(EXIT_OK)
}

/// How long a health check may take in all.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// A configuration error found after loading (the remote cannot be built from it): said on
/// stderr like a loading error, exit code 2.
fn config_error(e: &remote::BuildError) -> ExitCode {
    eprintln!("dropslot: configuration error: {e}");
    EXIT_CONFIG
}

/// The remote's health check within [`HEALTH_CHECK_TIMEOUT`]; a timeout is a transient failure
/// of the step after the last one reported.
async fn health_check(
    health: &dyn remote::HealthCheck,
    report: remote::Report<'_>,
) -> Result<(), remote::CheckFailure> {
    use remote::Step;
    let last = std::sync::Mutex::new(None::<Step>);
    let tracked = |step: Step, detail: &str| {
        *last.lock().expect("lock") = Some(step);
        report(step, detail);
    };
    match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, health.health_check(&tracked)).await {
        Ok(result) => result,
        Err(_) => {
            let order = [
                Step::Reach,
                Step::Upload,
                Step::Publish,
                Step::Confirm,
                Step::ReadBack,
                Step::Delete,
            ];
            let done = *last.lock().expect("lock");
            let step = match done {
                None => Step::Reach,
                Some(done) => order
                    .iter()
                    .skip_while(|s| **s != done)
                    .nth(1)
                    .copied()
                    .unwrap_or(Step::Delete),
            };
            Err(remote::CheckFailure {
                step,
                error: dropslot_actors::remote::RemoteError::transient(format!(
                    "no answer within {}s",
                    HEALTH_CHECK_TIMEOUT.as_secs()
                )),
            })
        }
    }
}

/// `dropslot check`: the configuration is valid (it was loaded), the state directory works, and
/// the remote takes a probe through every step a file takes, each step on its own line.
pub fn check(loaded: Loaded) -> anyhow::Result<ExitCode> {
    let settings = &loaded.settings;
    println!("configuration: ok ({})", loaded.source_name);
    let ledger = open_ledger(&loaded)?;
    ledger.lookup(Path::new("")).context("reading the ledger")?;
    println!("ledger: ok ({})", settings.ledger_path().display());
    if !settings.watch.path.is_dir() {
        println!(
            "drop folder: {} does not exist yet (dropslot waits for it)",
            settings.watch.path.display()
        );
    } else {
        println!("drop folder: ok ({})", settings.watch.path.display());
    }
    let remote::Built { remote, health } = match remote::build_checked(&settings.remote) {
        Ok(built) => built,
        Err(e) => {
            println!("remote: FAILED: {e}");
            return Ok(config_error(&e));
        }
    };
    println!("remote: {}", remote.describe());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let printed = |step: remote::Step, detail: &str| {
        if detail.is_empty() {
            println!("  {}: ok", step.name());
        } else {
            println!("  {}: ok ({detail})", step.name());
        }
    };
    match runtime.block_on(health_check(health.as_ref(), &printed)) {
        Ok(()) => {
            println!("remote: ok ({})", remote.describe());
            Ok(EXIT_OK)
        }
        Err(failure) => {
            println!("  {}: FAILED: {}", failure.step.name(), failure.error);
            println!("remote: FAILED ({}): {failure}", remote.describe());
            Ok(EXIT_FAILED)
        }
    }
}

/// `dropslot verify`: compares the remote with the ledger and the drop folder of the configured
/// folder ([`crate::verify`]); exit 0 when they agree, 1 otherwise. With `repair`, what the remote
/// lost or holds differently is marked in the ledger for the next `run` to upload again.
pub fn verify(loaded: Loaded, deep: bool, json: bool, repair: bool) -> anyhow::Result<ExitCode> {
    let settings = &loaded.settings;
    let remote = match remote::build(&settings.remote) {
        Ok(remote) => remote,
        Err(e) => return Ok(config_error(&e)),
    };
    let ledger = open_ledger(&loaded)?;
    let local_files = regular_files(
        &settings.watch.path,
        &settings.ignore_rules().context("watch.ignore")?,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(
        crate::verify::Verify {
            remote,
            ledger: &ledger,
            folder: &settings.watch.path,
            local_files,
            deep,
            repair,
            concurrency: settings.upload.slots,
        }
        .run(),
    )?;
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["equal"] = serde_json::Value::Bool(report.equal());
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        crate::verify::print_text(&report);
    }
    Ok(if report.equal() { EXIT_OK } else { EXIT_FAILED })
}

/// `dropslot rebuild-ledger`: replaces a damaged or lost ledger. The old file (if any) is kept
/// beside it as `ledger.sqlite.damaged-<unix time>`; every file in the drop folder is hashed and
/// recorded as published if the remote holds exactly that content (read back and compared), so
/// the next run uploads only what is really missing. Remotes that cannot read back (Tahoe) get
/// everything again.
pub fn rebuild_ledger(loaded: Loaded) -> anyhow::Result<ExitCode> {
    use dropslot_actors::ledger::PublishedFile;
    use futures_util::StreamExt;

    let settings = &loaded.settings;
    // Before the old ledger is set aside: a configuration that cannot work changes nothing.
    let remote = match remote::build(&settings.remote) {
        Ok(remote) => remote,
        Err(e) => return Ok(config_error(&e)),
    };
    let file = settings.ledger_path();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut kept = None;
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", file.display()));
        let to = PathBuf::from(format!("{}{suffix}.damaged-{stamp}", file.display()));
        match std::fs::rename(&from, &to) {
            Ok(()) if suffix.is_empty() => kept = Some(to),
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot set aside {}", from.display()))
            }
        }
    }
    let ledger = SqliteLedger::open(&file)?;
    let root = settings.watch.path.clone();
    let drop_root = settings.drop_root();
    let files = regular_files(&root, &settings.ignore_rules().context("watch.ignore")?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut recorded, mut missing) = (0u64, 0u64);
    runtime.block_on(async {
        let mut checks = futures_util::stream::iter(files)
            .map(|rel| {
                let (remote, drop_root, confined) =
                    (remote.clone(), drop_root.clone(), rel.clone());
                async move {
                    let (sha256, meta) =
                        tokio::task::spawn_blocking(move || drop_root.hash_file(&confined))
                            .await?
                            .with_context(|| format!("cannot read {}", rel.display()))?;
                    let held = remote.holds(&rel, meta.size, &sha256).await?;
                    anyhow::Ok((rel, meta, sha256, held))
                }
            })
            .buffer_unordered(settings.upload.slots);
        // Recorded a thousand at a time: one transaction per file would dominate large trees.
        let mut held = Vec::new();
        while let Some(checked) = checks.next().await {
            match checked {
                Ok((path, meta, sha256, true)) => {
                    let remote_ref = path.display().to_string();
                    held.push(PublishedFile {
                        path,
                        meta,
                        sha256,
                        remote_ref,
                        after_publish: false,
                    });
                    recorded += 1;
                    if held.len() >= 1000 {
                        ledger.record_published(&std::mem::take(&mut held))?;
                    }
                }
                Ok((_, _, _, false)) => missing += 1,
                // The next run looks at this file again, like any other not in the ledger.
                Err(e) => {
                    tracing::warn!("{e:#}");
                    missing += 1;
                }
            }
        }
        ledger.record_published(&held)?;
        anyhow::Ok(())
    })?;
    if let Some(kept) = kept {
        println!("the old ledger was kept as {}", kept.display());
    }
    println!(
        "rebuilt {}: {recorded} file(s) already on the remote recorded as published, {missing} to upload on the next run",
        file.display()
    );
    Ok(EXIT_OK)
}

/// Regular files under `root` (relative), skipping ignored paths; no links are followed.
fn regular_files(root: &Path, ignore: &dropslot_actors::watcher::IgnoreRules) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let rel = dir.join(entry.file_name());
            match entry.file_type() {
                _ if ignore.is_ignored(&rel) => {}
                Ok(t) if t.is_dir() => dirs.push(rel),
                Ok(t) if t.is_file() => files.push(rel),
                _ => {}
            }
        }
    }
    files
}

/// Loads the configuration for a command; `None` path means the default search.
pub fn load_config(path: Option<PathBuf>) -> Result<Loaded, config::ConfigError> {
    config::load(path.as_deref())
}
