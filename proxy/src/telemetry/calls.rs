//! Filter calls per filter and phase: a count of every call, and the time of
//! one call in [`SAMPLE_EVERY`] of each filter and phase in a histogram. The
//! handles are resolved when a chain entry is built ([`PhaseMetrics`]).

use std::time::Duration;

use prometheus::core::{Collector, Desc, Metric};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

/// One call in this many, of each filter and phase, is timed.
pub const SAMPLE_EVERY: u32 = 8;

/// Upper bounds of `weft_filter_call_duration_seconds`' buckets: a phase
/// call takes about a microsecond; the deadline is 10 ms by default.
pub const CALL_BUCKETS: [f64; 15] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.1,
];

/// The families.
#[derive(Clone)]
pub struct CallMetrics {
    calls: IntCounterVec,
    duration: HistogramVec,
}

impl CallMetrics {
    pub(super) fn new() -> Self {
        CallMetrics {
            calls: IntCounterVec::new(
                Opts::new(
                    "weft_filter_calls_total",
                    "Phase calls of filters, by filter and phase.",
                ),
                &["filter", "phase"],
            )
            .expect("valid family"),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "weft_filter_call_duration_seconds",
                    "Time of a phase call (one call in 8 is timed), by filter and phase.",
                )
                .buckets(CALL_BUCKETS.to_vec()),
                &["filter", "phase"],
            )
            .expect("valid family"),
        }
    }

    /// The handles of `filter`'s `phase`.
    pub fn phase(&self, filter: &str, phase: &str) -> PhaseMetrics {
        PhaseMetrics {
            calls: self.calls.with_label_values(&[filter, phase]),
            duration: self.duration.with_label_values(&[filter, phase]),
        }
    }
}

impl Collector for CallMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut all = self.calls.desc();
        all.extend(self.duration.desc());
        all
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut all = self.calls.collect();
        all.extend(self.duration.collect());
        all
    }
}

/// One filter's phase: its call count and sampled call times.
#[derive(Clone)]
pub struct PhaseMetrics {
    calls: IntCounter,
    duration: Histogram,
}

impl PhaseMetrics {
    /// Counts a call; `true` when this one is to be timed
    /// ([`PhaseMetrics::timed`]).
    #[inline]
    pub fn count(&self) -> bool {
        self.calls.inc();
        // Every eighth call of this filter's phase (a count per thread
        // would alias with a chain's period and never time some phases).
        self.calls.get().is_multiple_of(u64::from(SAMPLE_EVERY))
    }

    /// Records the time of a call [`PhaseMetrics::count`] chose.
    pub fn timed(&self, took: Duration) {
        self.duration.observe(took.as_secs_f64());
    }

    /// Calls so far, and the median and 99th percentile of the timed ones
    /// (seconds, estimated from the buckets as Prometheus'
    /// `histogram_quantile` does; `None` before any call was timed).
    pub fn summary(&self) -> (u64, Option<f64>, Option<f64>) {
        let h = self.duration.metric();
        let h = h.get_histogram();
        let buckets: Vec<(f64, u64)> = h
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        let total = h.get_sample_count();
        (
            self.calls.get(),
            quantile(&buckets, total, 0.5),
            quantile(&buckets, total, 0.99),
        )
    }
}

/// The `q` quantile of cumulative `buckets` holding `total` observations,
/// interpolated linearly within its bucket.
pub fn quantile(buckets: &[(f64, u64)], total: u64, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            let in_bucket = (count - lower.1) as f64;
            if in_bucket == 0.0 {
                return Some(bound);
            }
            return Some(lower.0 + (bound - lower.0) * (rank - lower.1 as f64) / in_bucket);
        }
        lower = (bound, count);
    }
    // Past the last bound: the last bound, as histogram_quantile answers.
    Some(lower.0)
}
