//! When an idle dispatcher looks at the store again.
//!
//! A dispatcher fetches work when signalled (a client call, a commit of
//! its own process, an announcement of another's) and otherwise at the
//! store's next wake-up time: the earliest message that becomes visible
//! later (a timer, a delayed start) or lease that expires. That time is
//! read by a task of its own after a fetch that found nothing, so that the
//! turns the fetch found do not wait for the read.
//!
//! Two things could make it miss a time. A message may become visible
//! between the fetch and the read: the read therefore asks for what
//! becomes visible after the fetch began, not after the read. And a read
//! under way may not see a delayed message written meanwhile:
//! [`LookSchedule`] notes what may have made the read stale (a fetch that
//! found nothing, a signal that a delayed message was written) and asks
//! for another read when the stale one answers. The stale answer still
//! counts, as an earlier time can only be right, but it is not the last
//! word.

use chrono::{DateTime, Utc};
use tokio::time::{Duration, Instant};

/// How long the dispatcher waits without a signal while the store's next
/// wake-up time is being read (the read answers long before).
pub(super) const IDLE_LOOK: Duration = Duration::from_secs(3600);

/// The dispatcher's next look at the store, and its reads of the store's
/// next wake-up time.
#[derive(Debug)]
pub(super) struct LookSchedule {
    look_at: Instant,
    /// When the last fetch that found nothing began: reads of the next
    /// wake-up time ask for what becomes visible after it.
    looked_from: DateTime<Utc>,
    lookup: Lookup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// No read under way.
    Idle,
    /// A read under way; `stale` if something it may have missed happened
    /// since it began.
    Reading { stale: bool },
}

impl LookSchedule {
    /// A schedule that looks at once.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            look_at: now,
            looked_from: DateTime::<Utc>::default(),
            lookup: Lookup::Idle,
        }
    }

    /// When to look at the store next without a signal.
    pub(super) fn look_at(&self) -> Instant {
        self.look_at
    }

    /// Whether it is time to look.
    pub(super) fn is_due(&self, now: Instant) -> bool {
        now >= self.look_at
    }

    /// Look at `at` (now: a signal, a full page, a batch to check again;
    /// later: a retry after an error).
    pub(super) fn look_again_at(&mut self, at: Instant) {
        self.look_at = at;
    }

    /// Look no later than `at` (a timer the dispatcher wrote itself, a
    /// retry after an error).
    pub(super) fn look_by(&mut self, at: Instant) {
        self.look_at = self.look_at.min(at);
    }

    /// A fetch that began at `began` found nothing: wait for a signal or
    /// the store's next wake-up time. `Some(after)` if a read of that time
    /// is to start now, asking for what becomes visible after `after`.
    pub(super) fn found_nothing(&mut self, now: Instant, began: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.look_at = now + IDLE_LOOK;
        self.looked_from = began;
        self.read_again()
    }

    /// A message that becomes visible later was written (by anyone):
    /// `Some(after)` if a read of the next wake-up time is to start now.
    pub(super) fn wakeup_written(&mut self) -> Option<DateTime<Utc>> {
        self.read_again()
    }

    /// The read answered `at` (the time to look by). `Some(after)` if
    /// another read is to start now, this one being stale.
    pub(super) fn read_answered(&mut self, at: Instant) -> Option<DateTime<Utc>> {
        self.look_at = self.look_at.min(at);
        let stale = matches!(self.lookup, Lookup::Reading { stale: true });
        self.lookup = if stale {
            Lookup::Reading { stale: false }
        } else {
            Lookup::Idle
        };
        stale.then_some(self.looked_from)
    }

    /// Whether a read is under way.
    #[cfg(test)]
    fn is_reading(&self) -> bool {
        matches!(self.lookup, Lookup::Reading { .. })
    }

    fn read_again(&mut self) -> Option<DateTime<Utc>> {
        match self.lookup {
            Lookup::Idle => {
                self.lookup = Lookup::Reading { stale: false };
                Some(self.looked_from)
            }
            Lookup::Reading { .. } => {
                self.lookup = Lookup::Reading { stale: true };
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(n: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(n).unwrap()
    }

    #[test]
    fn an_empty_fetch_reads_what_becomes_visible_after_it_began() {
        let t0 = Instant::now();
        let mut s = LookSchedule::new(t0);
        assert!(s.is_due(t0));
        assert_eq!(s.found_nothing(t0, at(1_000)), Some(at(1_000)), "a read starts");
        assert!(!s.is_due(t0 + ms(10)), "until it answers, only signals wake");
        assert_eq!(s.read_answered(t0 + ms(50)), None, "one read is enough");
        assert_eq!(s.look_at(), t0 + ms(50));
        assert!(!s.is_reading());
    }

    #[test]
    fn a_timer_written_while_a_read_is_under_way_makes_it_read_again() {
        let t0 = Instant::now();
        let mut s = LookSchedule::new(t0);
        assert!(s.found_nothing(t0, at(1_000)).is_some());
        // A delayed message written meanwhile: the read may predate it.
        assert_eq!(s.wakeup_written(), None, "one read at a time");
        // The stale read found nothing sooner than an hour: read again,
        // from the same fetch (what became visible since is in it).
        assert_eq!(s.read_answered(t0 + IDLE_LOOK), Some(at(1_000)));
        assert!(s.is_reading());
        assert_eq!(s.read_answered(t0 + ms(20)), None);
        assert_eq!(s.look_at(), t0 + ms(20), "the new timer counts");
    }

    #[test]
    fn a_fetch_that_finds_nothing_while_a_read_is_under_way_makes_it_read_again_from_it() {
        let t0 = Instant::now();
        let mut s = LookSchedule::new(t0);
        assert!(s.found_nothing(t0, at(1_000)).is_some());
        // A signal, then a fetch that found a delayed start not yet due.
        s.look_again_at(t0 + ms(1));
        assert_eq!(s.found_nothing(t0 + ms(2), at(1_002)), None);
        assert_eq!(s.read_answered(t0 + IDLE_LOOK), Some(at(1_002)));
        assert_eq!(s.read_answered(t0 + ms(40)), None);
        assert_eq!(s.look_at(), t0 + ms(40));
    }

    #[test]
    fn an_earlier_time_is_kept_whoever_gives_it() {
        let t0 = Instant::now();
        let mut s = LookSchedule::new(t0);
        assert!(s.found_nothing(t0, at(1_000)).is_some());
        s.look_by(t0 + ms(5));
        assert_eq!(s.read_answered(t0 + ms(30)), None);
        assert_eq!(s.look_at(), t0 + ms(5));
        assert_eq!(s.wakeup_written(), Some(at(1_000)), "idle: a read starts at once");
    }
}
