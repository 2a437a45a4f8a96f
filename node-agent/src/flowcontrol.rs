//! client-go's `util/flowcontrol.Backoff`: a per-key exponential backoff, jitter-free as
//! the kubelet uses it, every clock reading a parameter. The one implementation behind the
//! kubelet's CrashLoopBackOff (`kubelet::backoff`, on wall-clock timestamps, since exit
//! times come from the runtime) and its image pull backoff (`image::policy`, on the
//! monotonic clock).
use std::collections::HashMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;

/// A point in time the backoff can measure from.
pub trait Moment: Copy {
    /// How long after `earlier` this is; zero when it is not after it.
    fn since(self, earlier: Self) -> Duration;
}

impl Moment for Instant {
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl Moment for Timestamp {
    fn since(self, earlier: Self) -> Duration {
        Duration::try_from(self.duration_since(earlier)).unwrap_or(Duration::ZERO)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BackoffEntry<T> {
    backoff: Duration,
    last_update: T,
}

/// When an entry starts over (upstream `HasExpiredFunc`; the default is twice the cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Upstream's default: more than 2 × the maximum since the last update.
    TwiceMax,
    /// More than this since the last update.
    After(Duration),
}

/// `flowcontrol.Backoff`: a per-key exponential backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff<T = Timestamp> {
    default_duration: Duration,
    max_duration: Duration,
    expiry: Expiry,
    per_item: HashMap<String, BackoffEntry<T>>,
}

impl<T: Moment> Backoff<T> {
    /// `NewBackOff(initial, max)`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            default_duration: initial,
            max_duration: max,
            expiry: Expiry::TwiceMax,
            per_item: HashMap::new(),
        }
    }

    /// With another expiry (upstream sets `HasExpiredFunc`).
    pub fn with_expiry(mut self, expiry: Expiry) -> Self {
        self.expiry = expiry;
        self
    }

    fn has_expired(&self, event_time: T, last_update: T) -> bool {
        let limit = match self.expiry {
            Expiry::TwiceMax => self.max_duration.saturating_mul(2),
            Expiry::After(d) => d,
        };
        event_time.since(last_update) > limit
    }

    /// `Get`: the current backoff of `id` (zero when it has none).
    pub fn get(&self, id: &str) -> Duration {
        self.per_item.get(id).map_or(Duration::ZERO, |e| e.backoff)
    }

    /// `Next`: moves `id` to its next backoff (the initial one when it has none or its
    /// entry expired at `event_time`, else double, capped); `now` is the update time.
    pub fn next(&mut self, id: &str, event_time: T, now: T) {
        let backoff = match self.per_item.get(id) {
            Some(e) if !self.has_expired(event_time, e.last_update) => {
                e.backoff.saturating_mul(2).min(self.max_duration)
            }
            _ => self.default_duration,
        };
        self.per_item.insert(
            id.to_string(),
            BackoffEntry {
                backoff,
                last_update: now,
            },
        );
    }

    /// `Reset`.
    pub fn reset(&mut self, id: &str) {
        self.per_item.remove(id);
    }

    /// `IsInBackOffSince`: less than the current backoff has passed since `event_time`.
    pub fn is_in_back_off_since(&self, id: &str, event_time: T, now: T) -> bool {
        let Some(e) = self.per_item.get(id) else {
            return false;
        };
        if self.has_expired(event_time, e.last_update) {
            return false;
        }
        now.since(event_time) < e.backoff
    }

    /// `IsInBackOffSinceUpdate`: less than the current backoff has passed between the last
    /// update and `event_time`.
    pub fn is_in_back_off_since_update(&self, id: &str, event_time: T) -> bool {
        let Some(e) = self.per_item.get(id) else {
            return false;
        };
        if self.has_expired(event_time, e.last_update) {
            return false;
        }
        event_time.since(e.last_update) < e.backoff
    }

    /// `GC`: drops the entries expired at `now`.
    pub fn gc(&mut self, now: T) {
        let expired: Vec<String> = self
            .per_item
            .iter()
            .filter(|(_, e)| self.has_expired(now, e.last_update))
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.per_item.remove(&k);
        }
    }

    /// `DeleteEntry`.
    pub fn delete_entry(&mut self, id: &str) {
        self.per_item.remove(id);
    }

    pub fn len(&self) -> usize {
        self.per_item.len()
    }

    pub fn is_empty(&self) -> bool {
        self.per_item.is_empty()
    }
}
