//! The upstream families of `/metrics`, read from the serving snapshot's
//! clusters when scraped. Their values are the endpoints' own counters (the
//! ones `GET /clusters` shows): nothing is added to the request path.

use std::sync::{Arc, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use super::Health;
use crate::proxy::Proxy;

/// The collector; register it once with [`crate::telemetry::Registry::register`].
pub struct UpstreamMetrics {
    proxy: Weak<Proxy>,
    descs: Vec<Desc>,
}

/// One scrape's families.
struct Families {
    requests: IntCounterVec,
    responses_5xx: IntCounterVec,
    connect_failures: IntCounterVec,
    timeouts: IntCounterVec,
    active: IntGaugeVec,
    healthy: IntGaugeVec,
    connections: IntGaugeVec,
    pending: IntGaugeVec,
    in_flight: IntGaugeVec,
}

const ENDPOINT: &[&str] = &["cluster", "endpoint"];
const CLUSTER: &[&str] = &["cluster"];

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("a valid family")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid family")
}

fn families() -> Families {
    Families {
        requests: counter(
            "weft_upstream_requests_total",
            "Requests sent to the endpoint.",
            ENDPOINT,
        ),
        responses_5xx: counter(
            "weft_upstream_responses_5xx_total",
            "5xx responses from the endpoint.",
            ENDPOINT,
        ),
        connect_failures: counter(
            "weft_upstream_connect_failures_total",
            "Connections to the endpoint that could not be opened.",
            ENDPOINT,
        ),
        timeouts: counter(
            "weft_upstream_timeouts_total",
            "Requests to the endpoint without response headers within the route's timeout.",
            ENDPOINT,
        ),
        active: gauge(
            "weft_upstream_active_requests",
            "Requests to the endpoint in flight (until their response body ends).",
            ENDPOINT,
        ),
        healthy: gauge(
            "weft_upstream_endpoint_healthy",
            "1 when the endpoint may be picked, 0 when health checks failed it or outlier detection ejected it.",
            ENDPOINT,
        ),
        connections: gauge(
            "weft_upstream_cluster_connections",
            "Connections open to the cluster's endpoints (circuit_breakers.max_connections).",
            CLUSTER,
        ),
        pending: gauge(
            "weft_upstream_cluster_pending_requests",
            "Requests waiting for a connection (circuit_breakers.max_pending_requests).",
            CLUSTER,
        ),
        in_flight: gauge(
            "weft_upstream_cluster_requests",
            "Requests in flight to the cluster (circuit_breakers.max_requests).",
            CLUSTER,
        ),
    }
}

impl Families {
    fn all(&self) -> [&dyn Collector; 9] {
        [
            &self.requests,
            &self.responses_5xx,
            &self.connect_failures,
            &self.timeouts,
            &self.active,
            &self.healthy,
            &self.connections,
            &self.pending,
            &self.in_flight,
        ]
    }
}

impl UpstreamMetrics {
    /// Reads `proxy`'s serving snapshot at each scrape.
    pub fn new(proxy: &Arc<Proxy>) -> Self {
        let descs = families()
            .all()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        Self {
            proxy: Arc::downgrade(proxy),
            descs,
        }
    }
}

impl Collector for UpstreamMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(proxy) = self.proxy.upgrade() else {
            return Vec::new();
        };
        let snapshot = proxy.snapshot.load();
        let f = families();
        for (name, cluster) in &snapshot.clusters {
            let (connections, pending, in_flight) = cluster.load();
            f.connections
                .with_label_values(&[name])
                .set(i64::from(connections));
            f.pending.with_label_values(&[name]).set(i64::from(pending));
            f.in_flight
                .with_label_values(&[name])
                .set(i64::from(in_flight));
            for (i, e) in cluster.endpoints().iter().enumerate() {
                let labels = [name.as_str(), e.authority.as_str()];
                let (requests, responses_5xx, connect_failures) = e.state.totals();
                f.requests.with_label_values(&labels).inc_by(requests);
                f.responses_5xx
                    .with_label_values(&labels)
                    .inc_by(responses_5xx);
                f.connect_failures
                    .with_label_values(&labels)
                    .inc_by(connect_failures);
                f.timeouts
                    .with_label_values(&labels)
                    .inc_by(e.state.timeouts());
                f.active
                    .with_label_values(&labels)
                    .set(i64::from(e.state.active()));
                let usable = e.state.health() != Health::Unhealthy && !cluster.ejected(i);
                f.healthy.with_label_values(&labels).set(i64::from(usable));
            }
        }
        f.all().iter().flat_map(|c| c.collect()).collect()
    }
}
