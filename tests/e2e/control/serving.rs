//! Modules pushed and configs applied reach every proxy of the group: a new
//! version of a module, a 20 MiB module, and 20 rollouts under traffic
//! without a failed request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::{BodyExt, Full};
use weft_test_harness::components::padded;
use weft_test_harness::{Upstream, client};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_versions_and_a_20_mib_module_reach_every_proxy() {
    let up = Upstream::start().await;
    let cp = control(&[]);
    // Connected before the group has a config: they wait for it.
    let waiting: Vec<Weft> = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|node| launch(&cp, node, "web"))
        .collect();
    connected(&cp, "web", 3).await;

    let code = add_header();
    let (v1, _) = pushed(&cp, "tag", &code);
    assert_eq!(v1, "tag@1");
    applied(&cp, "web", &group_config("tag", "one", up.addr), 1, 3);
    let web: Vec<Weft> = waiting.into_iter().map(serving).collect();
    let web: Vec<&Weft> = web.iter().collect();
    all_tagged(&web, "one").await;

    // The same code in other bytes: the next version of `tag`.
    let (v2, sha2) = pushed(&cp, "tag", &padded(&code, code.len() + 1024, "v2"));
    assert_eq!(v2, "tag@2");
    applied(&cp, "web", &group_config("tag@2", "two", up.addr), 2, 3);
    all_tagged(&web, "two").await;
    let listed = modules(&cp);
    let tag2 = listed
        .iter()
        .find(|m| m["name"] == "tag" && m["version"] == 2)
        .expect("tag@2 listed");
    assert_eq!(tag2["sha256"], sha2.as_str());
    assert_eq!(
        tag2["running_on"],
        serde_json::json!(["web-1", "web-2", "web-3"])
    );

    let (big, _) = pushed(&cp, "big", &padded(&code, 20 << 20, "big"));
    assert_eq!(big, "big@1");
    applied(&cp, "web", &group_config("big", "big", up.addr), 3, 3);
    all_tagged(&web, "big").await;
    for proxy in proxies(&cp) {
        assert_eq!(proxy["serving_version"], 3, "{proxy}");
        assert_eq!(proxy["last_nack"], Value::Null, "{proxy}");
    }
}

/// Client tasks looping over the proxies until told to stop: (requests,
/// failures with the first few reasons).
fn traffic(
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let c = client(false);
        let (mut sent, mut reasons) = (0usize, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(120);
        // Bounded: stops when told, after 100k requests or 2 minutes.
        while !stop.load(Ordering::Relaxed) && sent < 100_000 && Instant::now() < deadline {
            let url = &urls[sent % urls.len()];
            sent += 1;
            let req = Request::get(format!("{url}/x"))
                .body(Full::default())
                .unwrap();
            let outcome = match tokio::time::timeout(Duration::from_secs(10), c.request(req)).await
            {
                Err(_) => Err("no response in 10 s".to_string()),
                Ok(Err(e)) => Err(format!("{e:?}")),
                Ok(Ok(resp)) if resp.status() != 200 => Err(format!("status {}", resp.status())),
                Ok(Ok(resp)) => resp
                    .into_body()
                    .collect()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("body: {e:?}")),
            };
            if let Err(reason) = outcome {
                failed.fetch_add(1, Ordering::Relaxed);
                if reasons.len() < 5 {
                    reasons.push(format!("{url}: {reason}"));
                }
            }
            // Paced (about a thousand requests a second per task), so that
            // the traffic does not take the cores the rollouts need.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (sent, reasons)
    })
}

/// [`group_config`] with a filter deadline of 1 s instead of 10 ms: the
/// deadline counts wall time while a call runs, so on a machine with more
/// runnable threads than cores a call preempted for over 10 ms fails
/// closed (500 `filter_failed`) whatever the control plane does; that is
/// not what this test is about.
fn patient_config(module: &str, value: &str, upstream: std::net::SocketAddr) -> String {
    let config = group_config(module, value, upstream);
    let plain = format!("tag: {{ module: \"{module}\" }}");
    assert!(config.contains(&plain), "{config}");
    config.replace(
        &plain,
        &format!("tag: {{ module: \"{module}\", deadline_ms: 1000 }}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_rollouts_under_traffic_fail_no_request() {
    let up = Upstream::start().await;
    let cp = control(&[]);
    let code = add_header();
    pushed(&cp, "tag", &code);
    applied(&cp, "web", &patient_config("tag@1", "r0", up.addr), 1, 0);
    let web: Vec<Weft> = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|node| serving(launch(&cp, node, "web")))
        .collect();
    connected(&cp, "web", 3).await;
    let urls: Vec<String> = web.iter().map(|p| p.url("public")).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..3)
        .map(|_| traffic(urls.clone(), stop.clone(), failed.clone()))
        .collect();
    for round in 1..=20u64 {
        let value = format!("r{round}");
        let (reference, _) = pushed(&cp, "tag", &padded(&code, code.len() + 64, &value));
        assert_eq!(reference, format!("tag@{}", round + 1));
        let config = patient_config(&reference, &value, up.addr);
        applied(&cp, "web", &config, round + 1, 3);
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut reasons = Vec::new();
    for c in clients {
        let (sent, why) = c.await.unwrap();
        total += sent;
        reasons.extend(why);
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests during the rollouts (of {total}): {reasons:?}"
    );
    assert!(
        total > 100,
        "traffic flowed during the rollouts ({total} requests)"
    );
    all_tagged(&web.iter().collect::<Vec<_>>(), "r20").await;
}
