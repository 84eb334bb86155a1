//! Proxy-wasm filters through the mesh: pushed, listed with their ABI as
//! their contract, checked when applied, served like Weft filters, and
//! replaced by a Weft filter under the same name.

use weft_test_harness::Upstream;

use super::*;

/// A group config whose one route runs filter `edge`, module `module`,
/// with `config` (YAML flow, or nothing), to `upstream`.
fn edge_config(module: &str, config: Option<&str>, upstream: SocketAddr) -> String {
    let entry = match config {
        Some(config) => format!("{{ filter: edge, config: {config} }}"),
        None => "{ filter: edge }".to_string(),
    };
    format!(
        "filters:\n  edge: {{ module: \"{module}\" }}\nlisteners:\n  - name: public\n    routes:\n      - {{ name: all, filters: [{entry}], cluster: backend }}\nclusters:\n  backend: {{ endpoints: [\"{upstream}\"] }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_proxy_wasm_filter_is_served_and_replaced_by_a_weft_filter_of_the_same_name() {
    let up = Upstream::start().await;
    let cp = control(&[]);
    let waiting = launch(&cp, "pw-1", "web");
    connected(&cp, "web", 1).await;

    let headers = std::fs::read(weft_test_harness::proxy_wasm_filter("http_headers"))
        .expect("http_headers.wasm");
    let out = push(&cp, "edge", &headers);
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout.starts_with("pushed edge@1 ")
            && out.stdout.contains(" contract=proxy-wasm@0.2.1 "),
        "{out:?}"
    );
    let listed = weft(&cp, &["modules"]);
    let row = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("edge "))
        .unwrap_or_else(|| panic!("edge not listed: {listed:?}"));
    assert!(row.contains("  proxy-wasm@0.2.1  "), "{row}");

    // A proxy-wasm module that imports what the proxy does not provide is
    // stored, but an apply naming it is refused (it is linked there).
    let broken = std::fs::read(weft_test_harness::proxy_wasm_filter("unknown_import"))
        .expect("unknown_import.wasm");
    let (broken, _) = pushed(&cp, "broken", &broken);
    let refused = apply(&cp, "web", &edge_config(&broken, None, up.addr), false);
    assert!(!refused.success(), "{refused:?}");
    assert!(
        refused.stderr.contains("filters.edge")
            && refused
                .stderr
                .contains("proxy_no_such_function, which this proxy does not provide"),
        "{refused:?}"
    );

    applied(&cp, "web", &edge_config("edge", None, up.addr), 1, 1);
    let proxy = serving(waiting);
    let hello = get(&format!("{}/hello", proxy.url("public"))).await;
    assert_eq!(hello.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&hello.body).trim_end(),
        "Hello from proxy-wasm"
    );
    assert!(
        hello.header("x-upstream-addr").is_none(),
        "answered by the filter"
    );
    let through = get(&format!("{}/x", proxy.url("public"))).await;
    assert_eq!(through.status, 200, "{:?}", through.body);
    assert_eq!(through.header("x-powered-by"), Some("proxy-wasm"));
    assert_eq!(
        through.header("x-upstream-addr"),
        Some(up.addr.to_string().as_str())
    );

    // Version 2 of `edge` is a Weft filter: the same name, the other ABI.
    let (v2, _) = pushed(&cp, "edge", &add_header());
    assert_eq!(v2, "edge@2");
    applied(
        &cp,
        "web",
        &edge_config("edge@2", Some("{ response: { x-tag: two } }"), up.addr),
        2,
        1,
    );
    eventually("/hello through to the upstream", || async {
        let reply = get(&format!("{}/hello", proxy.url("public"))).await;
        (reply.status == 200 && reply.header("x-upstream-addr").is_some()).then_some(reply)
    })
    .await;
    let tagged = get(&format!("{}/x", proxy.url("public"))).await;
    assert_eq!(tagged.status, 200, "{:?}", tagged.body);
    assert_eq!(tagged.header(TAG), Some("two"));
    assert_eq!(tagged.header("x-powered-by"), None);
    let status = proxy_status(&cp, "pw-1");
    assert_eq!(status["serving_version"], 2, "{status}");
    assert_eq!(status["last_nack"], Value::Null, "{status}");
    let contracts: Vec<(u64, String)> = modules(&cp)
        .iter()
        .filter(|m| m["name"] == "edge")
        .map(|m| {
            (
                m["version"].as_u64().unwrap(),
                m["contract_version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        contracts,
        [(1, "proxy-wasm@0.2.1".into()), (2, "0.4.0".into())]
    );
}
