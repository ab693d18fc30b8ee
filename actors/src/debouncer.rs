//! The debouncer: holds each touched path until it has been quiet for `debounce.quiet`, then
//! releases it to the stability checker. Owns the timers; the per-path state lives in the shared
//! [`PathTable`], where a thousand events for one path are one entry. It does not look at files.
//!
//! A path that keeps changing is released anyway once it has waited `stability.max_wait`, so a
//! file that never goes quiet still reaches the snapshot copier. Timers sit in one deadline heap
//! with at most one entry per debouncing path, so a burst of 5,000 files costs the quiet window
//! once, not once per file; the actor wakes only for the earliest deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::messages::{Candidate, CheckStability, PathsTouched, Redebounce};
use crate::path_table::{Next, PathTable, Release};
use crate::stability::StabilityChecker;
use crate::stats::ActorStats;
use crate::wakeup::Wakeup;

#[derive(Clone, Debug)]
pub struct DebounceSettings {
    pub quiet: Duration,
    /// Longest a path may keep changing before it is released anyway (`stability.max_wait`).
    pub max_wait: Duration,
    pub log_interval: Duration,
}

pub struct Debouncer {
    settings: DebounceSettings,
    paths: Arc<PathTable>,
    stability: Addr<StabilityChecker>,
    timers: BinaryHeap<Reverse<(Instant, PathBuf)>>,
    wakeup: Wakeup,
    stats: Arc<ActorStats>,
}

impl Debouncer {
    pub fn new(
        settings: DebounceSettings,
        paths: Arc<PathTable>,
        stability: Addr<StabilityChecker>,
        stats: Arc<ActorStats>,
    ) -> Self {
        Debouncer {
            settings,
            paths,
            stability,
            timers: BinaryHeap::new(),
            wakeup: Wakeup::default(),
            stats,
        }
    }

    fn on_wake(&mut self, ctx: &mut Context<Self>) {
        self.wakeup.fired();
        self.release_due();
        self.rearm(ctx);
    }

    /// Wakes up for the earliest timer, if any.
    fn rearm(&mut self, ctx: &mut Context<Self>) {
        if let Some(Reverse((at, _))) = self.timers.peek() {
            let at = *at;
            self.wakeup.at(at, ctx, Self::on_wake);
        }
    }

    fn arm(&mut self, path: PathBuf, now: Instant) {
        self.timers.push(Reverse((now + self.settings.quiet, path)));
    }

    /// Releases every path whose deadline passed; re-arms paths that got events since.
    fn release_due(&mut self) {
        let now = Instant::now();
        let started = now;
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, path)) = self.timers.pop().expect("peeked");
            match self
                .paths
                .try_release(&path, self.settings.quiet, self.settings.max_wait, now)
            {
                Release::Stale => {}
                Release::NotYet(at) => self.timers.push(Reverse((at, path))),
                Release::Released { since } => due.push(Candidate { path, since }),
            }
        }
        self.stats.set_queue_depth(self.timers.len());
        if !due.is_empty() {
            self.stats.sent(due.len());
            self.stability.do_send(CheckStability(due));
        }
        self.stats.busy_since(started);
    }
}

impl Actor for Debouncer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.settings.log_interval, |act, _| {
            act.stats.log("metrics")
        });
    }
}

impl Handler<PathsTouched> for Debouncer {
    type Result = ();

    fn handle(&mut self, msg: PathsTouched, ctx: &mut Self::Context) {
        let now = Instant::now();
        self.stats.received(msg.0.len());
        for path in msg.0 {
            if self.paths.touch(&path, now) == Next::Debounce {
                self.arm(path, now);
            }
        }
        self.stats.set_queue_depth(self.timers.len());
        self.rearm(ctx);
    }
}

impl Handler<Redebounce> for Debouncer {
    type Result = ();

    fn handle(&mut self, msg: Redebounce, ctx: &mut Self::Context) {
        let now = Instant::now();
        self.stats.received(msg.0.len());
        for path in msg.0 {
            self.arm(path, now);
        }
        self.rearm(ctx);
    }
}
