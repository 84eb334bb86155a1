//! Filters' metrics: their own namespace (`weft_user_*`, with a `filter`
//! label the host sets), so a filter can neither forge nor disable the
//! proxy's series; reserved label names refused; series per family capped.

use http::Request;
use http_body_util::Full;
use weft_test_harness::{Upstream, Weft, client, get, send};

use crate::{config, start, wasm};

async fn metrics(weft: &Weft) -> String {
    let r = get(&format!("{}/metrics", weft.url("admin"))).await;
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_cannot_forge_or_disable_the_proxys_failure_counts() {
    let up = Upstream::start().await;
    let filters = format!(
        "  forger: {{ path: {misbehave} }}\n  trapper: {{ path: {misbehave} }}",
        misbehave = wasm("misbehave_filter")
    );
    // `forger` makes `failures_total` a gauge in init, then adds to
    // `failures_total{filter="jwt-auth",kind="trap"}` per request.
    let routes = "      - { name: forge, match: { path_prefix: /forge }, filters: [{ filter: forger, config: { metrics: forge } }], cluster: backend }
      - { name: trap, filters: [{ filter: trapper, config: { do: trap } }], cluster: backend }";
    let weft = start(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(&filters, routes, up.addr)
    ));
    for _ in 0..3 {
        assert_eq!(
            get(&format!("{}/trap", weft.url("public"))).await.status,
            500
        );
    }
    // The reserved label makes the call trap: a failure of the forger's own.
    assert_eq!(
        get(&format!("{}/forge", weft.url("public"))).await.status,
        500
    );
    let text = metrics(&weft).await;
    assert!(
        text.contains("# TYPE weft_filter_failures_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("weft_filter_failures_total{filter=\"trapper\",kind=\"trap\"} 3\n"),
        "real failures still counted:\n{text}"
    );
    assert!(
        text.contains("weft_filter_failures_total{filter=\"forger\",kind=\"trap\"} 1\n"),
        "{text}"
    );
    assert!(
        !text.contains("filter=\"jwt-auth\""),
        "a forged series:\n{text}"
    );
    assert!(
        text.contains(
            "# TYPE weft_user_failures_total gauge\nweft_user_failures_total{filter=\"forger\"} 0\n"
        ),
        "the filter's gauge is its own:\n{text}"
    );
    tokio::task::block_in_place(|| weft.wait_for_log("is reserved", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filters_series_are_capped_and_what_is_dropped_is_counted() {
    let up = Upstream::start().await;
    let filters = format!("  labels: {{ path: {} }}", wasm("misbehave_filter"));
    let routes = "      - { name: all, filters: [{ filter: labels, config: { metrics: series_per_request } }], cluster: backend }";
    let weft = start(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nmetrics: {{ max_series_per_family: 5 }}\n{}",
        config(&filters, routes, up.addr)
    ));
    let client = client(false);
    for i in 0..8 {
        let req = Request::get(format!("{}/x", weft.url("public")))
            .header("x-series", i.to_string())
            .body(Full::default())
            .unwrap();
        assert_eq!(send(&client, req).await.status, 200);
    }
    let text = metrics(&weft).await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("weft_user_series_total{"))
        .collect();
    assert_eq!(series.len(), 5, "{text}");
    assert!(
        series.contains(&"weft_user_series_total{filter=\"labels\",series=\"0\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("weft_filter_metric_updates_dropped_total{filter=\"labels\"} 3\n"),
        "{text}"
    );
}

#[test]
fn limits_out_of_range_are_refused_with_their_paths() {
    let filters = format!("  add-header: {{ path: {} }}", wasm("add_header"));
    let routes = "      - { name: all, cluster: backend }";
    let yaml = format!(
        "log: {{ max_line_bytes: 10 }}\nmetrics: {{ max_series_per_family: 0, max_cardinality: 5 }}\n{}",
        config(&filters, routes, "127.0.0.1:1".parse().unwrap())
    );
    let (ok, out) = weft_test_harness::process::validate(crate::bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("metrics.max_cardinality: unknown field"),
        "{out}"
    );
    let yaml = yaml.replace(", max_cardinality: 5", "");
    let (ok, out) = weft_test_harness::process::validate(crate::bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("log.max_line_bytes: must be at least 256"),
        "{out}"
    );
    assert!(
        out.contains("metrics.max_series_per_family: must be at least 1"),
        "{out}"
    );
}
