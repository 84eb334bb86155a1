//! Metrics as the proxy's registry takes them from a filter: checked names
//! and labels, one kind per name; kept by name and labels for a test to
//! read.

use std::collections::BTreeMap;

/// A metric's kind; the first use of a name fixes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
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

/// One series' value.
#[derive(Debug, Clone)]
enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(Vec<f64>),
}

/// Labels sorted by name: one series whatever order a filter passes them.
type Labels = Vec<(String, String)>;

/// Every series a filter's instances made.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    kinds: BTreeMap<String, Kind>,
    series: BTreeMap<(String, Labels), Value>,
}

impl Metrics {
    /// Checks an update as the proxy does; panics (the proxy traps) when it
    /// would refuse it. Returns the series' key.
    fn check(&mut self, name: &str, labels: &[(&str, &str)], kind: Kind) -> (String, Labels) {
        if !valid_name(name) {
            panic!("invalid metric or label name {name:?}");
        }
        if let Some((bad, _)) = labels
            .iter()
            .find(|(k, _)| !valid_name(k) || k.contains(':'))
        {
            panic!("invalid metric or label name {bad:?}");
        }
        for (i, (label, _)) in labels.iter().enumerate() {
            if *label == "filter" || *label == "le" || label.starts_with("__") {
                panic!(
                    "metric {name:?}: label name {label:?} is reserved (filter, le and __* are the proxy's)"
                );
            }
            if labels[..i].iter().any(|(earlier, _)| earlier == label) {
                panic!("metric {name:?}: label name {label:?} is given twice");
            }
        }
        let existing = *self.kinds.entry(name.to_string()).or_insert(kind);
        if existing != kind {
            panic!(
                "metric {name:?} is a {}, not a {}",
                existing.as_str(),
                kind.as_str()
            );
        }
        (name.to_string(), sorted(labels))
    }

    pub(crate) fn counter_add(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let key = self.check(name, labels, Kind::Counter);
        if let Value::Counter(n) = self.series.entry(key).or_insert(Value::Counter(0)) {
            *n = n.saturating_add(value);
        }
    }

    pub(crate) fn gauge(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        f: impl FnOnce(f64) -> f64,
    ) {
        let key = self.check(name, labels, Kind::Gauge);
        if let Value::Gauge(n) = self.series.entry(key).or_insert(Value::Gauge(0.0)) {
            *n = f(*n);
        }
    }

    pub(crate) fn histogram_observe(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let key = self.check(name, labels, Kind::Histogram);
        if let Value::Histogram(v) = self
            .series
            .entry(key)
            .or_insert(Value::Histogram(Vec::new()))
        {
            v.push(value);
        }
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Value> {
        self.series.get(&(name.to_string(), sorted(labels)))
    }

    pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(name, labels) {
            Some(Value::Counter(n)) => *n,
            _ => 0,
        }
    }

    pub(crate) fn gauge_value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.get(name, labels) {
            Some(Value::Gauge(n)) => Some(*n),
            _ => None,
        }
    }

    pub(crate) fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.get(name, labels) {
            Some(Value::Histogram(v)) => v.clone(),
            _ => Vec::new(),
        }
    }
}

fn sorted(labels: &[(&str, &str)]) -> Labels {
    let mut labels: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    labels
}

/// A Prometheus metric or label name.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}
