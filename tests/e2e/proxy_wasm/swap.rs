//! Hot swap: a proxy-wasm module uploaded through the admin API replaces
//! the serving one under traffic with no failed request; one whose plugin
//! refuses its configuration changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use weft_test_harness::process::temp_dir;
use weft_test_harness::{Upstream, client, get, send};

use super::pw;
use crate::{config, start};

const TOKEN: &str = "swap-token";

async fn put(admin: &str, filter: &str, module: &str) -> weft_test_harness::Reply {
    let body = std::fs::read(weft_test_harness::proxy_wasm_filter(module)).unwrap();
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("{admin}/filters/{filter}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    send(&client(false), req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_proxy_wasm_module_replaces_the_serving_one_under_traffic() {
    let up = Upstream::start().await;
    let token = temp_dir("pw-swap").join("token");
    std::fs::create_dir_all(token.parent().unwrap()).unwrap();
    std::fs::write(&token, TOKEN).unwrap();
    let filters = format!("  pw: {{ path: {} }}", pw("http_headers"));
    let routes = "      - { name: all, filters: [{ filter: pw }], cluster: backend }";
    let weft = start(&format!(
        "admin: {{ listen: 127.0.0.1:0, token_file: {} }}\n{}",
        token.display(),
        config(&filters, routes, up.addr)
    ));
    let (admin, public) = (weft.url("admin"), weft.url("public"));
    let hello = get(&format!("{public}/hello")).await;
    assert_eq!(&hello.body[..], b"Hello from proxy-wasm\n");
    let filters = get(&format!("{admin}/filters")).await.json();
    assert_eq!(filters["filters"][0]["kind"], "proxy-wasm");
    assert_eq!(filters["filters"][0]["contract_version"], "0.2.1");

    // Traffic throughout the swaps, bounded in count.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, url) = (stop.clone(), format!("{public}/x"));
        tokio::spawn(async move {
            let (mut sent, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) && sent < 20_000 {
                let r = get(&url).await;
                sent += 1;
                if r.status != 200 {
                    failed.push(r.status);
                }
            }
            (sent, failed)
        })
    };

    // http_config refuses an empty plugin configuration: nothing changes.
    let refused = put(&admin, "pw", "http_config").await;
    assert_eq!(refused.status, 400, "{:?}", refused.json());
    let message = refused.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("proxy_on_configure returned false"),
        "{message}"
    );
    assert_eq!(
        &get(&format!("{public}/hello")).await.body[..],
        b"Hello from proxy-wasm\n"
    );

    let swapped = put(&admin, "pw", "pw_inspect").await;
    assert_eq!(swapped.status, 200, "{:?}", swapped.json());
    let r = get(&format!("{public}/hello")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-pw-plugin-name"),
        Some("pw"),
        "served by the new module"
    );
    assert_ne!(&r.body[..], b"Hello from proxy-wasm\n");

    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = traffic.await.unwrap();
    assert!(sent > 0);
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );
}
