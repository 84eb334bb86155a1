//! The proxy's metrics registry: counters, gauges and histograms with labels,
//! rendered in the Prometheus text format. Filters write to it through the
//! host metrics API (names prefixed `weft_filter_`); the proxy records its
//! own `weft_*` metrics here too.
//!
//! Every worker updates it on every request, so an update of a series that
//! exists takes the lock shared and changes the series' atomics: workers do
//! not wait on each other. Only a new series takes the lock exclusively.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

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

#[derive(Debug)]
struct Family {
    kind: Kind,
    /// By labels, hashed with a per-process random seed (foldhash: a
    /// fraction of SipHash's cost on a handful of short strings).
    series: HashMap<Labels, Series, foldhash::fast::RandomState>,
}

/// All metrics of the process.
#[derive(Debug, Default)]
pub struct Registry {
    families: RwLock<BTreeMap<String, Family>>,
}

impl Registry {
    /// Adds `value` to counter `name{labels}`.
    pub fn counter_add(&self, name: &str, labels: Labels, value: u64) -> Result<(), MetricError> {
        self.update(name, Kind::Counter, labels, |s| {
            if let Series::Counter(v) = s {
                v.fetch_add(value, Ordering::Relaxed);
            }
        })
    }

    /// Sets gauge `name{labels}` to `value`.
    pub fn gauge_set(&self, name: &str, labels: Labels, value: f64) -> Result<(), MetricError> {
        self.update(name, Kind::Gauge, labels, |s| {
            if let Series::Gauge(v) = s {
                v.set(value);
            }
        })
    }

    /// Adds `delta` to gauge `name{labels}`.
    pub fn gauge_add(&self, name: &str, labels: Labels, delta: f64) -> Result<(), MetricError> {
        self.update(name, Kind::Gauge, labels, |s| {
            if let Series::Gauge(v) = s {
                v.add(delta);
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
        self.update(name, Kind::Histogram, labels, |s| {
            if let Series::Histogram(h) = s {
                for (bound, n) in BUCKETS.iter().zip(&h.buckets) {
                    if value <= *bound {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }
                h.sum.add(value);
                h.count.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    /// The current value of a counter series, if it exists.
    pub fn counter_value(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let families = self.families.read().unwrap();
        let family = families.get(name)?;
        family.series.iter().find_map(|(l, s)| match s {
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
        if !valid_name(name) {
            return Err(MetricError::InvalidName(name.to_string()));
        }
        if let Some((bad, _)) = labels
            .iter()
            .find(|(k, _)| !valid_name(k) || k.contains(':'))
        {
            return Err(MetricError::InvalidName(bad.clone()));
        }
        let mut families = self.families.write().unwrap();
        let family = families.entry(name.to_string()).or_insert(Family {
            kind,
            series: HashMap::default(),
        });
        if family.kind != kind {
            return Err(MetricError::KindMismatch {
                name: name.to_string(),
                existing: family.kind.as_str(),
                requested: kind.as_str(),
            });
        }
        // Another thread may have made the series since the shared look.
        let series = family.series.entry(labels).or_insert_with(|| match kind {
            Kind::Counter => Series::Counter(AtomicU64::new(0)),
            Kind::Gauge => Series::Gauge(AtomicF64::default()),
            Kind::Histogram => Series::Histogram(Box::default()),
        });
        apply(series);
        Ok(())
    }

    /// The whole registry in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let families = self.families.read().unwrap();
        let mut out = String::new();
        for (name, family) in families.iter() {
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
            let mut series: Vec<_> = family.series.iter().collect();
            series.sort_by(|a, b| a.0.cmp(b.0));
            for (labels, s) in series {
                match s {
                    Series::Counter(v) => {
                        let v = v.load(Ordering::Relaxed);
                        let _ = writeln!(out, "{name}{} {v}", fmt_labels(labels, None));
                    }
                    Series::Gauge(v) => {
                        let _ = writeln!(out, "{name}{} {}", fmt_labels(labels, None), v.get());
                    }
                    Series::Histogram(h) => {
                        let buckets = h.buckets.each_ref().map(|n| n.load(Ordering::Relaxed));
                        let sum = h.sum.get();
                        // Concurrent observations may show in a bucket before
                        // the count: the count never shows fewer than a bucket.
                        let count = h
                            .count
                            .load(Ordering::Relaxed)
                            .max(buckets[BUCKETS.len() - 1]);
                        for (bound, n) in BUCKETS.iter().zip(buckets) {
                            let le = bound.to_string();
                            let _ =
                                writeln!(out, "{name}_bucket{} {n}", fmt_labels(labels, Some(&le)));
                        }
                        let inf = fmt_labels(labels, Some("+Inf"));
                        let _ = writeln!(out, "{name}_bucket{inf} {count}");
                        let plain = fmt_labels(labels, None);
                        let _ = writeln!(out, "{name}_sum{plain} {sum}");
                        let _ = writeln!(out, "{name}_count{plain} {count}");
                    }
                }
            }
        }
        out
    }
}

fn same_labels(have: &Labels, want: &[(&str, &str)]) -> bool {
    have.len() == want.len()
        && have
            .iter()
            .zip(want)
            .all(|((k, v), (wk, wv))| k == wk && v == wv)
}

fn fmt_labels(labels: &Labels, le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let r = Registry::default();
        let l = vec![("route".to_string(), "api".to_string())];
        r.counter_add("weft_requests_total", l.clone(), 2).unwrap();
        r.counter_add("weft_requests_total", l.clone(), 3).unwrap();
        r.histogram_observe("weft_latency_seconds", l.clone(), 0.003)
            .unwrap();
        let text = r.render();
        assert!(
            text.contains("weft_requests_total{route=\"api\"} 5"),
            "{text}"
        );
        assert!(text.contains("weft_latency_seconds_bucket{route=\"api\",le=\"0.0025\"} 0"));
        assert!(text.contains("weft_latency_seconds_bucket{route=\"api\",le=\"0.005\"} 1"));
        assert!(text.contains("weft_latency_seconds_count{route=\"api\"} 1"));
        assert_eq!(
            r.counter_value("weft_requests_total", &[("route", "api")]),
            Some(5)
        );
    }

    #[test]
    fn updates_from_several_threads_all_count() {
        let r = Registry::default();
        let labels = || vec![("route".to_string(), "api".to_string())];
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for i in 0..10_000 {
                        r.counter_add("weft_requests_total", labels(), 1).unwrap();
                        r.gauge_add("weft_in_flight", labels(), 1.0).unwrap();
                        r.histogram_observe(
                            "weft_latency_seconds",
                            labels(),
                            (i % 2) as f64 * 0.003_906_25,
                        )
                        .unwrap();
                    }
                });
            }
        });
        let text = r.render();
        assert!(
            text.contains("weft_requests_total{route=\"api\"} 40000\n"),
            "{text}"
        );
        assert!(
            text.contains("weft_in_flight{route=\"api\"} 40000\n"),
            "{text}"
        );
        assert!(
            text.contains("weft_latency_seconds_bucket{route=\"api\",le=\"0.001\"} 20000\n"),
            "{text}"
        );
        assert!(
            text.contains("weft_latency_seconds_bucket{route=\"api\",le=\"0.005\"} 40000\n"),
            "{text}"
        );
        assert!(
            text.contains("weft_latency_seconds_count{route=\"api\"} 40000\n"),
            "{text}"
        );
        assert!(
            text.contains("weft_latency_seconds_sum{route=\"api\"} 78.125\n"),
            "{text}"
        );
    }

    #[test]
    fn refuses_bad_names_and_kind_changes() {
        let r = Registry::default();
        assert_eq!(
            r.counter_add("bad name", vec![], 1),
            Err(MetricError::InvalidName("bad name".into()))
        );
        r.counter_add("hits", vec![], 1).unwrap();
        assert!(matches!(
            r.gauge_set("hits", vec![], 1.0),
            Err(MetricError::KindMismatch { .. })
        ));
    }
}
