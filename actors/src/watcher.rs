//! The watcher: turns the drop folder into a stream of "this path may have changed". Owns the
//! inotify watches (one per directory, so ignored directories are never watched), the start-up
//! scan, rescans (after an event-queue overflow and every `watch.rescan_interval`) and the walk of
//! every new directory. It does not look at file contents or decide what to upload.
//!
//! Order matters: a directory's watch is installed before the directory is listed, so a file
//! created between the two is reported by one or the other. Scans compare each file with the
//! ledger and report only what differs, plus ledger entries whose file is gone.
//!
//! A name that goes away (the old name of a rename, a move out of the drop folder, a removed
//! directory) is reported at once together with every ledger entry below it, found by a range
//! query of the ledger: no later event will ever name the files a moved directory took with it.
//!
//! Everything reaches the actor through one bounded channel (inotify callback and scans alike),
//! and the actor waits for the debouncer to take each batch: a flood of events backs up into the
//! kernel queue, whose overflow triggers a rescan, instead of into memory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::globs::PathGlobs;
use actix::prelude::*;
use futures_util::StreamExt;
use notify::event::{
    AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode,
};
use notify::{RecursiveMode, Watcher as _};

use crate::confined::{refusal, DropRoot};
use crate::debouncer::Debouncer;
use crate::events::{InternalEvent, RescanFinished, RescanStarted};
use crate::fileinfo::{is_gone, FileKind, FileMeta};
use crate::ledger::{Ledger, LedgerHandle};
use crate::messages::{PathsTouched, StopWatching};
use crate::stats::ActorStats;

/// Paths reported to the debouncer per message.
const BATCH: usize = 512;

/// Which paths are never watched, scanned or uploaded: the `watch.ignore` globs and, if enabled,
/// the rsync temporary-name rule. The first path each rule skips in a run is logged (INFO), once
/// per rule, so a surprising skip (a file named `~` under `*~`) can be found without a log line
/// per path.
#[derive(Clone, Debug)]
pub struct IgnoreRules {
    globs: PathGlobs,
    rsync_temp: bool,
    /// Per pattern, then one for the rsync rule: already logged this run. Shared by clones, as
    /// the watcher's scans each hold one.
    reported: Arc<[AtomicBool]>,
}

impl IgnoreRules {
    /// `patterns` use glob syntax and match the path relative to the drop folder or the bare file
    /// name, so `*.tmp` and `.git` both work at any depth.
    pub fn new(patterns: &[String]) -> Result<Self, globset::Error> {
        Ok(IgnoreRules {
            globs: PathGlobs::new(patterns)?,
            rsync_temp: false,
            reported: (0..=patterns.len())
                .map(|_| AtomicBool::new(false))
                .collect(),
        })
    }

    /// Also ignore names shaped like rsync's temporary files (see [`is_rsync_temp_name`]).
    pub fn with_rsync_temp(mut self, on: bool) -> Self {
        self.rsync_temp = on;
        self
    }

    pub fn is_ignored(&self, rel: &Path) -> bool {
        let patterns = self.globs.patterns();
        let rule = match self.globs.first_match_index(rel) {
            Some(rule) => rule,
            None if self.rsync_temp && rel.file_name().is_some_and(is_rsync_temp_name) => {
                patterns.len()
            }
            None => return false,
        };
        if !self.reported[rule].swap(true, Ordering::Relaxed) {
            let what = match patterns.get(rule) {
                Some(pattern) => format!("watch.ignore pattern {pattern:?}"),
                None => "rsync temporary name rule (watch.ignore_rsync_temp)".to_string(),
            };
            tracing::info!(
                path = %rel.display(),
                rule = %what,
                "ignoring {} (matched by the {what}); said once per rule and run, later matches are skipped silently",
                rel.display()
            );
        }
        true
    }
}

/// rsync writes each file to `.NAME.XXXXXX` (mkstemp: six of `[A-Za-z0-9]`) beside it and renames
/// it into place. Matched: a dot, a non-empty name, a dot, six ASCII letters or digits not all
/// lowercase letters. The last condition spares ordinary dotfiles like `.bashrc.backup`, at the
/// price of the (26/62)^6 ≈ 0.5% of rsync's names whose six characters are all lowercase; rsync
/// holds those open while writing, which keeps them off the remote by itself.
pub fn is_rsync_temp_name(name: &std::ffi::OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = name.as_bytes();
    let Some(head_len) = bytes.len().checked_sub(6) else {
        return false;
    };
    let (head, suffix) = bytes.split_at(head_len);
    head.len() >= 3
        && head[0] == b'.'
        && head[head.len() - 1] == b'.'
        && suffix.iter().all(u8::is_ascii_alphanumeric)
        && !suffix.iter().all(u8::is_ascii_lowercase)
}

#[derive(Clone, Debug)]
pub struct WatchSettings {
    pub root: PathBuf,
    /// The same folder, for looking and listing without following links.
    pub drop_root: DropRoot,
    pub ignore: IgnoreRules,
    /// `None` disables periodic rescans.
    pub rescan_interval: Option<Duration>,
    /// How often to rescan while some directory has no watch (out of inotify watches); `None`
    /// disables the fallback.
    pub poll_interval: Option<Duration>,
    pub log_interval: Duration,
}

/// What the rest of the daemon may know about scans: whether one is under way (so "idle" can be
/// decided) and whether the drop folder exists.
#[derive(Debug)]
pub struct ScanProgress {
    running: AtomicUsize,
    root_missing: AtomicBool,
    /// Set on shutdown: walks under way stop at the next directory.
    stopping: AtomicBool,
    /// Some directory could not be watched (the kernel's watch limit): poll until a full scan
    /// gets every watch.
    unwatched_dirs: AtomicBool,
    /// The limit is reported once per run, not once per poll.
    limit_reported: AtomicBool,
}

impl ScanProgress {
    pub fn is_scanning(&self) -> bool {
        self.running.load(Ordering::SeqCst) > 0
    }

    pub fn root_missing(&self) -> bool {
        self.root_missing.load(Ordering::SeqCst)
    }
}

enum WatchInput {
    Event(notify::Result<notify::Event>),
    Found(Vec<PathBuf>),
    ScanDone {
        full: bool,
        root_found: bool,
        took: Duration,
    },
}

type SharedNotify = Arc<Mutex<notify::RecommendedWatcher>>;

pub struct Watcher {
    settings: Arc<WatchSettings>,
    ledger: LedgerHandle,
    debouncer: Addr<Debouncer>,
    notify: Option<SharedNotify>,
    tx: tokio::sync::mpsc::Sender<WatchInput>,
    rx: Option<tokio::sync::mpsc::Receiver<WatchInput>>,
    progress: Arc<ScanProgress>,
    full_scan_running: bool,
    full_scan_again: bool,
    root_present: bool,
    stopped: bool,
    stats: Arc<ActorStats>,
}

impl Watcher {
    pub fn new(
        settings: WatchSettings,
        ledger: LedgerHandle,
        debouncer: Addr<Debouncer>,
        stats: Arc<ActorStats>,
    ) -> Result<Self, notify::Error> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let events = tx.clone();
        let notify = notify::recommended_watcher(move |event| {
            // Blocking here is the backpressure: the kernel queues (and at worst overflows,
            // which we answer with a rescan) rather than memory growing.
            let _ = events.blocking_send(WatchInput::Event(event));
        })?;
        Ok(Watcher {
            settings: Arc::new(settings),
            ledger,
            debouncer,
            notify: Some(Arc::new(Mutex::new(notify))),
            tx,
            rx: Some(rx),
            // The initial scan counts from construction, so nobody sees "idle" before it starts.
            progress: Arc::new(ScanProgress {
                running: AtomicUsize::new(1),
                root_missing: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                unwatched_dirs: AtomicBool::new(false),
                limit_reported: AtomicBool::new(false),
            }),
            full_scan_running: false,
            full_scan_again: false,
            root_present: false,
            stopped: false,
            stats,
        })
    }

    pub fn progress(&self) -> Arc<ScanProgress> {
        self.progress.clone()
    }

    fn start_full_scan(&mut self, counted: bool) {
        if self.stopped {
            if counted {
                self.progress.running.fetch_sub(1, Ordering::SeqCst);
            }
            return;
        }
        if self.full_scan_running {
            self.full_scan_again = true;
            if counted {
                self.progress.running.fetch_sub(1, Ordering::SeqCst);
            }
            return;
        }
        if !counted {
            self.progress.running.fetch_add(1, Ordering::SeqCst);
        }
        self.full_scan_running = true;
        self.spawn_scan(vec![PathBuf::new()], Vec::new(), true);
    }

    /// Walks paths that may be new directories and reports what paths that went away took with
    /// them (one blocking task for the whole batch: the ledger is asked off the actor thread).
    fn start_walks(&mut self, starts: Vec<PathBuf>, gone: Vec<PathBuf>) {
        if starts.is_empty() && gone.is_empty() {
            return;
        }
        self.progress.running.fetch_add(1, Ordering::SeqCst);
        self.spawn_scan(starts, gone, false);
    }

    fn spawn_scan(&self, starts: Vec<PathBuf>, gone: Vec<PathBuf>, full: bool) {
        let scan = Scan {
            progress: self.progress.clone(),
            settings: self.settings.clone(),
            ledger: self.ledger.blocking().clone(),
            notify: self.notify.clone(),
            tx: self.tx.clone(),
            stats: self.stats.clone(),
        };
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let root_found = scan.run(starts, gone, full);
            let _ = scan.tx.blocking_send(WatchInput::ScanDone {
                full,
                root_found,
                took: started.elapsed(),
            });
        });
    }

    /// A rescan asked for while one ran starts after a pause as long as that scan took: under
    /// overflows that never stop (a tiny kernel queue), back-to-back walks of a large tree would
    /// otherwise leave little time for uploading. Counted as scanning meanwhile, so "idle" waits.
    fn rescan_after_pause(&mut self, took: Duration, ctx: &mut Context<Self>) {
        self.progress.running.fetch_add(1, Ordering::SeqCst);
        self.full_scan_running = true; // later overflows join this rescan
        let pause = took.min(Duration::from_secs(30));
        ctx.run_later(pause, |act, _| {
            act.full_scan_running = false;
            act.start_full_scan(true);
        });
    }

    fn handle_inputs(&mut self, inputs: Vec<WatchInput>, ctx: &mut Context<Self>) {
        let started = Instant::now();
        let mut found = Found::default();
        let mut scans_done = 0;
        let mut rescan = false;
        for input in inputs {
            match input {
                WatchInput::Event(Ok(event)) => {
                    self.stats.received(1);
                    rescan |= event.need_rescan();
                    self.route_event(event, &mut found);
                }
                WatchInput::Event(Err(e)) => {
                    self.stats.error();
                    report_watch_error(&e, &self.settings);
                    rescan |= matches!(e.kind, notify::ErrorKind::MaxFilesWatch);
                }
                WatchInput::Found(paths) => found.touched.extend(paths),
                WatchInput::ScanDone {
                    full,
                    root_found,
                    took,
                } => {
                    scans_done += 1;
                    if full {
                        self.full_scan_running = false;
                        self.root_present = root_found;
                        self.progress
                            .root_missing
                            .store(!root_found, Ordering::SeqCst);
                        if std::mem::take(&mut self.full_scan_again) {
                            self.rescan_after_pause(took, ctx);
                        }
                    }
                }
            }
        }
        let Found {
            mut touched,
            walks,
            gone,
        } = found;
        self.start_walks(walks, gone);
        if rescan {
            // Overflows during a rescan are covered by the one queued after it: say so once.
            if !self.full_scan_again {
                tracing::warn!(root = %self.settings.root.display(), "events may have been lost (queue overflow); rescanning the drop folder");
            }
            self.start_full_scan(false);
        }
        self.stats.busy_since(started);
        if self.stopped {
            touched.clear();
        }
        let progress = self.progress.clone();
        let finish_scans = move || {
            // Only once their last paths are with the debouncer do scans count as done.
            progress.running.fetch_sub(scans_done, Ordering::SeqCst);
        };
        if touched.is_empty() {
            finish_scans();
            return;
        }
        self.stats.sent(touched.len());
        let send = self.debouncer.send(PathsTouched(touched));
        ctx.wait(send.into_actor(self).map(move |_, _, _| finish_scans()));
    }

    fn route_event(&mut self, event: notify::Event, found: &mut Found) {
        if !is_relevant(&event.kind) {
            return;
        }
        let route = match event.kind {
            // inotify reports a rename as From (old name), To (new name) and then Both (the
            // pair): the first two carry everything, so the pair would only repeat them.
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => return,
            // The old name of a rename or a move out of the drop folder: for a directory, every
            // path below it went with it, and no event will ever name them.
            EventKind::Modify(ModifyKind::Name(RenameMode::From))
            | EventKind::Remove(RemoveKind::Folder | RemoveKind::Any | RemoveKind::Other) => {
                Route::Gone
            }
            // Created directories, and anything renamed into place (which may be a directory
            // full of files that produce no events of their own), are walked.
            EventKind::Create(CreateKind::Folder | CreateKind::Any | CreateKind::Other)
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Any => Route::Walk,
            _ => Route::Touched,
        };
        for path in event.paths {
            if path == self.settings.root {
                if matches!(event.kind, EventKind::Remove(_)) || !self.settings.root.is_dir() {
                    tracing::warn!(root = %path.display(), "the drop folder disappeared; waiting for it to come back");
                    self.root_present = false;
                    self.progress.root_missing.store(true, Ordering::SeqCst);
                }
                continue;
            }
            let Ok(rel) = path.strip_prefix(&self.settings.root) else {
                continue;
            };
            if self.settings.ignore.is_ignored(rel) {
                continue;
            }
            let rel = rel.to_path_buf();
            match route {
                // The walk reports the path itself if it turns out not to be a directory.
                Route::Walk => found.walks.push(rel),
                Route::Gone => found.gone.push(rel),
                Route::Touched => found.touched.push(rel),
            }
        }
    }
}

/// What one event means for its paths.
#[derive(Clone, Copy)]
enum Route {
    /// May have changed: the stability checker looks.
    Touched,
    /// May be a new directory: walked, and reported (as gone) if it is missing by then.
    Walk,
    /// No longer there under this name: reported with every ledger entry below it.
    Gone,
}

/// What a batch of events asks for.
#[derive(Default)]
struct Found {
    touched: Vec<PathBuf>,
    walks: Vec<PathBuf>,
    gone: Vec<PathBuf>,
}

/// Events that can mean new content. inotify also reports opens and reads (ours included);
/// acting on those would make every upload trigger another look at the file.
fn is_relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn report_watch_error(e: &notify::Error, settings: &WatchSettings) {
    match e.kind {
        notify::ErrorKind::MaxFilesWatch => {
            let fallback = match settings.poll_interval {
                Some(every) => format!(
                    "until then, the drop folder is rescanned every {every:?} (watch.poll_interval)"
                ),
                None => "until then, changes in unwatched directories are found only by rescans (watch.poll_interval is off)".to_string(),
            };
            tracing::error!(
                root = %settings.root.display(),
                "out of inotify watches: raise the kernel limit fs.inotify.max_user_watches (for example `sysctl fs.inotify.max_user_watches=524288`); {fallback}"
            )
        }
        // A directory that went away before its watch was added, or whose watch went with it:
        // expected under churn (thousands a minute), and its removal event says all there is.
        _ if vanished(e) => tracing::debug!(paths = ?e.paths, "watch error: {e}"),
        _ => tracing::warn!(paths = ?e.paths, "watch error: {e}"),
    }
}

/// True if `e` only says that the directory is not there (any more).
fn vanished(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::PathNotFound | notify::ErrorKind::WatchNotFound => true,
        notify::ErrorKind::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
        ),
        _ => false,
    }
}

/// One walk of (part of) the tree, run in a blocking task.
struct Scan {
    progress: Arc<ScanProgress>,
    settings: Arc<WatchSettings>,
    /// Read directly: the scan runs in a blocking task.
    ledger: Arc<dyn Ledger>,
    notify: Option<SharedNotify>,
    tx: tokio::sync::mpsc::Sender<WatchInput>,
    stats: Arc<ActorStats>,
}

impl Scan {
    /// Reports each of `gone` with every ledger entry below it, then walks from each of `starts`
    /// (relative; empty for the whole tree). Returns false if the drop folder itself is missing.
    fn run(&self, starts: Vec<PathBuf>, gone: Vec<PathBuf>, full: bool) -> bool {
        let started = Instant::now();
        let root = &self.settings.root;
        if !root.is_dir() {
            if full {
                tracing::warn!(root = %root.display(), "the drop folder does not exist (or is not a directory); waiting for it");
            }
            return false;
        }
        if full {
            RescanStarted { root }.emit(&self.stats);
        }
        let mut batch = Vec::new();
        for rel in gone {
            if !self.report_gone(rel, &mut batch) {
                return true;
            }
        }
        let (mut files, mut dirs) = (0u64, 0u64);
        let mut out_of_watches = false;
        let mut stack = starts;
        while let Some(rel) = stack.pop() {
            if self.progress.stopping.load(Ordering::SeqCst) {
                return true;
            }
            let abs = root.join(&rel);
            // Looked at and listed through the confined root: a directory swapped for a link is
            // reported (the stability checker skips it by name), never walked into.
            match self.settings.drop_root.probe(&rel) {
                Ok(FileKind::Directory) => {}
                Ok(FileKind::Missing) => {
                    // Renamed or moved out again before the walk: whatever was published under
                    // this name must go (with `on_delete = "delete"`) now, not at the next rescan.
                    if !self.report_gone(rel, &mut batch) {
                        return true;
                    }
                    continue;
                }
                Ok(_) => {
                    batch.push(rel); // a walk started on something that is not a directory
                    continue;
                }
                Err(e) => {
                    tracing::warn!(dir = %abs.display(), "cannot look at directory, skipping it: {e}");
                    continue;
                }
            }
            dirs += 1;
            self.watch(&abs, &mut out_of_watches);
            let entries = match self.settings.drop_root.list_dir(&rel) {
                Ok(entries) => entries,
                // Gone since the look: churn, as above.
                Err(e) if is_gone(&e) => {
                    tracing::debug!(dir = %abs.display(), "directory gone before it was listed");
                    if !self.report_gone(rel, &mut batch) {
                        return true;
                    }
                    continue;
                }
                Err(e) if refusal(&e).is_some() => {
                    batch.push(rel);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(dir = %abs.display(), "cannot list directory, skipping it: {e}");
                    continue;
                }
            };
            for entry in entries {
                let child = rel.join(&entry.name);
                if self.settings.ignore.is_ignored(&child) {
                    continue;
                }
                match entry.kind {
                    FileKind::Directory => stack.push(child),
                    FileKind::Regular(meta) => {
                        files += 1;
                        if self.differs_from_ledger(&child, &meta) {
                            batch.push(child);
                        }
                    }
                    // Symbolic links and special files: the stability checker logs the skip.
                    _ => batch.push(child),
                }
                if batch.len() >= BATCH && !self.send(&mut batch) {
                    return true;
                }
            }
        }
        if full {
            self.find_deleted(&mut batch);
            let was = self
                .progress
                .unwatched_dirs
                .swap(out_of_watches, Ordering::SeqCst);
            if was && !out_of_watches {
                tracing::info!(root = %root.display(), "every directory is watched again; polling stops");
            }
        } else if out_of_watches {
            self.progress.unwatched_dirs.store(true, Ordering::SeqCst);
        }
        self.send(&mut batch);
        self.stats.busy_since(started);
        if full {
            RescanFinished {
                root,
                files,
                dirs,
                elapsed: started.elapsed(),
            }
            .emit(&self.stats);
        }
        true
    }

    fn watch(&self, dir: &Path, out_of_watches: &mut bool) {
        let Some(notify) = &self.notify else { return };
        let result = notify
            .lock()
            .expect("notify watcher lock")
            .watch(dir, RecursiveMode::NonRecursive);
        match result {
            Ok(()) => {}
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                *out_of_watches = true;
                if !self.progress.limit_reported.swap(true, Ordering::SeqCst) {
                    report_watch_error(&e, &self.settings);
                }
            }
            Err(e) if vanished(&e) => {
                tracing::debug!(dir = %dir.display(), "directory gone before its watch was added: {e}")
            }
            Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch directory: {e}"),
        }
    }

    fn differs_from_ledger(&self, rel: &Path, meta: &FileMeta) -> bool {
        match self.ledger.lookup(rel) {
            Ok(Some(known)) => !known.is_published_as(meta),
            Ok(None) => true,
            Err(e) => {
                tracing::warn!("{e}");
                true
            }
        }
    }

    /// Reports `rel` and every ledger entry below it: the stability checker sees which are
    /// missing. False once the watcher is gone (shutdown).
    fn report_gone(&self, rel: PathBuf, batch: &mut Vec<PathBuf>) -> bool {
        let mut below = Vec::new();
        if let Err(e) = self
            .ledger
            .for_each_path_under(&rel, &mut |p| below.push(p.to_path_buf()))
        {
            tracing::warn!("{e}");
        }
        batch.push(rel);
        for path in below {
            batch.push(path);
            if batch.len() >= BATCH && !self.send(batch) {
                return false;
            }
        }
        true
    }

    /// Ledger entries whose file is gone: deleted while we were not looking.
    fn find_deleted(&self, batch: &mut Vec<PathBuf>) {
        let root = &self.settings.root;
        let mut gone = Vec::new();
        let listed = self.ledger.for_each_path(&mut |rel| {
            if let Err(e) = std::fs::symlink_metadata(root.join(rel)) {
                if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory {
                    gone.push(rel.to_path_buf());
                }
            }
        });
        if let Err(e) = listed {
            tracing::warn!("{e}");
        }
        for rel in gone {
            batch.push(rel);
            if batch.len() >= BATCH {
                self.send(batch);
            }
        }
    }

    /// False once the watcher is gone (shutdown).
    fn send(&self, batch: &mut Vec<PathBuf>) -> bool {
        if batch.is_empty() {
            return true;
        }
        self.tx
            .blocking_send(WatchInput::Found(std::mem::take(batch)))
            .is_ok()
    }
}

impl Actor for Watcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let rx = self.rx.take().expect("started once");
        let inputs = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|input| (input, rx))
        })
        .ready_chunks(BATCH);
        ctx.add_stream(inputs);
        self.start_full_scan(true);
        if let Some(every) = self.settings.rescan_interval {
            ctx.run_interval(every, |act, _| act.start_full_scan(false));
        }
        if let Some(every) = self.settings.poll_interval {
            ctx.run_interval(every, |act, _| {
                if act.progress.unwatched_dirs.load(Ordering::SeqCst) && !act.full_scan_running {
                    act.start_full_scan(false);
                }
            });
        }
        // A missing drop folder is looked for again every second.
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            if !act.root_present && !act.full_scan_running {
                act.start_full_scan(false);
            }
        });
        ctx.run_interval(self.settings.log_interval, |act, _| {
            act.stats.log("metrics")
        });
    }
}

impl StreamHandler<Vec<WatchInput>> for Watcher {
    fn handle(&mut self, inputs: Vec<WatchInput>, ctx: &mut Self::Context) {
        self.handle_inputs(inputs, ctx);
    }
}

impl Handler<StopWatching> for Watcher {
    type Result = ();

    fn handle(&mut self, _: StopWatching, _: &mut Self::Context) {
        self.stopped = true;
        self.progress.stopping.store(true, Ordering::SeqCst);
        self.notify = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_rules_match_names_at_any_depth() {
        let rules = IgnoreRules::new(&[
            "*.tmp".to_string(),
            ".git".to_string(),
            "cache/**".to_string(),
        ])
        .unwrap();
        assert!(rules.is_ignored(Path::new("a/b/c.tmp")));
        assert!(rules.is_ignored(Path::new("x/.git")));
        assert!(rules.is_ignored(Path::new("cache/deep/file")));
        assert!(!rules.is_ignored(Path::new("a/b/c.txt")));
        assert!(!rules.is_ignored(Path::new("x/.github")));
    }

    #[test]
    fn rsync_temporary_names_are_matched_but_ordinary_dotfiles_are_not() {
        use std::ffi::OsStr;
        for hit in [
            ".f.txt.AbC123",
            ".f.txt.ABCDEF",
            ".f.txt.123456",
            "..bashrc.x9Yq0Z",
            ".a.b.c.tar.gz.q1w2e3",
        ] {
            assert!(is_rsync_temp_name(OsStr::new(hit)), "{hit}");
        }
        for miss in [
            ".bashrc.backup",
            ".f.txt.abcdef",
            "f.txt.AbC123",
            "..AbC123",
            ".x.Ab_123",
            ".x.AbC1234",
            ".x.AbC12",
            ".AbC123",
            "",
        ] {
            assert!(!is_rsync_temp_name(OsStr::new(miss)), "{miss}");
        }
        let rules = IgnoreRules::new(&[]).unwrap();
        assert!(!rules.is_ignored(Path::new("d/.f.txt.AbC123")));
        let rules = rules.with_rsync_temp(true);
        assert!(rules.is_ignored(Path::new("d/.f.txt.AbC123")));
        assert!(!rules.is_ignored(Path::new("d/f.txt")));
    }

    #[test]
    fn each_rule_is_reported_once_and_clones_share_that() {
        let rules = IgnoreRules::new(&["*~".to_string(), "*.part".to_string()])
            .unwrap()
            .with_rsync_temp(true);
        let clone = rules.clone();
        assert!(rules.is_ignored(Path::new("~")));
        assert!(clone.is_ignored(Path::new("a/b~")));
        let reported: Vec<bool> = rules
            .reported
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect();
        assert_eq!(reported, [true, false, false]);
        assert!(clone.is_ignored(Path::new(".x.Q1w2E3")));
        assert!(rules.reported[2].load(Ordering::Relaxed));
    }

    #[test]
    fn access_events_other_than_close_write_are_ignored() {
        assert!(!is_relevant(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_relevant(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_relevant(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_relevant(&EventKind::Create(
            notify::event::CreateKind::File
        )));
    }
}
