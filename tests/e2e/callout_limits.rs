//! What a filter's callouts cannot do: pick the virtual host behind a
//! grant, block a worker past the callout budget, or call the proxy itself.

use std::time::{Duration, Instant};

use weft_test_harness::{Upstream, get};

use crate::{bin, config, start, wasm};

fn calling(callout: &str, allow: &str, upstream: std::net::SocketAddr) -> String {
    let filters = format!(
        "  misbehave: {{ path: {}, allow_http: [\"{allow}\"] }}",
        wasm("misbehave_filter")
    );
    let routes = format!(
        "      - {{ name: all, filters: [{{ filter: misbehave, config: {{ callout: {callout} }} }}], cluster: backend }}"
    );
    config(&filters, &routes, upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callout_is_sent_with_the_granted_authority_as_host() {
    let up = Upstream::start().await;
    let service = Upstream::start().await;
    let callout = format!(
        "{{ url: \"http://{}/who\", host: admin.internal }}",
        service.addr
    );
    let weft = start(&calling(&callout, &service.addr.to_string(), up.addr));
    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.echoed_header("x-callouts").as_deref(), Some("status=200"));
    let seen: serde_json::Value =
        serde_json::from_str(&r.echoed_header("x-callout-body").unwrap()).unwrap();
    assert_eq!(seen["headers"]["host"], service.addr.to_string(), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_slow_callouts_end_within_the_phase_budget() {
    let up = Upstream::start().await;
    let service = Upstream::start().await;
    // Ten calls of 800 ms each; the default phase budget is 2 s: two are
    // answered, the third is cut at the 400 ms left, the others not made.
    let callout = format!(
        "{{ url: \"http://{}/delay/800\", times: 10, timeout_ms: 5000 }}",
        service.addr
    );
    let weft = start(&calling(&callout, &service.addr.to_string(), up.addr));
    let started = Instant::now();
    let r = get(&format!("{}/x", weft.url("public"))).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(took < Duration::from_secs(4), "{took:?}");
    let outcomes = r.echoed_header("x-callouts").unwrap();
    let outcomes: Vec<&str> = outcomes.split(';').collect();
    assert_eq!(outcomes.len(), 10);
    assert_eq!(outcomes[..2], ["status=200", "status=200"], "{outcomes:?}");
    assert!(
        outcomes[2].starts_with("error=timed out after "),
        "{outcomes:?}"
    );
    assert!(
        outcomes[3..]
            .iter()
            .all(|o| o.starts_with("error=no callout budget left")),
        "{outcomes:?}"
    );
    assert_eq!(service.hits(), 3);
}

#[test]
fn a_grant_to_one_of_the_proxys_own_listeners_is_refused() {
    let yaml = format!(
        "filters:\n  misbehave: {{ path: {}, allow_http: [\"127.0.0.1:9\", \"localhost:18431\"] }}\nlisteners:\n  - name: public\n    listen: 0.0.0.0:18431\n    routes:\n      - {{ name: all, filters: [{{ filter: misbehave }}], cluster: backend }}\nclusters:\n  backend: {{ endpoints: [\"127.0.0.1:9\"] }}\n",
        wasm("misbehave_filter")
    );
    let (ok, out) = weft_test_harness::process::validate(bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(r#"filters.misbehave.allow_http[1]: "localhost:18431" is one of this proxy's own listeners"#),
        "{out}"
    );
    assert!(!out.contains("allow_http[0]"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callouts_across_the_phase_calls_of_a_request_end_within_the_request_budget() {
    let up = Upstream::start().await;
    let service = Upstream::start().await;
    // A 900 ms callout, then a pause, then again, for ever: each phase call
    // is within the 2 s phase budget, the request's 5 s budget ends it:
    // five calls answered, the sixth cut at the 500 ms left, none after.
    let filters = format!(
        "  misbehave: {{ path: {}, allow_http: [\"{}\"] }}",
        wasm("misbehave_filter"),
        service.addr
    );
    let routes = format!(
        "      - {{ name: all, filters: [{{ filter: misbehave, config: {{ pause_ms: 1, callout: {{ url: \"http://{}/delay/900\", timeout_ms: 5000 }} }} }}], cluster: backend }}",
        service.addr
    );
    let weft = start(&config(&filters, &routes, up.addr));
    let started = Instant::now();
    let r = get(&format!("{}/x", weft.url("public"))).await;
    let took = started.elapsed();
    // It ends at the pause limit, its callouts long refused.
    assert_eq!(r.status, 500, "{:?}", r.body);
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("the limit of 1000 per request"),
        "{message}"
    );
    assert_eq!(service.hits(), 6);
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(up.hits(), 0);
}
