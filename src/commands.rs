//! The three commands: `run` (the daemon, or `--once`), `status` and `check`. Owns what each
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
    let remote = remote::build(&settings.remote)?;
    tracing::info!(
        drop_folder = %settings.watch.path.display(),
        remote = %remote.describe(),
        slots = settings.upload.slots,
        config = %loaded.source_name,
        "starting"
    );
    let system = actix::System::new();
    system.block_on(async move {
        let interrupted = ledger.pending_paths()?;
        if let Err(e) = remote.reconcile(interrupted).await {
            tracing::warn!("cleaning up interrupted uploads failed: {e}");
        }
        let pipeline = Pipeline::start(&settings, remote, ledger.clone())?;
        let shutdown_timeout = settings.upload.shutdown_timeout;
        if once {
            pipeline.wait_idle().await;
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
        wait_for_signal().await?;
        tracing::info!("stopping: no new uploads start; running ones may finish");
        pipeline.shutdown(shutdown_timeout).await;
        Ok(EXIT_OK)
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
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
    }
    Ok(EXIT_OK)
}

/// `dropslot check`: the configuration is valid (it was loaded), the state directory works, and
/// the remote is reachable and writable.
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
    let remote = remote::build(&settings.remote)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), remote.check()).await })
    {
        Ok(Ok(())) => {
            println!("remote: ok ({})", remote.describe());
            Ok(EXIT_OK)
        }
        Ok(Err(e)) => {
            println!("remote: FAILED ({}): {e}", remote.describe());
            Ok(EXIT_FAILED)
        }
        Err(_) => {
            println!(
                "remote: FAILED ({}): no answer within 30s",
                remote.describe()
            );
            Ok(EXIT_FAILED)
        }
    }
}

/// Loads the configuration for a command; `None` path means the default search.
pub fn load_config(path: Option<PathBuf>) -> Result<Loaded, config::ConfigError> {
    config::load(path.as_deref())
}
