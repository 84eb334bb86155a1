//! The proxy's metrics registry: counters, gauges and histograms with labels,
//! rendered in the Prometheus text format. Filters write to it through the
//! host metrics API (names prefixed `weft_filter_`); the proxy records its
//! own `weft_*` metrics here too.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::RwLock;

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
    Counter(u64),
    Gauge(f64),
    Histogram {
        buckets: [u64; BUCKETS.len()],
        sum: f64,
        count: u64,
    },
}

#[derive(Debug)]
struct Family {
    kind: Kind,
    series: HashMap<Labels, Series>,
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
                *v += value;
            }
        })
    }

    /// Sets gauge `name{labels}` to `value`.
    pub fn gauge_set(&self, name: &str, labels: Labels, value: f64) -> Result<(), MetricError> {
        self.update(name, Kind::Gauge, labels, |s| {
            if let Series::Gauge(v) = s {
                *v = value;
            }
        })
    }

    /// Adds `delta` to gauge `name{labels}`.
    pub fn gauge_add(&self, name: &str, labels: Labels, delta: f64) -> Result<(), MetricError> {
        self.update(name, Kind::Gauge, labels, |s| {
            if let Series::Gauge(v) = s {
                *v += delta;
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
            if let Series::Histogram {
                buckets,
                sum,
                count,
            } = s
            {
                for (bound, n) in BUCKETS.iter().zip(buckets.iter_mut()) {
                    if value <= *bound {
                        *n += 1;
                    }
                }
                *sum += value;
                *count += 1;
            }
        })
    }

    /// The current value of a counter series, if it exists.
    pub fn counter_value(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let families = self.families.read().unwrap();
        let family = families.get(name)?;
        family.series.iter().find_map(|(l, s)| match s {
            Series::Counter(v) if same_labels(l, labels) => Some(*v),
            _ => None,
        })
    }

    fn update(
        &self,
        name: &str,
        kind: Kind,
        labels: Labels,
        apply: impl FnOnce(&mut Series),
    ) -> Result<(), MetricError> {
        let mut families = self.families.write().unwrap();
        // The hot path: a series that exists was checked when it was made.
        if let Some(family) = families.get_mut(name)
            && family.kind == kind
            && let Some(series) = family.series.get_mut(&labels)
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
        let family = families.entry(name.to_string()).or_insert(Family {
            kind,
            series: HashMap::new(),
        });
        if family.kind != kind {
            return Err(MetricError::KindMismatch {
                name: name.to_string(),
                existing: family.kind.as_str(),
                requested: kind.as_str(),
            });
        }
        let series = family.series.entry(labels).or_insert_with(|| match kind {
            Kind::Counter => Series::Counter(0),
            Kind::Gauge => Series::Gauge(0.0),
            Kind::Histogram => Series::Histogram {
                buckets: [0; BUCKETS.len()],
                sum: 0.0,
                count: 0,
            },
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
                        let _ = writeln!(out, "{name}{} {v}", fmt_labels(labels, None));
                    }
                    Series::Gauge(v) => {
                        let _ = writeln!(out, "{name}{} {v}", fmt_labels(labels, None));
                    }
                    Series::Histogram {
                        buckets,
                        sum,
                        count,
                    } => {
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
