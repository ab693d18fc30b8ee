//! A timer that wakes an actor at its earliest deadline and not otherwise, so an idle daemon
//! does not tick. Owns only the one pending wake-up; the actor owns its deadlines.

use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, SpawnHandle};

/// Wake-ups closer together than this are merged, so a burst of deadlines costs few wake-ups.
const MIN_GAP: Duration = Duration::from_millis(5);

#[derive(Default)]
pub struct Wakeup {
    pending: Option<(Instant, SpawnHandle)>,
}

impl Wakeup {
    /// Makes sure `wake` runs at `at` (or a few milliseconds later), keeping an earlier
    /// wake-up if one is already set.
    pub fn at<A>(&mut self, at: Instant, ctx: &mut Context<A>, wake: fn(&mut A, &mut Context<A>))
    where
        A: Actor<Context = Context<A>>,
    {
        let now = Instant::now();
        let at = at.max(now + MIN_GAP);
        if self
            .pending
            .as_ref()
            .is_some_and(|(current, _)| *current <= at)
        {
            return;
        }
        if let Some((_, handle)) = self.pending.take() {
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(at - now, wake);
        self.pending = Some((at, handle));
    }

    /// Called first thing by the wake function: nothing is pending any more.
    pub fn fired(&mut self) {
        self.pending = None;
    }
}
