//! Groups are served apart: a refusal in one leaves the other serving, and
//! a module of a contract a proxy does not serve is refused for it by the
//! control plane before any download.

use weft_test_harness::Upstream;
use weft_test_harness::components::{filter_component_of_contract, sha256_hex};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_refusal_leaves_the_web_group_serving() {
    let up = Upstream::start().await;
    let cp = control(&["--contract-version", "0.4.0", "--contract-version", "0.9.0"]);
    pushed(&cp, "tag", &add_header());
    applied(&cp, "web", &group_config("tag", "web", up.addr), 1, 0);
    applied(&cp, "canary", &group_config("tag", "canary", up.addr), 1, 0);
    let web: Vec<Weft> = ["web-1", "web-2"]
        .iter()
        .map(|node| serving(launch(&cp, node, "web")))
        .collect();
    let web: Vec<&Weft> = web.iter().collect();
    let canary = serving(launch(&cp, "canary-1", "canary"));
    connected(&cp, "web", 2).await;
    connected(&cp, "canary", 1).await;

    // Canary gets a config its filter refuses, web a good one.
    let refused = apply(
        &cp,
        "canary",
        &group_config_with("tag", "{ response: { \"bad header\": x } }", up.addr),
        true,
    );
    assert!(!refused.success(), "{refused:?}");
    assert!(
        refused.stdout.contains("canary-1: refused version 2: "),
        "{refused:?}"
    );
    applied(&cp, "web", &group_config("tag", "web-2", up.addr), 2, 2);
    let status = weft(&cp, &["status", "--output", "json"]).json();
    for proxy in status["proxies"].as_array().unwrap() {
        if proxy["group"] == "canary" {
            assert_eq!(proxy["serving_version"], 1, "{proxy}");
            assert_eq!(proxy["last_nack"]["version"], 2, "{proxy}");
            assert_eq!(proxy["last_nack"]["by_control_plane"], false, "{proxy}");
            let error = proxy["last_nack"]["error"].as_str().unwrap();
            assert!(error.contains("bad header"), "{proxy}");
        } else {
            assert_eq!(proxy["group"], "web", "{proxy}");
            assert_eq!(proxy["serving_version"], 2, "{proxy}");
            assert_eq!(proxy["last_nack"], Value::Null, "{proxy}");
        }
    }
    all_tagged(&web, "web-2").await;
    all_tagged(&[&canary], "canary").await;

    // A module of contract 0.9.0, which the mesh serves but these proxies
    // do not: refused for canary before it downloads anything.
    let future = filter_component_of_contract("0.9.0");
    pushed(&cp, "future", &future);
    let out = apply(
        &cp,
        "canary",
        &group_config("future", "future", up.addr),
        true,
    );
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stdout.contains("canary-1: refused version 3: "),
        "{out:?}"
    );
    let status = proxy_status(&cp, "canary-1");
    assert_eq!(status["serving_version"], 1, "{status}");
    assert_eq!(status["last_nack"]["version"], 3, "{status}");
    assert_eq!(status["last_nack"]["by_control_plane"], true, "{status}");
    let error = status["last_nack"]["error"].as_str().unwrap();
    assert!(error.contains("0.9.0"), "{status}");
    let sha256 = sha256_hex(&future);
    let cached = files_in(&cache_dir(&canary).join("modules"));
    assert!(
        !cached.iter().any(|f| f.contains(&sha256)),
        "canary fetched it: {cached:?}"
    );
    all_tagged(&[&canary], "canary").await;
    all_tagged(&web, "web-2").await;
    for node in ["web-1", "web-2"] {
        let status = proxy_status(&cp, node);
        assert_eq!(status["serving_version"], 2, "{status}");
        assert_eq!(status["last_nack"], Value::Null, "{status}");
    }
}
