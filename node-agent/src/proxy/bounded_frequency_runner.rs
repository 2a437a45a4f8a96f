//! Upstream's `BoundedFrequencyRunner` (pkg/proxy/runner/bounded_frequency_runner.go, the
//! v1.33+ one without bursts) as a pure schedule: when the next sync is due, given the
//! requests and the results of the runs so far. The shell ([`super::server`]) sleeps until
//! [`BoundedFrequencyRunner::next_run`] or a request, whichever is first.
//!
//! 1. At least `min_interval` from the *end* of a run to the start of the next; requests
//!    meanwhile are coalesced into one run when it has passed.
//! 2. A run at least every `max_interval` without requests.
//! 3. A failed run is retried after `retry_interval` (or sooner, by a request); a successful
//!    run cancels the retry.
//!
//! kube-proxy's use: min `--min-sync-period` (1 s), retry `--sync-period` (30 s), max
//! `FullSyncPeriod` (1 h).

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct BoundedFrequencyRunner {
    min_interval: Duration,
    retry_interval: Duration,
    max_interval: Duration,
    /// A run was asked for (`Run()`), not yet started.
    pending: bool,
    /// No run before this (the end of the last run plus `min_interval`).
    min_until: Option<Instant>,
    retry_at: Option<Instant>,
    max_at: Instant,
}

/// `max_interval` below `min_interval` (upstream panics).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the longest interval between syncs ({max:?}) is shorter than the shortest ({min:?})")]
pub struct IntervalError {
    pub min: Duration,
    pub max: Duration,
}

impl BoundedFrequencyRunner {
    pub fn new(
        min_interval: Duration,
        retry_interval: Duration,
        max_interval: Duration,
        now: Instant,
    ) -> Result<Self, IntervalError> {
        if max_interval < min_interval {
            return Err(IntervalError {
                min: min_interval,
                max: max_interval,
            });
        }
        Ok(BoundedFrequencyRunner {
            min_interval,
            retry_interval,
            max_interval,
            pending: false,
            min_until: None,
            retry_at: None,
            max_at: now + max_interval,
        })
    }

    /// `Run()`: run as soon as the minimum interval allows.
    pub fn run(&mut self) {
        self.pending = true;
    }

    /// When the next run is due.
    pub fn next_run(&self, now: Instant) -> Instant {
        let mut trigger = self.max_at;
        if let Some(retry) = self.retry_at {
            trigger = trigger.min(retry);
        }
        if self.pending {
            trigger = trigger.min(now);
        }
        match self.min_until {
            Some(min) => trigger.max(min),
            None => trigger,
        }
    }

    pub fn is_due(&self, now: Instant) -> bool {
        self.next_run(now) <= now
    }

    /// A run starts: the requests so far are served by it (later ones wait for the next).
    pub fn started(&mut self) {
        self.pending = false;
    }

    /// A run ended at `now`, successfully or not.
    pub fn finished(&mut self, now: Instant, ok: bool) {
        self.min_until = Some(now + self.min_interval);
        self.max_at = now + self.max_interval;
        self.retry_at = if ok {
            None
        } else {
            Some(now + self.retry_interval)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(1);
    const RETRY: Duration = Duration::from_secs(30);
    const MAX: Duration = Duration::from_secs(3600);

    enum Step {
        /// A request.
        Request,
        /// A run that ends at `.0` ms, succeeding or not.
        Run(u64, bool),
    }
    use Step::*;

    /// Each case: steps, then the time (ms) the next run is due, asked at `now` ms.
    #[test]
    fn next_run_table() {
        let cases: Vec<(&str, Vec<Step>, u64, u64)> = vec![
            ("nothing asked: the max interval", vec![], 0, 3_600_000),
            ("a first request runs at once", vec![Request], 5, 5),
            (
                "a request right after a run waits for the min interval from its end",
                vec![Run(200, true), Request],
                300,
                1_200,
            ),
            (
                "a request long after a run runs at once",
                vec![Run(200, true), Request],
                5_000,
                5_000,
            ),
            (
                "requests coalesce: several before the min interval, one run at its end",
                vec![Run(100, true), Request, Request, Request],
                900,
                1_100,
            ),
            (
                "requests served by a run leave nothing pending: max interval next",
                vec![Request, Run(100, true)],
                100,
                3_600_100,
            ),
            (
                "a failed run is retried after the retry interval",
                vec![Run(100, false)],
                100,
                30_100,
            ),
            (
                "a request runs before the retry, after the min interval",
                vec![Run(100, false), Request],
                500,
                1_100,
            ),
            (
                "a successful run cancels the retry",
                vec![Run(100, false), Run(1_200, true)],
                1_200,
                3_601_200,
            ),
        ];
        for (name, steps, now, want) in cases {
            let t0 = Instant::now();
            let at = |ms: u64| t0 + Duration::from_millis(ms);
            let mut r = BoundedFrequencyRunner::new(MIN, RETRY, MAX, t0).unwrap();
            for step in steps {
                match step {
                    Request => r.run(),
                    Run(end, ok) => {
                        r.started();
                        r.finished(at(end), ok);
                    }
                }
            }
            assert_eq!(r.next_run(at(now)), at(want), "{name}");
            assert_eq!(r.is_due(at(now)), want <= now, "{name}");
        }
    }

    #[test]
    fn request_during_a_run_survives_it() {
        let t0 = Instant::now();
        let mut r = BoundedFrequencyRunner::new(MIN, RETRY, MAX, t0).unwrap();
        r.run();
        r.started();
        r.run(); // arrives while the sync runs
        r.finished(t0 + Duration::from_millis(100), true);
        assert_eq!(
            r.next_run(t0 + Duration::from_millis(100)),
            t0 + Duration::from_millis(1_100)
        );
    }

    #[test]
    fn max_below_min_is_refused() {
        assert_eq!(
            BoundedFrequencyRunner::new(MIN, RETRY, Duration::from_millis(10), Instant::now())
                .unwrap_err()
                .to_string(),
            "the longest interval between syncs (10ms) is shorter than the shortest (1s)"
        );
    }
}
