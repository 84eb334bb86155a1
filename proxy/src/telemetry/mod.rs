//! The proxy's metrics registry: counters, gauges and histograms with labels,
//! rendered in the Prometheus text format.
//!
//! Two namespaces: the proxy's own `weft_*` families, and filters' metrics,
//! exported as `weft_user_<name>` with a first label `filter` (the filter's
//! name in the config) that the host sets. A filter can neither write the
//! proxy's series nor another filter's, nor fix the kind of a proxy family.
//! Filters' label names are checked when a series is made (reserved
//! `filter`, `le`, `__*`, duplicates: refused), and each filter may make at
//! most [`MetricLimits::max_series_per_family`] series per family, in at
//! most [`MetricLimits::max_families_per_filter`] families: past them, and
//! for a label value longer than
//! [`MetricLimits::max_label_value_bytes`], the update is dropped and
//! counted in `weft_filter_metric_updates_dropped_total{filter}`.
//!
//! Every worker updates it on every request, so an update of a series that
//! exists takes the lock shared and changes the series' atomics: workers do
//! not wait on each other. Only a new series takes the lock exclusively.
//! [`Registry::render`] takes the locks shared only to copy out pointers to
//! the series, and formats after releasing them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// Label pairs of one series, in the order given.
pub type Labels = Vec<(String, String)>;

/// Upper bounds of the default histogram buckets (seconds).
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What kind of metric a name is: fixed by its first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted in buckets.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Why a metric update was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricError {
    /// Not a valid Prometheus metric or label name.
    #[error("invalid metric or label name {0:?}")]
    InvalidName(String),
    /// A label name a filter may not use: the host's `filter`, `le`, or
    /// one starting with `__`.
    #[error(
        "metric {metric:?}: label name {label:?} is reserved (filter, le and __* are the proxy's)"
    )]
    ReservedLabel {
        /// The metric.
        metric: String,
        /// The label name.
        label: String,
    },
    /// The same label name twice in one series.
    #[error("metric {metric:?}: label name {label:?} is given twice")]
    DuplicateLabel {
        /// The metric.
        metric: String,
        /// The label name.
        label: String,
    },
    /// The name is already used as another kind.
    #[error("metric {name:?} is a {existing}, not a {requested}")]
    KindMismatch {
        /// The metric.
        name: String,
        /// Its kind.
        existing: &'static str,
        /// The kind asked for.
        requested: &'static str,
    },
}

#[derive(Debug)]
enum Series {
    Counter(AtomicU64),
    Gauge(AtomicF64),
    Histogram(Box<Histogram>),
}

/// Cumulative bucket counts (`buckets[i]`: observations ≤ `BUCKETS[i]`).
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    sum: AtomicF64,
    count: AtomicU64,
}

/// An `f64` in an `AtomicU64`, by its bits.
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    fn add(&self, delta: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + delta).to_bits())
            });
    }
}

/// Series by labels, hashed with a per-process random seed (foldhash: a
/// fraction of SipHash's cost on a handful of short strings). Both are
/// shared pointers so that rendering copies them out of the lock.
type SeriesMap = HashMap<Arc<Labels>, Arc<Series>, foldhash::fast::RandomState>;

#[derive(Debug)]
struct Family {
    kind: Kind,
    series: SeriesMap,
}

/// A filters' family: each filter's series apart, by filter name.
#[derive(Debug)]
struct FilterFamily {
    kind: Kind,
    by_filter: HashMap<Arc<str>, SeriesMap, foldhash::fast::RandomState>,
}

/// Default of [`MetricLimits::max_series_per_family`].
pub const DEFAULT_MAX_SERIES_PER_FAMILY: usize = 1000;
/// Default of [`MetricLimits::max_families_per_filter`].
pub const DEFAULT_MAX_FAMILIES_PER_FILTER: usize = 100;
/// Default of [`MetricLimits::max_label_value_bytes`].
pub const DEFAULT_MAX_LABEL_VALUE_BYTES: usize = 1024;
/// Prefix of the families filters define.
pub const FILTER_PREFIX: &str = "weft_user_";
/// The proxy's counter of filter metric updates it dropped, by filter.
const DROPPED_TOTAL: &str = "weft_filter_metric_updates_dropped_total";

/// Bounds on what filters put in the registry (config `metrics:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricLimits {
    /// Series one filter may make in one family.
    pub max_series_per_family: usize,
    /// Metrics (names) one filter may make.
    pub max_families_per_filter: usize,
    /// Longest label value a filter's new series may have.
    pub max_label_value_bytes: usize,
}

impl Default for MetricLimits {
    fn default() -> Self {
        MetricLimits {
            max_series_per_family: DEFAULT_MAX_SERIES_PER_FAMILY,
            max_families_per_filter: DEFAULT_MAX_FAMILIES_PER_FILTER,
            max_label_value_bytes: DEFAULT_MAX_LABEL_VALUE_BYTES,
        }
    }
}

/// All metrics of the process.
#[derive(Debug)]
pub struct Registry {
    families: RwLock<BTreeMap<String, Family>>,
    /// Filters' families by the name the filter gave (exported with
    /// [`FILTER_PREFIX`]).
    filter_families: RwLock<BTreeMap<String, FilterFamily>>,
    max_series_per_family: AtomicUsize,
    max_families_per_filter: AtomicUsize,
    max_label_value_bytes: AtomicUsize,
}

impl Default for Registry {
    fn default() -> Self {
        let limits = MetricLimits::default();
        Registry {
            families: RwLock::default(),
            filter_families: RwLock::default(),
            max_series_per_family: AtomicUsize::new(limits.max_series_per_family),
            max_families_per_filter: AtomicUsize::new(limits.max_families_per_filter),
            max_label_value_bytes: AtomicUsize::new(limits.max_label_value_bytes),
        }
    }
}

fn add_counter(value: u64) -> impl FnOnce(&Series) {
    move |s| {
        if let Series::Counter(v) = s {
            v.fetch_add(value, Ordering::Relaxed);
        }
    }
}

fn set_gauge(value: f64) -> impl FnOnce(&Series) {
    move |s| {
        if let Series::Gauge(v) = s {
            v.set(value);
        }
    }
}

fn add_gauge(delta: f64) -> impl FnOnce(&Series) {
    move |s| {
        if let Series::Gauge(v) = s {
            v.add(delta);
        }
    }
}

fn observe(value: f64) -> impl FnOnce(&Series) {
    move |s| {
        if let Series::Histogram(h) = s {
            for (bound, n) in BUCKETS.iter().zip(&h.buckets) {
                if value <= *bound {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
            h.sum.add(value);
            h.count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn new_series(kind: Kind) -> Arc<Series> {
    Arc::new(match kind {
        Kind::Counter => Series::Counter(AtomicU64::new(0)),
        Kind::Gauge => Series::Gauge(AtomicF64::default()),
        Kind::Histogram => Series::Histogram(Box::default()),
    })
}

impl Registry {
    /// Sets the bounds on filters' metrics; series made before keep.
    pub fn set_limits(&self, limits: MetricLimits) {
        self.max_series_per_family
            .store(limits.max_series_per_family, Ordering::Relaxed);
        self.max_families_per_filter
            .store(limits.max_families_per_filter, Ordering::Relaxed);
        self.max_label_value_bytes
            .store(limits.max_label_value_bytes, Ordering::Relaxed);
    }

    /// Adds `value` to counter `name{labels}`.
    pub fn counter_add(&self, name: &str, labels: Labels, value: u64) -> Result<(), MetricError> {
        self.update(name, Kind::Counter, labels, add_counter(value))
    }

    /// Sets gauge `name{labels}` to `value`.
    pub fn gauge_set(&self, name: &str, labels: Labels, value: f64) -> Result<(), MetricError> {
        self.update(name, Kind::Gauge, labels, set_gauge(value))
    }

    /// Adds `delta` to gauge `name{labels}`.
    pub fn gauge_add(&self, name: &str, labels: Labels, delta: f64) -> Result<(), MetricError> {
        self.update(name, Kind::Gauge, labels, add_gauge(delta))
    }

    /// Records `value` in histogram `name{labels}`.
    pub fn histogram_observe(
        &self,
        name: &str,
        labels: Labels,
        value: f64,
    ) -> Result<(), MetricError> {
        self.update(name, Kind::Histogram, labels, observe(value))
    }

    /// Filter `filter` adds `value` to its counter `name{labels}`
    /// (exported as `weft_user_<name>{filter="…",labels}`).
    pub fn filter_counter_add(
        &self,
        filter: &Arc<str>,
        name: &str,
        labels: Labels,
        value: u64,
    ) -> Result<(), MetricError> {
        self.filter_update(filter, name, Kind::Counter, labels, add_counter(value))
    }

    /// Filter `filter` sets its gauge `name{labels}` to `value`.
    pub fn filter_gauge_set(
        &self,
        filter: &Arc<str>,
        name: &str,
        labels: Labels,
        value: f64,
    ) -> Result<(), MetricError> {
        self.filter_update(filter, name, Kind::Gauge, labels, set_gauge(value))
    }

    /// Filter `filter` adds `delta` to its gauge `name{labels}`.
    pub fn filter_gauge_add(
        &self,
        filter: &Arc<str>,
        name: &str,
        labels: Labels,
        delta: f64,
    ) -> Result<(), MetricError> {
        self.filter_update(filter, name, Kind::Gauge, labels, add_gauge(delta))
    }

    /// Filter `filter` records `value` in its histogram `name{labels}`.
    pub fn filter_histogram_observe(
        &self,
        filter: &Arc<str>,
        name: &str,
        labels: Labels,
        value: f64,
    ) -> Result<(), MetricError> {
        self.filter_update(filter, name, Kind::Histogram, labels, observe(value))
    }

    /// The current value of a counter series, if it exists.
    pub fn counter_value(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let families = self.families.read().unwrap();
        let family = families.get(name)?;
        family.series.iter().find_map(|(l, s)| match &**s {
            Series::Counter(v) if same_labels(l, labels) => Some(v.load(Ordering::Relaxed)),
            _ => None,
        })
    }

    fn update(
        &self,
        name: &str,
        kind: Kind,
        labels: Labels,
        apply: impl FnOnce(&Series),
    ) -> Result<(), MetricError> {
        // The hot path, shared: a series that exists was checked when it
        // was made.
        if let Some(family) = self.families.read().unwrap().get(name)
            && family.kind == kind
            && let Some(series) = family.series.get(&labels)
        {
            apply(series);
            return Ok(());
        }
        check_names(name, &labels)?;
        let mut families = self.families.write().unwrap();
        let family = families.entry(name.to_string()).or_insert(Family {
            kind,
            series: HashMap::default(),
        });
        check_kind(name, family.kind, kind)?;
        // Another thread may have made the series since the shared look.
        let series = family
            .series
            .entry(Arc::new(labels))
            .or_insert_with(|| new_series(kind));
        apply(series);
        Ok(())
    }

    fn filter_update(
        &self,
        filter: &Arc<str>,
        name: &str,
        kind: Kind,
        labels: Labels,
        apply: impl FnOnce(&Series),
    ) -> Result<(), MetricError> {
        // The hot path, shared, as in `update`.
        if let Some(family) = self.filter_families.read().unwrap().get(name)
            && family.kind == kind
            && let Some(series) = family.by_filter.get(&**filter)
            && let Some(series) = series.get(&labels)
        {
            apply(series);
            return Ok(());
        }
        check_names(name, &labels)?;
        check_filter_labels(name, &labels)?;
        let max_value = self.max_label_value_bytes.load(Ordering::Relaxed);
        if labels.iter().any(|(_, v)| v.len() > max_value) {
            self.count_dropped(filter);
            return Ok(());
        }
        let max_series = self.max_series_per_family.load(Ordering::Relaxed);
        let mut families = self.filter_families.write().unwrap();
        let new_to_filter = families
            .get(name)
            .is_none_or(|f| !f.by_filter.contains_key(&**filter));
        if new_to_filter {
            let max_families = self.max_families_per_filter.load(Ordering::Relaxed);
            let has = families
                .values()
                .filter(|f| f.by_filter.contains_key(&**filter))
                .count();
            if has >= max_families {
                drop(families);
                self.count_dropped(filter);
                return Ok(());
            }
        }
        let family = families.entry(name.to_string()).or_insert(FilterFamily {
            kind,
            by_filter: HashMap::default(),
        });
        check_kind(name, family.kind, kind)?;
        let series = family.by_filter.entry(filter.clone()).or_default();
        if let Some(found) = series.get(&labels) {
            apply(found);
        } else if series.len() < max_series {
            let made = new_series(kind);
            apply(&made);
            series.insert(Arc::new(labels), made);
        } else {
            drop(families);
            self.count_dropped(filter);
        }
        Ok(())
    }

    fn count_dropped(&self, filter: &str) {
        let labels = vec![("filter".to_string(), filter.to_string())];
        let _ = self.counter_add(DROPPED_TOTAL, labels, 1);
    }
}

fn check_kind(name: &str, existing: Kind, requested: Kind) -> Result<(), MetricError> {
    if existing != requested {
        return Err(MetricError::KindMismatch {
            name: name.to_string(),
            existing: existing.as_str(),
            requested: requested.as_str(),
        });
    }
    Ok(())
}

/// Metric and label names are Prometheus names; label names have no `:`.
fn check_names(name: &str, labels: &Labels) -> Result<(), MetricError> {
    if !valid_name(name) {
        return Err(MetricError::InvalidName(name.to_string()));
    }
    if let Some((bad, _)) = labels
        .iter()
        .find(|(k, _)| !valid_name(k) || k.contains(':'))
    {
        return Err(MetricError::InvalidName(bad.clone()));
    }
    Ok(())
}

/// A filter's labels: none of the proxy's names, none twice.
fn check_filter_labels(name: &str, labels: &Labels) -> Result<(), MetricError> {
    for (i, (label, _)) in labels.iter().enumerate() {
        if label == "filter" || label == "le" || label.starts_with("__") {
            return Err(MetricError::ReservedLabel {
                metric: name.to_string(),
                label: label.clone(),
            });
        }
        if labels[..i].iter().any(|(earlier, _)| earlier == label) {
            return Err(MetricError::DuplicateLabel {
                metric: name.to_string(),
                label: label.clone(),
            });
        }
    }
    Ok(())
}

fn same_labels(have: &Labels, want: &[(&str, &str)]) -> bool {
    have.len() == want.len()
        && have
            .iter()
            .zip(want)
            .all(|((k, v), (wk, wv))| k == wk && v == wv)
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

mod render;
#[cfg(test)]
mod tests;
