//! Filters' metrics: `weft_user_<name>{filter="<name>",…}`, each filter's
//! series apart, in the crate's metric types, exported by a collector of
//! their own (the `filter` label first, the filter's labels in its order).
//!
//! An update of an existing series takes the lock shared and changes the
//! series' atomics; only a new series takes it exclusively, and only then
//! are names, label names and limits checked.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use prometheus::core::{Collector, Desc, Metric as _};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};

use super::{BUCKETS, FILTER_PREFIX, Kind, Labels, MetricError, MetricLimits};

/// The proxy's counter of filter metric updates it dropped, by filter.
pub const DROPPED_TOTAL: &str = "weft_filter_metric_updates_dropped_total";

/// One series of a filter.
pub enum Series {
    Counter(IntCounter),
    Gauge(Gauge),
    Histogram(Histogram),
}

impl Series {
    fn new(kind: Kind, name: &str) -> Self {
        let name = format!("{FILTER_PREFIX}{name}");
        let help = "a filter's metric";
        match kind {
            Kind::Counter => Series::Counter(IntCounter::new(name, help).expect("checked name")),
            Kind::Gauge => Series::Gauge(Gauge::new(name, help).expect("checked name")),
            Kind::Histogram => Series::Histogram(
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()))
                    .expect("checked name"),
            ),
        }
    }

    pub fn counter_add(&self, value: u64) {
        if let Series::Counter(c) = self {
            c.inc_by(value);
        }
    }

    pub fn gauge_set(&self, value: f64) {
        if let Series::Gauge(g) = self {
            g.set(value);
        }
    }

    pub fn gauge_add(&self, delta: f64) {
        if let Series::Gauge(g) = self {
            g.add(delta);
        }
    }

    pub fn observe(&self, value: f64) {
        if let Series::Histogram(h) = self {
            h.observe(value);
        }
    }

    fn metric(&self) -> Metric {
        match self {
            Series::Counter(c) => c.metric(),
            Series::Gauge(g) => g.metric(),
            Series::Histogram(h) => h.metric(),
        }
    }
}

/// Series by labels, hashed with a per-process random seed.
type SeriesMap = HashMap<Arc<Labels>, Arc<Series>, foldhash::fast::RandomState>;

/// One filter's series of one family: their label names are those of the
/// first.
struct FilterSeries {
    label_names: Box<[String]>,
    series: SeriesMap,
}

/// A family: each filter's series apart, by filter name.
struct FilterFamily {
    kind: Kind,
    by_filter: HashMap<Arc<str>, FilterSeries, foldhash::fast::RandomState>,
}

pub struct FilterMetrics {
    families: RwLock<BTreeMap<String, FilterFamily>>,
    dropped: IntCounterVec,
    max_series_per_family: AtomicUsize,
    max_families_per_filter: AtomicUsize,
    max_label_value_bytes: AtomicUsize,
}

impl Default for FilterMetrics {
    fn default() -> Self {
        let limits = MetricLimits::default();
        FilterMetrics {
            families: RwLock::default(),
            dropped: IntCounterVec::new(
                Opts::new(DROPPED_TOTAL, super::help::of(DROPPED_TOTAL)),
                &["filter"],
            )
            .expect("valid family"),
            max_series_per_family: AtomicUsize::new(limits.max_series_per_family),
            max_families_per_filter: AtomicUsize::new(limits.max_families_per_filter),
            max_label_value_bytes: AtomicUsize::new(limits.max_label_value_bytes),
        }
    }
}

impl FilterMetrics {
    pub fn set_limits(&self, limits: MetricLimits) {
        self.max_series_per_family
            .store(limits.max_series_per_family, Ordering::Relaxed);
        self.max_families_per_filter
            .store(limits.max_families_per_filter, Ordering::Relaxed);
        self.max_label_value_bytes
            .store(limits.max_label_value_bytes, Ordering::Relaxed);
    }

    /// Updates drops counted for `filter`.
    pub fn dropped(&self, filter: &str) -> u64 {
        self.dropped.with_label_values(&[filter]).get()
    }

    pub fn update(
        &self,
        filter: &Arc<str>,
        name: &str,
        kind: Kind,
        labels: Labels,
        apply: impl FnOnce(&Series),
    ) -> Result<(), MetricError> {
        // The hot path, shared: a series that exists was checked when it
        // was made.
        if let Some(family) = self.families.read().unwrap().get(name)
            && family.kind == kind
            && let Some(mine) = family.by_filter.get(&**filter)
            && let Some(series) = mine.series.get(&labels)
        {
            apply(series);
            return Ok(());
        }
        super::check_names(name, &labels)?;
        check_filter_labels(name, &labels)?;
        let max_value = self.max_label_value_bytes.load(Ordering::Relaxed);
        if labels.iter().any(|(_, v)| v.len() > max_value) {
            self.count_dropped(filter);
            return Ok(());
        }
        let max_series = self.max_series_per_family.load(Ordering::Relaxed);
        let mut families = self.families.write().unwrap();
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
        super::check_kind(name, family.kind, kind)?;
        let mine = family
            .by_filter
            .entry(filter.clone())
            .or_insert_with(|| FilterSeries {
                label_names: labels.iter().map(|(k, _)| k.clone()).collect(),
                series: HashMap::default(),
            });
        super::check_label_names(name, &mine.label_names, &labels)?;
        if let Some(found) = mine.series.get(&labels) {
            apply(found);
        } else if mine.series.len() < max_series {
            let made = Arc::new(Series::new(kind, name));
            apply(&made);
            mine.series.insert(Arc::new(labels), made);
        } else {
            drop(families);
            self.count_dropped(filter);
        }
        Ok(())
    }

    fn count_dropped(&self, filter: &str) {
        self.dropped.with_label_values(&[filter]).inc();
    }
}

/// Filters' families are made at run time, so this collector declares no
/// [`Desc`] (the registry checks none); their names all start with
/// [`FILTER_PREFIX`], which no other family does.
pub struct Exported(pub Arc<FilterMetrics>);

impl Collector for Exported {
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

impl FilterMetrics {
    fn collect(&self) -> Vec<MetricFamily> {
        // Under the lock: pointers copied out, nothing read.
        type Row = (Arc<str>, Arc<Labels>, Arc<Series>);
        let mut copied: Vec<(String, Kind, Vec<Row>)> = Vec::new();
        for (name, family) in self.families.read().unwrap().iter() {
            let rows = family
                .by_filter
                .iter()
                .flat_map(|(f, mine)| {
                    mine.series
                        .iter()
                        .map(|(l, s)| (f.clone(), l.clone(), s.clone()))
                })
                .collect();
            copied.push((name.clone(), family.kind, rows));
        }
        let mut out = self.dropped.collect();
        for (name, kind, rows) in copied {
            let mut family = MetricFamily::default();
            family.set_name(format!("{FILTER_PREFIX}{name}"));
            family.set_help(format!(
                "Metric {name:?} of filters (the filter label names the filter)."
            ));
            family.set_field_type(match kind {
                Kind::Counter => MetricType::COUNTER,
                Kind::Gauge => MetricType::GAUGE,
                Kind::Histogram => MetricType::HISTOGRAM,
            });
            let metrics = rows
                .into_iter()
                .map(|(filter, labels, series)| {
                    let mut metric = series.metric();
                    let mut pairs = Vec::with_capacity(labels.len() + 1);
                    pairs.push(pair("filter", &filter));
                    pairs.extend(labels.iter().map(|(k, v)| pair(k, v)));
                    metric.set_label(pairs);
                    metric
                })
                .collect();
            family.set_metric(metrics);
            out.push(family);
        }
        out
    }
}

fn pair(name: &str, value: &str) -> LabelPair {
    let mut p = LabelPair::default();
    p.set_name(name.to_string());
    p.set_value(value.to_string());
    p
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
