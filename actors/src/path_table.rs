//! The **path table**, latest wins: the one place that knows, for every path with work in
//! flight, which stage holds it and whether newer events arrived meanwhile.
//!
//! Every stage of the pipeline holds at most one item per path, and an event for a path that is
//! already somewhere in the pipeline merges into that path's entry instead of queueing a second
//! item. So however many events arrive, the pipeline's queues never hold more than one item per
//! distinct path. The table does not schedule anything itself: the debouncer owns the timers and
//! the stages call the transitions below.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Recipient;
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;

use crate::messages::Redebounce;

/// Where a path's work currently is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the quiet period; the debouncer has a timer for it.
    Debouncing,
    /// Being watched by the stability checker.
    Checking,
    /// Being copied into the snapshot area.
    Snapshotting,
    /// Waiting for a free upload slot.
    Queued {
        from_snapshot: bool,
    },
    Uploading,
    /// Handed to the directory linker (publish or delete).
    Linking,
}

#[derive(Clone, Debug)]
struct PathState {
    /// Bumped by every event; an upload job carries the version it was queued with.
    version: u64,
    phase: Phase,
    /// An event arrived while the path was past debouncing: redo it when the current work ends.
    dirty: bool,
    first_event: Instant,
    last_event: Instant,
}

/// The outcome of a debouncing timer.
#[derive(Debug, PartialEq, Eq)]
pub enum Release {
    /// The path is not debouncing any more: the timer was stale.
    Stale,
    /// More events arrived: look again at this instant.
    NotYet(Instant),
    /// Now in checking; `since` is when this round of events began.
    Released { since: Instant },
}

/// What the caller must do after a transition.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Next {
    /// The path (re-)entered debouncing: the debouncer must start a timer for it.
    Debounce,
    Nothing,
}

#[derive(Default)]
pub struct PathTable {
    paths: DashMap<PathBuf, PathState>,
    draining: AtomicBool,
}

impl PathTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an event for `path`.
    ///
    /// A path waiting in the upload queue from its original file is superseded (the queued job
    /// becomes stale and the path debounces again); a path anywhere else is marked dirty so it is
    /// looked at again once the current work ends. A queued snapshot is never superseded: it is a
    /// coherent copy, and superseding it would starve a file that never stops changing.
    pub fn touch(&self, path: &Path, now: Instant) -> Next {
        match self.paths.entry(path.to_path_buf()) {
            MapEntry::Vacant(v) => {
                v.insert(PathState {
                    version: 1,
                    phase: Phase::Debouncing,
                    dirty: false,
                    first_event: now,
                    last_event: now,
                });
                Next::Debounce
            }
            MapEntry::Occupied(mut o) => {
                let s = o.get_mut();
                s.version += 1;
                s.last_event = now;
                match s.phase {
                    Phase::Debouncing => Next::Nothing,
                    Phase::Queued {
                        from_snapshot: false,
                    } => {
                        s.phase = Phase::Debouncing;
                        s.first_event = now;
                        Next::Debounce
                    }
                    _ => {
                        s.dirty = true;
                        Next::Nothing
                    }
                }
            }
        }
    }

    /// For a debouncing path whose timer fired: moves it to checking if it has been quiet for
    /// `quiet` or has waited `max_wait` since its first event, otherwise says when to look again.
    pub fn try_release(
        &self,
        path: &Path,
        quiet: Duration,
        max_wait: Duration,
        now: Instant,
    ) -> Release {
        let Some(mut s) = self.paths.get_mut(path) else {
            return Release::Stale;
        };
        if s.phase != Phase::Debouncing {
            return Release::Stale;
        }
        let due = (s.last_event + quiet).min(s.first_event + max_wait);
        if due > now {
            return Release::NotYet(due);
        }
        s.phase = Phase::Checking;
        Release::Released {
            since: s.first_event,
        }
    }

    /// Moves a path from `from` to `to`; false if it is not in `from` (the work is stale).
    pub fn advance(&self, path: &Path, from: Phase, to: Phase) -> bool {
        match self.paths.get_mut(path) {
            Some(mut s) if s.phase == from => {
                s.phase = to;
                true
            }
            _ => false,
        }
    }

    /// Queues a path for upload and returns the version the job must carry.
    pub fn queue_for_upload(&self, path: &Path, from: Phase, from_snapshot: bool) -> Option<u64> {
        let mut s = self.paths.get_mut(path)?;
        if s.phase != from {
            return None;
        }
        s.phase = Phase::Queued { from_snapshot };
        Some(s.version)
    }

    /// A slot takes a job: false if the job was superseded while it waited, or the pipeline is
    /// draining for shutdown (the start-up scan will find the path again).
    pub fn start_upload(&self, path: &Path, version: u64) -> bool {
        if self.is_draining() {
            return false;
        }
        match self.paths.get_mut(path) {
            Some(mut s) => match s.phase {
                Phase::Queued { from_snapshot } if from_snapshot || s.version == version => {
                    s.phase = Phase::Uploading;
                    true
                }
                _ => false,
            },
            None => false,
        }
    }

    /// The current work on `path` ended (published, skipped, failed or deleted). A path that got
    /// events meanwhile goes back to debouncing; otherwise it leaves the table.
    pub fn complete(&self, path: &Path, now: Instant) -> Next {
        match self.paths.entry(path.to_path_buf()) {
            MapEntry::Occupied(mut o) if o.get().dirty => {
                let s = o.get_mut();
                s.dirty = false;
                s.phase = Phase::Debouncing;
                s.first_event = now;
                s.last_event = now;
                Next::Debounce
            }
            MapEntry::Occupied(o) => {
                o.remove();
                Next::Nothing
            }
            MapEntry::Vacant(_) => Next::Nothing,
        }
    }

    /// The file changed under the current work: start over from debouncing.
    pub fn restart(&self, path: &Path, now: Instant) -> Next {
        match self.paths.get_mut(path) {
            Some(mut s) => {
                s.dirty = false;
                s.phase = Phase::Debouncing;
                s.first_event = now;
                s.last_event = now;
                Next::Debounce
            }
            None => Next::Nothing,
        }
    }

    pub fn phase(&self, path: &Path) -> Option<Phase> {
        self.paths.get(path).map(|s| s.phase)
    }

    /// Paths with work anywhere in the pipeline.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Paths whose bytes are moving right now (uploading or being linked).
    pub fn in_transfer(&self) -> usize {
        self.paths
            .iter()
            .filter(|s| matches!(s.phase, Phase::Uploading | Phase::Linking))
            .count()
    }

    /// Stops slots from starting new jobs; used on shutdown.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// The path table together with the way back to the debouncer: what every stage after the
/// debouncer uses to end or restart a path's work.
#[derive(Clone)]
pub struct Tracker {
    pub paths: Arc<PathTable>,
    debouncer: Recipient<Redebounce>,
}

impl Tracker {
    pub fn new(paths: Arc<PathTable>, debouncer: Recipient<Redebounce>) -> Self {
        Tracker { paths, debouncer }
    }

    /// Ends the current work on `path`; see [`PathTable::complete`].
    pub fn complete(&self, path: &Path) {
        if self.paths.complete(path, Instant::now()) == Next::Debounce {
            self.debouncer.do_send(Redebounce(vec![path.to_path_buf()]));
        }
    }

    /// Sends `path` back to debouncing; see [`PathTable::restart`].
    pub fn restart(&self, path: &Path) {
        if self.paths.restart(path, Instant::now()) == Next::Debounce {
            self.debouncer.do_send(Redebounce(vec![path.to_path_buf()]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_merge_per_path() {
        let m = PathTable::new();
        let p = Path::new("a/b");
        let t = Instant::now();
        assert_eq!(m.touch(p, t), Next::Debounce);
        for _ in 0..1000 {
            assert_eq!(m.touch(p, t), Next::Nothing);
        }
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn queued_job_is_superseded_by_a_newer_event() {
        let m = PathTable::new();
        let p = Path::new("f");
        let t = Instant::now();
        let _ = m.touch(p, t);
        assert!(m.advance(p, Phase::Debouncing, Phase::Checking));
        let v = m.queue_for_upload(p, Phase::Checking, false).unwrap();
        assert_eq!(m.touch(p, t), Next::Debounce);
        assert_eq!(m.phase(p), Some(Phase::Debouncing));
        assert!(!m.start_upload(p, v), "stale job must not start");
    }

    #[test]
    fn queued_snapshot_survives_events_and_redoes_afterwards() {
        let m = PathTable::new();
        let p = Path::new("growing.log");
        let t = Instant::now();
        let _ = m.touch(p, t);
        assert!(m.advance(p, Phase::Debouncing, Phase::Checking));
        assert!(m.advance(p, Phase::Checking, Phase::Snapshotting));
        let v = m.queue_for_upload(p, Phase::Snapshotting, true).unwrap();
        assert_eq!(m.touch(p, t), Next::Nothing);
        assert!(m.start_upload(p, v));
        assert_eq!(m.complete(p, t), Next::Debounce, "dirty path is redone");
        assert_eq!(m.complete(p, t), Next::Nothing);
        assert!(m.is_empty());
    }

    #[test]
    fn deadline_is_quiet_after_last_event_capped_by_max_wait() {
        let m = PathTable::new();
        let p = Path::new("x");
        let t0 = Instant::now();
        let _ = m.touch(p, t0);
        let quiet = Duration::from_millis(300);
        let max = Duration::from_secs(1);
        let _ = m.touch(p, t0 + Duration::from_millis(900));
        assert_eq!(
            m.try_release(p, quiet, max, t0 + Duration::from_millis(950)),
            Release::NotYet(t0 + max)
        );
        assert_eq!(
            m.try_release(p, quiet, max, t0 + max),
            Release::Released { since: t0 }
        );
        assert_eq!(m.try_release(p, quiet, max, t0 + max), Release::Stale);
    }

    #[test]
    fn draining_stops_new_uploads() {
        let m = PathTable::new();
        let p = Path::new("x");
        let _ = m.touch(p, Instant::now());
        assert!(m.advance(p, Phase::Debouncing, Phase::Checking));
        let v = m.queue_for_upload(p, Phase::Checking, false).unwrap();
        m.drain();
        assert!(!m.start_upload(p, v));
    }
}
