//! HTTP/2 with prior knowledge, and large bodies streaming through.

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
use weft_test_harness::{Upstream, client, send};

use crate::{config, start, wasm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_end_to_end() {
    let up = Upstream::start().await;
    let filters = format!("  add-header: {{ path: {} }}", wasm("add_header"));
    let routes = "      - { name: all, filters: [{ filter: add-header, config: { request: { x-added: h2 } } }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let c = client(true);
    for i in 0..3 {
        let req = Request::post(format!("{}/h2/{i}", weft.url("public")))
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let r = send(&c, req).await;
        assert_eq!(r.status, 200);
        let echo = r.json();
        assert_eq!(echo["path"], format!("/h2/{i}"));
        assert_eq!(echo["body_bytes"], 5);
        assert_eq!(echo["headers"]["x-added"], "h2");
        assert!(
            echo["headers"]["host"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{echo}"
        );
    }
    // The same request over HTTP/2 is answered over HTTP/2.
    let resp = c
        .request(
            Request::get(format!("{}/v", weft.url("public")))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mib_body_streams_through_with_bounded_proxy_memory() {
    let up = Upstream::start().await;
    let filters = format!("  add-header: {{ path: {} }}", wasm("add_header"));
    let routes = "      - { name: all, filters: [{ filter: add-header, config: { request: { x-big: \"1\" } } }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let url = weft.url("public");
    let c = client(false);
    // Warm up: pools and instances exist before measuring.
    let r = send(
        &c,
        Request::post(format!("{url}/warm"))
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let before = weft.proc_status_kib("VmHWM");
    const SIZE: usize = 10 * 1024 * 1024;
    let body = Bytes::from(vec![7u8; SIZE]);
    let r = send(
        &c,
        Request::post(format!("{url}/upload"))
            .body(Full::new(body))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_bytes"], SIZE as u64);
    assert_eq!(r.echoed_header("x-big").as_deref(), Some("1"));
    let after = weft.proc_status_kib("VmHWM");
    let growth_kib = after.saturating_sub(before);
    assert!(
        growth_kib < 4 * 1024,
        "peak RSS grew by {growth_kib} KiB while streaming 10 MiB: the body was buffered"
    );
}
