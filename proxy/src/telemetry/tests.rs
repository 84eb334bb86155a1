//! The registry's unit tests.

use super::*;

#[test]
fn renders_counters_and_histograms() {
    let r = Registry::default();
    let l = vec![("route".to_string(), "api".to_string())];
    r.counter_add("weft_test_requests_total", l.clone(), 2)
        .unwrap();
    r.counter_add("weft_test_requests_total", l.clone(), 3)
        .unwrap();
    r.histogram_observe("weft_latency_seconds", l.clone(), 0.003)
        .unwrap();
    let text = r.render();
    assert!(
        text.contains("weft_test_requests_total{route=\"api\"} 5"),
        "{text}"
    );
    assert!(text.contains("weft_latency_seconds_bucket{route=\"api\",le=\"0.0025\"} 0"));
    assert!(text.contains("weft_latency_seconds_bucket{route=\"api\",le=\"0.005\"} 1"));
    assert!(text.contains("weft_latency_seconds_count{route=\"api\"} 1"));
    assert_eq!(
        r.counter_value("weft_test_requests_total", &[("route", "api")]),
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
                    r.counter_add("weft_test_requests_total", labels(), 1)
                        .unwrap();
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
        text.contains("weft_test_requests_total{route=\"api\"} 40000\n"),
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

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn filter_metrics_have_their_own_namespace_and_filter_label() {
    let r = Registry::default();
    let jwt: Arc<str> = "jwt-auth".into();
    let evil: Arc<str> = "evil".into();
    r.counter_add(
        "weft_filter_failures_total",
        labels(&[("filter", "jwt-auth"), ("kind", "trap")]),
        1,
    )
    .unwrap();
    // Same name as the proxy's family, other kind: the filter's own.
    r.filter_gauge_set(&evil, "weft_filter_failures_total", vec![], 0.0)
        .unwrap();
    r.filter_counter_add(&evil, "failures_total", labels(&[("kind", "trap")]), 7)
        .unwrap();
    r.filter_counter_add(&jwt, "failures_total", labels(&[("kind", "trap")]), 1)
        .unwrap();
    r.counter_add(
        "weft_filter_failures_total",
        labels(&[("filter", "jwt-auth"), ("kind", "trap")]),
        1,
    )
    .unwrap();
    let text = r.render();
    assert!(
        text.contains("weft_filter_failures_total{filter=\"jwt-auth\",kind=\"trap\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("weft_user_failures_total{filter=\"evil\",kind=\"trap\"} 7\n"),
        "{text}"
    );
    assert!(
        text.contains("weft_user_failures_total{filter=\"jwt-auth\",kind=\"trap\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE weft_user_weft_filter_failures_total gauge\nweft_user_weft_filter_failures_total{filter=\"evil\"} 0\n"),
        "{text}"
    );
}

#[test]
fn filters_cannot_use_reserved_or_repeated_label_names() {
    let r = Registry::default();
    let f: Arc<str> = "f".into();
    for reserved in ["filter", "le", "__name__"] {
        assert_eq!(
            r.filter_counter_add(&f, "hits", labels(&[("a", "1"), (reserved, "x")]), 1),
            Err(MetricError::ReservedLabel {
                metric: "hits".into(),
                label: reserved.into()
            })
        );
    }
    let err = r
        .filter_histogram_observe(&f, "seconds", labels(&[("a", "1"), ("a", "2")]), 1.0)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "metric \"seconds\": label name \"a\" is given twice"
    );
    assert!(!r.render().contains("weft_user_"), "{}", r.render());
}

#[test]
fn series_past_the_cap_and_long_values_are_dropped_and_counted() {
    let r = Registry::default();
    r.set_limits(MetricLimits {
        max_series_per_family: 3,
        max_families_per_filter: 2,
        max_label_value_bytes: 8,
    });
    let f: Arc<str> = "f".into();
    let g: Arc<str> = "g".into();
    for i in 0..10 {
        r.filter_counter_add(&f, "by_id", labels(&[("id", &i.to_string())]), 1)
            .unwrap();
    }
    // Series that exist still count; another filter has its own cap.
    r.filter_counter_add(&f, "by_id", labels(&[("id", "0")]), 1)
        .unwrap();
    r.filter_counter_add(&g, "by_id", labels(&[("id", "0")]), 1)
        .unwrap();
    r.filter_counter_add(&g, "by_id", labels(&[("id", "123456789")]), 1)
        .unwrap();
    // A third metric of f's: dropped; g's second is its own.
    r.filter_counter_add(&f, "second", vec![], 1).unwrap();
    r.filter_counter_add(&f, "third", vec![], 1).unwrap();
    r.filter_counter_add(&g, "third", vec![], 1).unwrap();
    let text = r.render();
    assert!(
        text.contains("weft_user_second{filter=\"f\"} 1\n"),
        "{text}"
    );
    assert!(!text.contains("weft_user_third{filter=\"f\"}"), "{text}");
    assert!(text.contains("weft_user_third{filter=\"g\"} 1\n"), "{text}");
    assert_eq!(
        text.matches("weft_user_by_id{filter=\"f\"").count(),
        3,
        "{text}"
    );
    assert!(
        text.contains("weft_user_by_id{filter=\"f\",id=\"0\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("weft_user_by_id{filter=\"g\",id=\"0\"} 1\n"),
        "{text}"
    );
    assert_eq!(
        r.counter_value(
            "weft_filter_metric_updates_dropped_total",
            &[("filter", "f")]
        ),
        Some(8)
    );
    assert_eq!(
        r.counter_value(
            "weft_filter_metric_updates_dropped_total",
            &[("filter", "g")]
        ),
        Some(1)
    );
}

#[test]
fn a_filters_metric_keeps_the_label_names_of_its_first_series() {
    let r = Registry::default();
    let f: Arc<str> = "f".into();
    let g: Arc<str> = "g".into();
    r.filter_counter_add(&f, "hits", labels(&[("route", "a")]), 1)
        .unwrap();
    let err = r
        .filter_counter_add(&f, "hits", labels(&[("path", "/x")]), 1)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "metric \"hits\" has the label names [route] (fixed by its first series), not [path]"
    );
    // Another filter's series are its own, names included.
    r.filter_counter_add(&g, "hits", labels(&[("path", "/x")]), 2)
        .unwrap();
    let text = r.render();
    assert!(
        text.contains("weft_user_hits{filter=\"f\",route=\"a\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("weft_user_hits{filter=\"g\",path=\"/x\"} 2\n"),
        "{text}"
    );
    // The proxy's own families by name: the same rule.
    r.counter_add("weft_test_total", labels(&[("a", "1")]), 1)
        .unwrap();
    assert!(matches!(
        r.counter_add("weft_test_total", labels(&[("b", "1")]), 1),
        Err(MetricError::LabelNames { .. })
    ));
}

#[test]
fn the_exposition_has_help_build_info_and_process_metrics() {
    let r = Registry::default();
    let text = r.render();
    assert!(
        text.contains("# HELP weft_log_lines_dropped_total Log lines dropped"),
        "{text}"
    );
    assert!(text.contains("# TYPE weft_build_info gauge\n"), "{text}");
    assert!(
        text.contains(&format!(
            "weft_build_info{{contract_versions=\"0.4.0\",version=\"{}\",wasmtime_version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            scrape::WASMTIME_VERSION
        )),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    assert!(text.contains("process_start_time_seconds "), "{text}");
}

#[test]
fn the_wasmtime_version_is_the_pinned_one() {
    let workspace = include_str!("../../../Cargo.toml");
    let pinned = format!("wasmtime = {{ version = \"={}\"", scrape::WASMTIME_VERSION);
    assert!(
        workspace.contains(&pinned),
        "Cargo.toml pins another wasmtime"
    );
}

#[test]
fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
    let r = Registry::default();
    let f: Arc<str> = "f".into();
    r.counter_add("weft_config_reloads_total", labels(&[("result", "ok")]), 2)
        .unwrap();
    r.filter_counter_add(&f, "hits", vec![], 3).unwrap();
    r.filter_histogram_observe(&f, "seconds", vec![], 0.002)
        .unwrap();
    let om = r.render_as(Format::OpenMetrics);
    assert!(om.ends_with("\n# EOF\n"), "{om}");
    assert!(om.contains("# TYPE weft_config_reloads counter\n"), "{om}");
    assert!(
        om.contains("# HELP weft_config_reloads Snapshot builds"),
        "{om}"
    );
    assert!(
        om.contains("weft_config_reloads_total{result=\"ok\"} 2\n"),
        "{om}"
    );
    // A counter named without the suffix gets it on its samples.
    assert!(om.contains("# TYPE weft_user_hits counter\n"), "{om}");
    assert!(
        om.contains("weft_user_hits_total{filter=\"f\"} 3\n"),
        "{om}"
    );
    assert!(
        om.contains("# HELP weft_user_hits Metric \\\"hits\\\" of filters"),
        "{om}"
    );
    assert!(om.contains("# TYPE weft_user_seconds histogram\n"), "{om}");
    assert!(!om.contains("_total counter"), "{om}");
}

#[test]
fn the_format_follows_accept() {
    use Format::*;
    for (accept, want) in [
        (None, Text),
        (Some("text/plain;version=0.0.4"), Text),
        (Some("*/*"), Text),
        (
            Some("application/openmetrics-text; version=1.0.0"),
            OpenMetrics,
        ),
        (
            Some("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.4"),
            OpenMetrics,
        ),
        (Some("Application/OpenMetrics-Text"), OpenMetrics),
        (Some("application/openmetrics-text;q=0"), Text),
    ] {
        assert_eq!(Format::from_accept(accept), want, "{accept:?}");
    }
}

#[test]
fn quantiles_interpolate_within_their_bucket() {
    let buckets = [(1.0, 0), (2.0, 50), (4.0, 100)];
    assert_eq!(calls::quantile(&buckets, 100, 0.5), Some(2.0));
    assert_eq!(calls::quantile(&buckets, 100, 0.25), Some(1.5));
    let p99 = calls::quantile(&buckets, 100, 0.99).unwrap();
    assert!((p99 - 3.96).abs() < 1e-9, "{p99}");
    assert_eq!(calls::quantile(&buckets, 0, 0.5), None);
    // All past the last bound: the last bound.
    assert_eq!(calls::quantile(&[(1.0, 0)], 5, 0.5), Some(1.0));
}

#[test]
fn a_phase_times_one_call_in_eight() {
    let r = Registry::default();
    let phase = r.calls.phase("f", "on-done");
    let timed = (0..24).filter(|_| phase.count()).count();
    assert_eq!(timed, 3);
    phase.timed(std::time::Duration::from_micros(3));
    let (calls, p50, p99) = phase.summary();
    assert_eq!(calls, 24);
    let p50 = p50.unwrap();
    assert!((2.5e-6..=5e-6).contains(&p50), "{p50}");
    assert!(p99.unwrap() >= p50);
}
