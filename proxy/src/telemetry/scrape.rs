//! Values read when the registry is scraped rather than kept in its own
//! series.
//!
//! A subsystem that keeps its own atomics (per-worker pools, per-endpoint
//! counters, the log writer) exports them with a
//! [`prometheus::core::Collector`]: `desc()` returns the [`Desc`] of each of
//! its families (names, HELP, label names: checked once, when it is
//! registered), `collect()` reads the atomics and builds the
//! [`MetricFamily`]s. [`ReadCounter`] is the smallest such collector.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Metric, MetricFamily, MetricType};
use prometheus::{IntGauge, IntGaugeVec, Opts};

use crate::filter::module::CONTRACT_VERSION;

/// The wasmtime release the proxy is built with (pinned in the workspace's
/// `Cargo.toml`; a unit test checks the two agree).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// A counter whose value a function reads at scrape time.
pub struct ReadCounter {
    desc: Desc,
    read: fn() -> u64,
}

impl ReadCounter {
    /// Counter `name` (no labels), read from `read`.
    pub fn new(name: &str, help: &str, read: fn() -> u64) -> Self {
        let desc =
            Desc::new(name.into(), help.into(), vec![], Default::default()).expect("valid family");
        ReadCounter { desc, read }
    }
}

impl Collector for ReadCounter {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut counter = Counter::default();
        counter.set_value((self.read)() as f64);
        let mut metric = Metric::default();
        metric.set_counter(counter);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::COUNTER);
        family.set_metric(vec![metric]);
        vec![family]
    }
}

/// `weft_log_lines_dropped_total`, read from the log writer.
pub fn log_lines_dropped() -> ReadCounter {
    ReadCounter::new(
        "weft_log_lines_dropped_total",
        "Log lines dropped because stderr did not keep up.",
        crate::logging::lines_dropped,
    )
}

/// `weft_build_info{version,contract_versions,wasmtime_version} 1`.
pub fn build_info() -> IntGauge {
    let opts = Opts::new(
        "weft_build_info",
        "The proxy's version, the filter contract versions it serves and its wasmtime release; always 1.",
    )
    .const_label("version", env!("CARGO_PKG_VERSION"))
    .const_label("contract_versions", CONTRACT_VERSION)
    .const_label("wasmtime_version", WASMTIME_VERSION);
    let info = IntGauge::with_opts(opts).expect("valid family");
    info.set(1);
    info
}

/// Gauges the admin API sets from the serving snapshot before each scrape.
#[derive(Clone)]
pub struct ScrapedGauges {
    /// `weft_snapshot_version`.
    pub snapshot_version: IntGauge,
    /// `weft_filter_instances{filter}`.
    pub filter_instances: IntGaugeVec,
}

impl ScrapedGauges {
    pub(super) fn new() -> Self {
        ScrapedGauges {
            snapshot_version: IntGauge::new(
                "weft_snapshot_version",
                "Version of the serving snapshot (1 for the first of the process, one more per swap; under a control plane, the group's version).",
            )
            .expect("valid family"),
            filter_instances: IntGaugeVec::new(
                Opts::new(
                    "weft_filter_instances",
                    "Filter instances alive (held by requests or idle) in the serving snapshot, by filter.",
                ),
                &["filter"],
            )
            .expect("valid family"),
        }
    }
}

impl Collector for ScrapedGauges {
    fn desc(&self) -> Vec<&Desc> {
        let mut all = self.snapshot_version.desc();
        all.extend(self.filter_instances.desc());
        all
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut all = self.snapshot_version.collect();
        all.extend(self.filter_instances.collect());
        all
    }
}
