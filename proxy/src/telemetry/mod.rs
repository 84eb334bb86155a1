//! The proxy's metrics, on the `prometheus` crate: its metric types, its
//! registry and its text encoder.
//!
//! Three kinds of families live in one [`prometheus::Registry`]:
//!
//! - the request path's own, typed and resolved once per route or chain
//!   entry when a snapshot is built ([`http`], [`calls`]): per request only
//!   a pick among handles and atomic adds;
//! - the proxy's other families, updated by name ([`Registry::counter_add`]
//!   and friends): made on first use, their label names fixed then, with a
//!   HELP text from [`help`] (off the request path: reloads, failures,
//!   compiles);
//! - filters' metrics ([`filters`]), exported as `weft_user_<name>` with a
//!   first label `filter` (the filter's name in the config) that the host
//!   sets. A filter can neither write the proxy's series nor another
//!   filter's, nor fix the kind of a proxy family. Filters' label names are
//!   checked when a series is made (reserved `filter`, `le`, `__*`,
//!   duplicates, a label-name set other than the metric's first one:
//!   refused), and each filter may make at most
//!   [`MetricLimits::max_series_per_family`] series per family, in at most
//!   [`MetricLimits::max_families_per_filter`] families: past them, and for
//!   a label value longer than [`MetricLimits::max_label_value_bytes`], the
//!   update is dropped and counted in
//!   `weft_filter_metric_updates_dropped_total{filter}`.
//!
//! A subsystem that keeps its own atomics exports them at scrape time with a
//! [`prometheus::core::Collector`] given to [`Registry::register`] (see
//! [`scrape`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus::core::Collector;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts};

pub mod calls;
mod filters;
pub mod help;
pub mod http;
mod render;
pub mod scrape;
#[cfg(test)]
mod tests;

pub use render::{Format, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};

/// Label pairs of one series, in the order given.
pub type Labels = Vec<(String, String)>;

/// Upper bounds of the default histogram buckets (seconds).
pub const BUCKETS: [f64; 14] = [
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
    /// A metric's label names are fixed by its first series: another set
    /// of names is refused.
    #[error(
        "metric {metric:?} has the label names [{expected}] (fixed by its first series), not [{got}]"
    )]
    LabelNames {
        /// The metric.
        metric: String,
        /// Its label names, comma-separated.
        expected: String,
        /// The names given, comma-separated.
        got: String,
    },
}

/// Default of [`MetricLimits::max_series_per_family`].
pub const DEFAULT_MAX_SERIES_PER_FAMILY: usize = 1000;
/// Default of [`MetricLimits::max_families_per_filter`].
pub const DEFAULT_MAX_FAMILIES_PER_FILTER: usize = 100;
/// Default of [`MetricLimits::max_label_value_bytes`].
pub const DEFAULT_MAX_LABEL_VALUE_BYTES: usize = 1024;
/// Prefix of the families filters define.
pub const FILTER_PREFIX: &str = "weft_user_";

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

/// One of the proxy's families updated by name.
#[derive(Clone)]
enum NamedVec {
    Counter(IntCounterVec),
    Gauge(GaugeVec),
    Histogram(HistogramVec),
}

struct Named {
    kind: Kind,
    /// Fixed by the first update.
    label_names: Box<[String]>,
    vec: NamedVec,
}

/// All metrics of the process.
pub struct Registry {
    prometheus: prometheus::Registry,
    /// The proxy's families updated by name.
    named: RwLock<HashMap<String, Named, foldhash::fast::RandomState>>,
    filters: Arc<filters::FilterMetrics>,
    /// The request path's families ([`http`]).
    pub http: http::HttpMetrics,
    /// Filter calls per filter and phase ([`calls`]).
    pub calls: calls::CallMetrics,
    /// Scrape-time values set by the admin API before each render.
    pub scraped: scrape::ScrapedGauges,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Default for Registry {
    fn default() -> Self {
        let prometheus = prometheus::Registry::new();
        let filters = Arc::new(filters::FilterMetrics::default());
        let http = http::HttpMetrics::new();
        let calls = calls::CallMetrics::new();
        let scraped = scrape::ScrapedGauges::new();
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(filters::Exported(filters.clone())),
            Box::new(http.clone()),
            Box::new(calls.clone()),
            Box::new(scraped.clone()),
            Box::new(scrape::log_lines_dropped()),
            Box::new(scrape::build_info()),
        ];
        for c in collectors {
            prometheus
                .register(c)
                .expect("the proxy's families have distinct names");
        }
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            let _ = prometheus.register(Box::new(process));
        }
        Registry {
            prometheus,
            named: RwLock::default(),
            filters,
            http,
            calls,
            scraped,
        }
    }
}

impl Registry {
    /// Sets the bounds on filters' metrics; series made before keep.
    pub fn set_limits(&self, limits: MetricLimits) {
        self.filters.set_limits(limits);
    }

    /// Adds a collector whose families are gathered on every scrape: how a
    /// subsystem exports atomics it keeps itself (its families' names must
    /// be its own).
    pub fn register(&self, collector: Box<dyn Collector>) -> prometheus::Result<()> {
        self.prometheus.register(collector)
    }

    /// Adds `value` to counter `name{labels}`.
    pub fn counter_add(&self, name: &str, labels: Labels, value: u64) -> Result<(), MetricError> {
        self.with_named(name, Kind::Counter, &labels, |vec, values| {
            if let NamedVec::Counter(v) = vec {
                v.with_label_values(values).inc_by(value);
            }
        })
    }

    /// Sets gauge `name{labels}` to `value`.
    pub fn gauge_set(&self, name: &str, labels: Labels, value: f64) -> Result<(), MetricError> {
        self.with_named(name, Kind::Gauge, &labels, |vec, values| {
            if let NamedVec::Gauge(v) = vec {
                v.with_label_values(values).set(value);
            }
        })
    }

    /// Adds `delta` to gauge `name{labels}`.
    pub fn gauge_add(&self, name: &str, labels: Labels, delta: f64) -> Result<(), MetricError> {
        self.with_named(name, Kind::Gauge, &labels, |vec, values| {
            if let NamedVec::Gauge(v) = vec {
                v.with_label_values(values).add(delta);
            }
        })
    }

    /// Records `value` in histogram `name{labels}`.
    pub fn histogram_observe(
        &self,
        name: &str,
        labels: Labels,
        value: f64,
    ) -> Result<(), MetricError> {
        self.with_named(name, Kind::Histogram, &labels, |vec, values| {
            if let NamedVec::Histogram(v) = vec {
                v.with_label_values(values).observe(value);
            }
        })
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
        self.filters
            .update(filter, name, Kind::Counter, labels, |s| {
                s.counter_add(value)
            })
    }

    /// Filter `filter` sets its gauge `name{labels}` to `value`.
    pub fn filter_gauge_set(
        &self,
        filter: &Arc<str>,
        name: &str,
        labels: Labels,
        value: f64,
    ) -> Result<(), MetricError> {
        self.filters
            .update(filter, name, Kind::Gauge, labels, |s| s.gauge_set(value))
    }

    /// Filter `filter` adds `delta` to its gauge `name{labels}`.
    pub fn filter_gauge_add(
        &self,
        filter: &Arc<str>,
        name: &str,
        labels: Labels,
        delta: f64,
    ) -> Result<(), MetricError> {
        self.filters
            .update(filter, name, Kind::Gauge, labels, |s| s.gauge_add(delta))
    }

    /// Filter `filter` records `value` in its histogram `name{labels}`.
    pub fn filter_histogram_observe(
        &self,
        filter: &Arc<str>,
        name: &str,
        labels: Labels,
        value: f64,
    ) -> Result<(), MetricError> {
        self.filters
            .update(filter, name, Kind::Histogram, labels, |s| s.observe(value))
    }

    /// The current value of one of the proxy's counter series updated by
    /// name, if it exists (labels in any order).
    pub fn counter_value(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        if name == filters::DROPPED_TOTAL
            && let [("filter", filter)] = labels
        {
            return Some(self.filters.dropped(filter));
        }
        let named = self.named.read().unwrap();
        let NamedVec::Counter(vec) = &named.get(name)?.vec else {
            return None;
        };
        let families = vec.collect();
        families.iter().flat_map(|f| f.get_metric()).find_map(|m| {
            let have = m.get_label();
            let same = have.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| have.iter().any(|p| p.name() == *k && p.value() == *v));
            same.then(|| m.get_counter().get_value() as u64)
        })
    }

    /// Every family, gathered from the registry.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.prometheus.gather()
    }

    fn with_named(
        &self,
        name: &str,
        kind: Kind,
        labels: &Labels,
        apply: impl FnOnce(&NamedVec, &[&str]),
    ) -> Result<(), MetricError> {
        let values: Vec<&str> = labels.iter().map(|(_, v)| v.as_str()).collect();
        if let Some(family) = self.named.read().unwrap().get(name) {
            check_kind(name, family.kind, kind)?;
            check_label_names(name, &family.label_names, labels)?;
            apply(&family.vec, &values);
            return Ok(());
        }
        check_names(name, labels)?;
        let mut named = self.named.write().unwrap();
        // Another thread may have made it since the shared look.
        if !named.contains_key(name) {
            let vec = self.new_named(name, kind, labels)?;
            let label_names = labels.iter().map(|(k, _)| k.clone()).collect();
            named.insert(
                name.to_string(),
                Named {
                    kind,
                    label_names,
                    vec,
                },
            );
        }
        let family = &named[name];
        check_kind(name, family.kind, kind)?;
        check_label_names(name, &family.label_names, labels)?;
        apply(&family.vec, &values);
        Ok(())
    }

    fn new_named(&self, name: &str, kind: Kind, labels: &Labels) -> Result<NamedVec, MetricError> {
        let help = help::of(name);
        let names: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        let invalid = |_| MetricError::InvalidName(name.to_string());
        let vec = match kind {
            Kind::Counter => NamedVec::Counter(
                IntCounterVec::new(Opts::new(name, help), &names).map_err(invalid)?,
            ),
            Kind::Gauge => {
                NamedVec::Gauge(GaugeVec::new(Opts::new(name, help), &names).map_err(invalid)?)
            }
            Kind::Histogram => NamedVec::Histogram(
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
                    &names,
                )
                .map_err(invalid)?,
            ),
        };
        let collector: Box<dyn Collector> = match &vec {
            NamedVec::Counter(v) => Box::new(v.clone()),
            NamedVec::Gauge(v) => Box::new(v.clone()),
            NamedVec::Histogram(v) => Box::new(v.clone()),
        };
        // A name one of the typed families has: refused as taken.
        self.prometheus
            .register(collector)
            .map_err(|_| MetricError::KindMismatch {
                name: name.to_string(),
                existing: "family of the proxy's",
                requested: kind.as_str(),
            })?;
        Ok(vec)
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

/// The labels' names are `expected`, in that order.
fn check_label_names(name: &str, expected: &[String], labels: &Labels) -> Result<(), MetricError> {
    if expected.len() == labels.len() && expected.iter().zip(labels).all(|(e, (k, _))| e == k) {
        return Ok(());
    }
    Err(MetricError::LabelNames {
        metric: name.to_string(),
        expected: expected.join(","),
        got: labels
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(","),
    })
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

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}
