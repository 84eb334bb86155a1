//! The admin API's reads: what the serving snapshot holds, as JSON.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::redact::redact;
use super::{AdminApi, error, json};
use crate::filter::ChainEntry;
use crate::filter::chain::PHASES;
use crate::http::ProxyBody;
use crate::upstream::Health;

/// `GET /ready`: 200 while serving, 503 once the traffic drain started.
pub fn ready(api: &AdminApi) -> Response<ProxyBody> {
    if api.traffic.drain.started() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the proxy is draining: it accepts no new connections",
        );
    }
    super::text(StatusCode::OK, "text/plain", "ready\n".into())
}

/// `GET /config`: the serving snapshot's config, its version and origin,
/// every filter config's secrets redacted.
pub fn config(api: &AdminApi) -> Response<ProxyBody> {
    let snapshot = api.proxy.snapshot.load();
    let mut config = match serde_json::to_value(&snapshot.config) {
        Ok(config) => config,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &format!("cannot show the config: {e}"),
            );
        }
    };
    for listener in config["listeners"].as_array_mut().into_iter().flatten() {
        for route in listener["routes"].as_array_mut().into_iter().flatten() {
            for entry in route["filters"].as_array_mut().into_iter().flatten() {
                redact(&mut entry["config"]);
            }
        }
    }
    json(
        StatusCode::OK,
        &json!({
            "version": snapshot.origin.version,
            "source": snapshot.origin.source,
            "built_at_unix_ms": snapshot.origin.built_at_unix_ms,
            "config": config,
        }),
    )
}

/// `GET /routes`: each listener's routes in match order, with their chains.
pub fn routes(api: &AdminApi) -> Response<ProxyBody> {
    let snapshot = api.proxy.snapshot.load();
    let listeners: Vec<Value> = snapshot
        .config
        .listeners
        .iter()
        .map(|l| {
            let routes: Vec<Value> = l
                .routes
                .iter()
                .map(|r| {
                    let chain: Vec<Value> = r
                        .filters
                        .iter()
                        .map(|e| json!({ "filter": e.filter, "on_error": e.on_error }))
                        .collect();
                    let mut route = json!({
                        "name": r.name,
                        "match": r.matcher,
                        "action": route_action(r),
                        "timeout_ms": r.timeout_ms,
                        "max_body_bytes": r.max_body_bytes,
                        "filters": chain,
                    });
                    // The action's own key, and the rewrite and mirror, as
                    // configured (absent when not).
                    let keys = [
                        ("cluster", serde_json::to_value(&r.cluster)),
                        ("clusters", serde_json::to_value(&r.clusters)),
                        ("redirect", serde_json::to_value(&r.redirect)),
                        ("direct_response", serde_json::to_value(&r.direct_response)),
                        ("rewrite", serde_json::to_value(&r.rewrite)),
                        ("mirror", serde_json::to_value(&r.mirror)),
                    ];
                    for (key, value) in keys {
                        if let Ok(value) = value
                            && !value.is_null()
                        {
                            route[key] = value;
                        }
                    }
                    route
                })
                .collect();
            json!({ "name": l.name, "listen": l.listen, "routes": routes })
        })
        .collect();
    json(
        StatusCode::OK,
        &json!({ "version": snapshot.origin.version, "listeners": listeners }),
    )
}

/// What a route does: `cluster`, `split`, `redirect` or `direct_response`.
fn route_action(r: &crate::config::RouteConfig) -> &'static str {
    if r.clusters.is_some() {
        "split"
    } else if r.redirect.is_some() {
        "redirect"
    } else if r.direct_response.is_some() {
        "direct_response"
    } else {
        "cluster"
    }
}

/// `GET /clusters`: each cluster's settings, circuit-breaker counts, and
/// endpoints with their health, load and totals.
pub fn clusters(api: &AdminApi) -> Response<ProxyBody> {
    let snapshot = api.proxy.snapshot.load();
    let clusters: Vec<Value> = snapshot
        .clusters
        .iter()
        .filter_map(|(name, cluster)| Some((name, cluster, snapshot.config.clusters.get(name)?)))
        .map(|(name, cluster, c)| {
            let endpoints: Vec<Value> = cluster
                .endpoints()
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let s = &e.state;
                    let health = if s.health() == Health::Unhealthy {
                        "unhealthy"
                    } else if cluster.ejected(i) {
                        "ejected"
                    } else {
                        "healthy"
                    };
                    let (requests, responses_5xx, connect_failures) = s.totals();
                    json!({
                        "address": e.authority.as_str(),
                        "weight": e.weight,
                        "health": health,
                        "checked": s.health() != Health::Unknown,
                        "since_unix_ms": s.since_unix_ms(),
                        "active_requests": s.active(),
                        "requests_total": requests,
                        "responses_5xx_total": responses_5xx,
                        "connect_failures_total": connect_failures,
                    })
                })
                .collect();
            let (connections, pending, requests) = cluster.load();
            json!({
                "name": name,
                "lb_policy": c.lb_policy,
                "endpoints": endpoints,
                "connect_timeout_ms": c.connect_timeout_ms,
                "max_connections_per_worker": c.max_connections_per_worker,
                "idle_timeout_ms": c.idle_timeout_ms,
                "health_check": c.health_check.is_some(),
                "outlier_detection": c.outlier_detection.is_some(),
                "circuit_breakers": {
                    "max_connections": c.circuit_breakers.max_connections,
                    "max_pending_requests": c.circuit_breakers.max_pending_requests,
                    "max_requests": c.circuit_breakers.max_requests,
                    "connections": connections,
                    "pending_requests": pending,
                    "requests": requests,
                },
            })
        })
        .collect();
    json(
        StatusCode::OK,
        &json!({ "version": snapshot.origin.version, "clusters": clusters }),
    )
}

/// The failure kinds `weft_filter_failures_total` counts.
const FAILURE_KINDS: &[&str] = &["trap", "deadline", "memory", "instantiate"];

/// `GET /filters`: each filter module: where it came from, its sha256 and
/// contract, the chain entries that run it, its limits, and its counts.
pub fn filters(api: &AdminApi) -> Response<ProxyBody> {
    let snapshot = api.proxy.snapshot.load();
    let metrics = &api.proxy.metrics;
    let filters: Vec<Value> = snapshot
        .config
        .filters
        .iter()
        .map(|(name, f)| {
            let mut sha256 = None;
            let mut kind = None;
            let mut entries = Vec::new();
            // Entries of one filter share their call series: one is read.
            let mut phases = None;
            for listener in &snapshot.listeners {
                for route in listener.routes.routes() {
                    for entry in route.chain.entries.iter().filter(|e| *e.name == **name) {
                        sha256.get_or_insert_with(|| entry.pool.sha256().to_string());
                        kind.get_or_insert_with(|| entry.pool.kind());
                        phases.get_or_insert_with(|| phase_calls(entry));
                        entries.push(json!({ "listener": &*listener.name, "route": &*route.name }));
                    }
                }
            }
            let count = |metric: &str, extra: Option<(&str, &str)>| {
                let mut labels = vec![("filter", name.as_str())];
                labels.extend(extra);
                metrics.counter_value(metric, &labels).unwrap_or(0)
            };
            let failures: serde_json::Map<String, Value> = FAILURE_KINDS
                .iter()
                .map(|kind| {
                    let n = count("weft_filter_failures_total", Some(("kind", kind)));
                    (kind.to_string(), json!(n))
                })
                .collect();
            json!({
                "name": name,
                "path": f.path,
                "sha256": sha256,
                "kind": kind.map(|(kind, _)| kind),
                "contract_version": kind.map(|(_, version)| version),
                "loaded_at_unix_ms": snapshot.origin.built_at_unix_ms,
                "chain_entries": entries,
                "deadline_ms": f.deadline_ms,
                "max_memory_mib": f.max_memory_mib,
                "max_instances": f.max_instances,
                "failures": failures,
                "overloaded": count("weft_filter_overloaded_total", None),
                "instances_created": count("weft_filter_instances_created_total", None),
                "phases": phases.unwrap_or_default(),
            })
        })
        .collect();
    json(
        StatusCode::OK,
        &json!({
            "version": snapshot.origin.version,
            "source": snapshot.origin.source,
            "filters": filters,
        }),
    )
}

/// Calls of each phase `entry` implements, with the median and 99th
/// percentile of their sampled times in microseconds.
fn phase_calls(entry: &ChainEntry) -> Vec<Value> {
    let us = |seconds: Option<f64>| seconds.map(|s| (s * 1e7).round() / 10.0);
    PHASES
        .iter()
        .filter_map(|&phase| {
            let (calls, p50, p99) = entry.call_summary(phase)?;
            Some(json!({
                "phase": phase.name(),
                "calls": calls,
                "p50_us": us(p50),
                "p99_us": us(p99),
            }))
        })
        .collect()
}
