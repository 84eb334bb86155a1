//! The `fault` filter: aborts by percentage (never reaching the upstream),
//! trigger headers only when enabled, delays that hold a request without
//! slowing others, and invalid configs refused with their path.

use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Full;
use weft_test_harness::process::validate;
use weft_test_harness::{Reply, Upstream, client, send};

use crate::{bin, config, start, wasm};

fn filters() -> String {
    format!("  fault: {{ path: {} }}", wasm("fault"))
}

/// Routes: `/always/` aborts every request with 503 and a message;
/// `/never/` aborts none; `/half/` aborts half; `/trigger/` only obeys
/// the trigger headers; `/trigger-abort/` has a configured abort at 0%
/// and obeys triggers; `/no-trigger/` does not obey them; everything else
/// has no filter.
fn routes() -> String {
    r#"      - name: always
        match: { path_prefix: /always/ }
        filters: [{ filter: fault, config: { abort: { status: 503, percent: 100, body: "injected outage" } } }]
        cluster: backend
      - name: never
        match: { path_prefix: /never/ }
        filters: [{ filter: fault, config: { abort: { status: 503, percent: 0 } } }]
        cluster: backend
      - name: half
        match: { path_prefix: /half/ }
        filters: [{ filter: fault, config: { abort: { status: 500, percent: 50.0 } } }]
        cluster: backend
      - name: trigger
        match: { path_prefix: /trigger/ }
        filters: [{ filter: fault, config: { header_trigger: true } }]
        cluster: backend
      - name: trigger-abort
        match: { path_prefix: /trigger-abort/ }
        filters: [{ filter: fault, config: { abort: { status: 503, percent: 0, body: "custom" }, header_trigger: true } }]
        cluster: backend
      - name: no-trigger
        match: { path_prefix: /no-trigger/ }
        filters: [{ filter: fault, config: { abort: { status: 503, percent: 0 } } }]
        cluster: backend
      - name: plain
        cluster: backend"#
        .to_string()
}

/// GET `url` with the given request headers.
async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(&client(false), req.body(Full::default()).unwrap()).await
}

/// Checks an abort answer.
fn assert_aborted(r: &Reply, status: u16, message: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.header("x-weft-fault"), Some("abort"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["error"], "fault_injected", "{body}");
    assert_eq!(body["message"], message, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_at_100_percent_answers_every_request_without_the_upstream() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &routes(), up.addr));
    let url = weft.url("public");

    let r = get_with(&format!("{url}/always/x"), &[("x-request-id", "fault-1")]).await;
    assert_aborted(&r, 503, "injected outage");
    assert_eq!(r.json()["request_id"], "fault-1");
    for i in 0..20 {
        let r = get_with(&format!("{url}/always/{i}"), &[]).await;
        assert_aborted(&r, 503, "injected outage");
    }
    assert_eq!(
        up.hits(),
        0,
        "an aborted request must not reach the upstream"
    );

    // Other routes are not affected.
    let r = get_with(&format!("{url}/other"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-weft-fault"), None);
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_at_0_percent_never_aborts() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &routes(), up.addr));
    let url = weft.url("public");
    let client = client(false);
    for i in 0..50 {
        let req = Request::get(format!("{url}/never/{i}"))
            .body(Full::default())
            .unwrap();
        let r = send(&client, req).await;
        assert_eq!(r.status, 200, "request {i}: {:?}", r.body);
        assert_eq!(r.header("x-weft-fault"), None);
    }
    assert_eq!(up.hits(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_at_50_percent_aborts_about_half() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &routes(), up.addr));
    let url = weft.url("public");
    let client = client(false);
    let total = 400;
    let mut aborted = 0;
    for i in 0..total {
        let req = Request::get(format!("{url}/half/{i}"))
            .body(Full::default())
            .unwrap();
        let r = send(&client, req).await;
        match r.status.as_u16() {
            500 => {
                assert_aborted(&r, 500, "fault injected by the fault filter");
                aborted += 1;
            }
            200 => assert_eq!(r.header("x-weft-fault"), None),
            other => panic!("request {i}: unexpected {other}: {:?}", r.body),
        }
    }
    // Binomial(400, 0.5): mean 200, standard deviation 10; 120..=280 is
    // eight deviations either way.
    assert!(
        (120..=280).contains(&aborted),
        "{aborted} of {total} aborted"
    );
    assert_eq!(
        up.hits(),
        total - aborted,
        "exactly the others went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_headers_work_only_when_enabled() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &routes(), up.addr));
    let url = weft.url("public");

    // Enabled, nothing configured: a request asks for an abort.
    let r = get_with(
        &format!("{url}/trigger/x"),
        &[("x-weft-fault-abort", "418")],
    )
    .await;
    assert_aborted(&r, 418, "fault injected by the fault filter");
    assert_eq!(up.hits(), 0);

    // Without the header, or with an invalid value, nothing happens; the
    // trigger headers do not reach the upstream.
    let r = get_with(&format!("{url}/trigger/x"), &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for bad in ["abc", "99", "600", ""] {
        let r = get_with(
            &format!("{url}/trigger/x"),
            &[("x-weft-fault-abort", bad), ("x-weft-fault-delay", "0")],
        )
        .await;
        assert_eq!(r.status, 200, "{bad:?}: {:?}", r.body);
        assert_eq!(r.echoed_header("x-weft-fault-abort"), None, "{bad:?}");
        assert_eq!(r.echoed_header("x-weft-fault-delay"), None, "{bad:?}");
    }
    assert_eq!(up.hits(), 5);

    // A trigger overrides a configured abort's percentage (0%), and the
    // configured message is used.
    let r = get_with(
        &format!("{url}/trigger-abort/x"),
        &[("x-weft-fault-abort", "502")],
    )
    .await;
    assert_aborted(&r, 502, "custom");
    let r = get_with(&format!("{url}/trigger-abort/x"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), 6);

    // Not enabled: the header is ignored and passed on untouched.
    let r = get_with(
        &format!("{url}/no-trigger/x"),
        &[("x-weft-fault-abort", "418")],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-weft-fault"), None);
    assert_eq!(
        r.echoed_header("x-weft-fault-abort").as_deref(),
        Some("418")
    );
    assert_eq!(up.hits(), 7);
}

#[test]
fn an_invalid_fault_config_is_rejected_with_its_path() {
    let yaml = |fault_config: &str| {
        config(
            &filters(),
            &format!(
                "      - name: ok\n        match: {{ path_prefix: /ok/ }}\n        cluster: backend\n      - name: api\n        filters: [{{ filter: fault, config: {fault_config} }}]\n        cluster: backend"
            ),
            "127.0.0.1:9000".parse().unwrap(),
        )
    };
    let cases = [
        (
            "{ abort: { status: 99 } }",
            "abort.status: 99 is not a status an abort can answer with (200 to 599)",
        ),
        (
            "{ abort: { status: 503, percent: 150 } }",
            "abort.percent: 150 is not a percentage between 0 and 100",
        ),
        (
            "{ delay: { ms: 0 } }",
            "delay.ms: a delay must be at least 1 ms",
        ),
        (
            "{ delay: { ms: 400000, percent: 5 } }",
            "delay.ms: 400000 ms is longer than the longest delay, 300000 ms (5 minutes)",
        ),
        (
            "{}",
            "fault needs `abort`, `delay` or `header_trigger: true`",
        ),
        (
            "{ header_trigger: false }",
            "fault needs `abort`, `delay` or `header_trigger: true`",
        ),
        (
            "{ abort: { status: 503, precent: 5 } }",
            "invalid config: unknown field `precent`",
        ),
        (
            "{ abort: { percent: 5 } }",
            "invalid config: missing field `status`",
        ),
    ];
    for (fault_config, expected) in cases {
        let (ok, out) = validate(bin(), &yaml(fault_config), "weft.yaml", &[]);
        assert!(!ok, "{fault_config} was accepted:\n{out}");
        assert!(
            out.contains(&format!(
                "listeners[0].routes[1].filters[0].config: init rejected the config: {expected}"
            )),
            "{fault_config}:\n{out}"
        );
    }
}

/// Routes for the delay tests: `/slow/` delays every request by 300 ms,
/// `/slow-abort/` delays then aborts, `/trigger/` obeys the trigger
/// headers, everything else has no filter.
fn delay_routes() -> String {
    r#"      - name: slow
        match: { path_prefix: /slow/ }
        filters: [{ filter: fault, config: { delay: { ms: 300, percent: 100 } } }]
        cluster: backend
      - name: slow-abort
        match: { path_prefix: /slow-abort/ }
        filters: [{ filter: fault, config: { delay: { ms: 200 }, abort: { status: 503 } } }]
        cluster: backend
      - name: trigger
        match: { path_prefix: /trigger/ }
        filters: [{ filter: fault, config: { header_trigger: true } }]
        cluster: backend
      - name: plain
        cluster: backend"#
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_holds_the_request_without_holding_up_others() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &delay_routes(), up.addr));
    let url = weft.url("public");

    let started = Instant::now();
    let r = get_with(&format!("{url}/slow/x"), &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    assert_eq!(up.hits(), 1);

    // Eight delayed requests at once, and undelayed requests on another
    // route while they wait: everything succeeds, and each delayed request
    // is held at least 300 ms.
    let slow: Vec<_> = (0..8)
        .map(|i| {
            let url = format!("{url}/slow/{i}");
            tokio::spawn(async move {
                let started = Instant::now();
                let r = get_with(&url, &[]).await;
                (r.status.as_u16(), started.elapsed())
            })
        })
        .collect();
    for i in 0..8 {
        let r = get_with(&format!("{url}/plain/{i}"), &[]).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    for task in slow {
        let (status, took) = task.await.unwrap();
        assert_eq!(status, 200);
        assert!(took >= Duration::from_millis(300), "took {took:?}");
    }
    assert_eq!(up.hits(), 1 + 8 + 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_request_can_then_be_aborted() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &delay_routes(), up.addr));
    let url = weft.url("public");

    for i in 0..3 {
        let started = Instant::now();
        let r = get_with(&format!("{url}/slow-abort/{i}"), &[]).await;
        let took = started.elapsed();
        assert_aborted(&r, 503, "fault injected by the fault filter");
        assert!(took >= Duration::from_millis(200), "took {took:?}");
    }
    assert_eq!(up.hits(), 0);

    // Both through the trigger headers.
    let started = Instant::now();
    let r = get_with(
        &format!("{url}/trigger/x"),
        &[("x-weft-fault-delay", "250"), ("x-weft-fault-abort", "504")],
    )
    .await;
    let took = started.elapsed();
    assert_aborted(&r, 504, "fault injected by the fault filter");
    assert!(took >= Duration::from_millis(250), "took {took:?}");

    // A delay alone, through the trigger header.
    let started = Instant::now();
    let r = get_with(
        &format!("{url}/trigger/x"),
        &[("x-weft-fault-delay", "250")],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(took >= Duration::from_millis(250), "took {took:?}");
    assert_eq!(r.echoed_header("x-weft-fault-delay"), None);
    assert_eq!(up.hits(), 1);
}
