//! The registry in the Prometheus text exposition format.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{BUCKETS, FILTER_PREFIX, Kind, Labels, Registry, Series};

impl Registry {
    /// The whole registry in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        // Under the locks: pointers copied out, nothing formatted.
        let mut families: Vec<(String, Kind, Vec<Row>)> = Vec::new();
        for (name, family) in self.families.read().unwrap().iter() {
            let rows = family
                .series
                .iter()
                .map(|(l, s)| (None, l.clone(), s.clone()))
                .collect();
            families.push((name.clone(), family.kind, rows));
        }
        for (name, family) in self.filter_families.read().unwrap().iter() {
            let rows = family
                .by_filter
                .iter()
                .flat_map(|(f, series)| {
                    series
                        .iter()
                        .map(|(l, s)| (Some(f.clone()), l.clone(), s.clone()))
                })
                .collect();
            families.push((format!("{FILTER_PREFIX}{name}"), family.kind, rows));
        }
        let mut out = String::new();
        for (name, kind, mut rows) in families {
            let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
            rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            for (filter, labels, series) in rows {
                render_series(&mut out, &name, filter.as_deref(), &labels, &series);
            }
        }
        let dropped = crate::logging::lines_dropped();
        let _ = writeln!(
            out,
            "# TYPE weft_log_lines_dropped_total counter\nweft_log_lines_dropped_total {dropped}"
        );
        out
    }
}

/// One series to render: the filter that made it, if any, its labels and
/// values.
type Row = (Option<Arc<str>>, Arc<Labels>, Arc<Series>);

fn render_series(out: &mut String, name: &str, filter: Option<&str>, labels: &Labels, s: &Series) {
    let fmt = |le: Option<&str>| fmt_labels(filter, labels, le);
    match s {
        Series::Counter(v) => {
            let _ = writeln!(out, "{name}{} {}", fmt(None), v.load(Ordering::Relaxed));
        }
        Series::Gauge(v) => {
            let _ = writeln!(out, "{name}{} {}", fmt(None), v.get());
        }
        Series::Histogram(h) => {
            let buckets = h.buckets.each_ref().map(|n| n.load(Ordering::Relaxed));
            let sum = h.sum.get();
            // Concurrent observations may show in a bucket before the
            // count: the count never shows fewer than a bucket.
            let count = h
                .count
                .load(Ordering::Relaxed)
                .max(buckets[BUCKETS.len() - 1]);
            for (bound, n) in BUCKETS.iter().zip(buckets) {
                let le = bound.to_string();
                let _ = writeln!(out, "{name}_bucket{} {n}", fmt(Some(&le)));
            }
            let _ = writeln!(out, "{name}_bucket{} {count}", fmt(Some("+Inf")));
            let plain = fmt(None);
            let _ = writeln!(out, "{name}_sum{plain} {sum}");
            let _ = writeln!(out, "{name}_count{plain} {count}");
        }
    }
}

fn fmt_labels(filter: Option<&str>, labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(filter) = filter {
        parts.push(format!("filter=\"{}\"", escape(filter)));
    }
    parts.extend(labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))));
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        return String::new();
    }
    format!("{{{}}}", parts.join(","))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
