//! The README's mesh quickstart with the shipped files (examples/mesh): a
//! push of api-key and headers, an apply of mesh.yaml, two proxies from
//! web-1.yaml and web-2.yaml (on free ports), and the curl lines.

use http::Request;
use http_body_util::Full;
use weft_test_harness::{Upstream, client, get, send};

use super::{applied, control, launch_local, pushed, serving};

fn shipped(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/mesh")
        .join(name);
    std::fs::read_to_string(path).expect("a shipped mesh file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_mesh_steps_do_what_the_readme_says() {
    let up = Upstream::start().await;
    let cp = control(&[]);
    let component = |name: &str| std::fs::read(weft_test_harness::component(name)).unwrap();
    pushed(&cp, "api-key", &component("api_key"));
    pushed(&cp, "headers", &component("headers"));
    let mesh = shipped("mesh.yaml").replace("127.0.0.1:9000", &up.addr.to_string());
    applied(&cp, "web", &mesh, 1, 0);

    let mut proxies = Vec::new();
    for (node, file) in [("web-1", "web-1.yaml"), ("web-2", "web-2.yaml")] {
        let local = shipped(file).replace(":8081", ":0").replace(":8082", ":0");
        assert!(local.contains("127.0.0.1:0"), "{local}");
        proxies.push(serving(launch_local(&cp, node, "web", &local)));
    }

    for proxy in &proxies {
        let public = proxy.url("public");
        let anything = get(&format!("{public}/anything")).await;
        assert_eq!(anything.status, 200);
        assert_eq!(anything.header("x-mesh-version"), Some("1"));
        assert_eq!(get(&format!("{public}/api/orders")).await.status, 401);
        let with_key = Request::get(format!("{public}/api/orders"))
            .header("x-api-key", "mesh-key")
            .body(Full::default())
            .unwrap();
        assert_eq!(send(&client(false), with_key).await.status, 200);
    }

    let v2 = mesh.replace("x-mesh-version: \"1\"", "x-mesh-version: \"2\"");
    assert_ne!(v2, mesh, "the README's sed line changes the shipped file");
    applied(&cp, "web", &v2, 2, 2);
    for proxy in &proxies {
        let anything = get(&format!("{}/anything", proxy.url("public"))).await;
        assert_eq!(anything.header("x-mesh-version"), Some("2"));
    }
}
