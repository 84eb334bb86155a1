//! The registry as the crate's text encoder writes it, or converted to
//! OpenMetrics 1.0 text when the scraper asks for it (the crate has no
//! OpenMetrics encoder).

use prometheus::{Encoder, TextEncoder};

use super::Registry;

/// Content type of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format a scraper's `Accept` header asks for: OpenMetrics when it
    /// names `application/openmetrics-text` (with a quality above 0), else
    /// the Prometheus text format.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let wants = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default();
                let refused = parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// Its content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

impl Registry {
    /// The whole registry in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Fails only on a family the registry would not have made.
        if let Err(e) = TextEncoder::new().encode(&self.gather(), &mut out) {
            tracing::error!("cannot encode the metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The whole registry in `format`.
    pub fn render_as(&self, format: Format) -> String {
        let text = self.render();
        match format {
            Format::Text => text,
            Format::OpenMetrics => to_openmetrics(&text),
        }
    }
}

/// Converts the text encoder's output to OpenMetrics 1.0: a counter's
/// family is named without `_total` (its samples keep, or get, the
/// suffix), quotes in HELP are escaped, and `# EOF` ends it.
pub fn to_openmetrics(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    // The counter family being written: its name in the text format and
    // in OpenMetrics.
    let mut counter: Option<(String, String)> = None;
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // The TYPE line follows its HELP line.
            let is_counter = lines
                .get(i + 1)
                .is_some_and(|next| *next == format!("# TYPE {name} counter"));
            out.push_str("# HELP ");
            out.push_str(if is_counter { family(name) } else { name });
            out.push(' ');
            out.push_str(&help.replace('"', "\\\""));
            out.push('\n');
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            if kind == "counter" {
                counter = Some((name.to_string(), family(name).to_string()));
                out.push_str(&format!("# TYPE {} counter\n", family(name)));
            } else {
                counter = None;
                out.push_str(line);
                out.push('\n');
            }
        } else if line.starts_with('#') || line.is_empty() {
            continue;
        } else {
            match &counter {
                Some((name, family)) if !name.ends_with("_total") => {
                    // `hits 3` → `hits_total 3`.
                    out.push_str(family);
                    out.push_str("_total");
                    out.push_str(&line[name.len()..]);
                }
                _ => out.push_str(line),
            }
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

/// A counter's OpenMetrics family name.
fn family(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}
