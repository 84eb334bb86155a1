//! The shipped example configs: the README's quickstart validates and its
//! curl lines behave as the README says; the gateway example (every
//! built-in filter) validates.

use http::Request;
use http_body_util::Full;
use weft_test_harness::process::validate_file;
use weft_test_harness::{Upstream, client, get, send};

use crate::{bin, start};

fn quickstart_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/weft.yaml")
}

#[test]
fn the_quickstart_config_validates_as_shipped() {
    let (ok, out) = validate_file(bin(), &quickstart_path());
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_lines_do_what_the_readme_says() {
    let up = Upstream::start().await;
    let shipped = std::fs::read_to_string(quickstart_path()).unwrap();
    let yaml = shipped
        .replace(
            "../../target/wasm-filters/wasm32-wasip2/filter/",
            &format!("{}/", weft_test_harness::filters::WASM_DIR),
        )
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9000", &up.addr.to_string());
    let weft = start(&yaml);
    let url = weft.url("public");

    let hello = get(&format!("{url}/hello")).await;
    assert_eq!(hello.status, 200);
    assert_eq!(&hello.body[..], b"hello from weft\n");
    assert_eq!(up.hits(), 0);

    assert_eq!(get(&format!("{url}/api/orders")).await.status, 401);
    let c = client(false);
    let with_key = |key: &str| {
        Request::get(format!("{url}/api/orders"))
            .header("x-api-key", key)
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(send(&c, with_key("wrong")).await.status, 403);
    let ok = send(&c, with_key("quickstart-key")).await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.echoed_header("x-consumer").as_deref(),
        Some("quickstart")
    );
    assert_eq!(ok.echoed_header("x-team").as_deref(), Some("quickstart"));
    assert_eq!(
        ok.echoed_header("x-api-key"),
        None,
        "the key is not forwarded"
    );

    let other = get(&format!("{url}/anything")).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.header("x-served-by"), Some("weft"));
}

#[test]
fn the_gateway_example_with_every_built_in_filter_validates() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/gateway/weft.yaml");
    let (ok, out) = validate_file(bin(), &path);
    assert!(ok, "{out}");
    assert!(out.contains("(1 listeners, 3 routes, 7 filters)"), "{out}");
}
