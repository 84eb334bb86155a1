//! The `headers` filter: remove, rename, set, set_if_absent and add on the
//! request (as the upstream saw it) and on the response (as the client saw
//! it); every template variable; invalid configs refused with their path.

use http::Request;
use http_body_util::Full;
use weft_test_harness::process::validate;
use weft_test_harness::{Reply, Upstream, client, send};

use crate::{bin, config, start, wasm};

fn filters() -> String {
    format!(
        "  headers: {{ path: {} }}\n  add-header: {{ path: {} }}",
        wasm("headers"),
        wasm("add_header")
    )
}

/// Routes:
/// - `/ops/`: every request operation, then a second `headers` entry that
///   shows in a response header every value of `x-multi` the upstream got
///   (the upstream's echo keeps only the last value of a header);
/// - `/vars/`: every variable, on the request and on the response;
/// - everything else (`resp`): every response operation.
fn routes() -> String {
    r#"      - name: ops
        match: { path_prefix: /ops/ }
        filters:
          - filter: headers
            config:
              request:
                remove: [x-drop, X-Also-Drop]
                rename: { x-old: x-new }
                set: { x-set: fixed, x-over: replaced }
                set_if_absent: { x-default: default, x-kept: default }
                add: { x-multi: appended }
          - filter: headers
            config: { response: { set: { x-saw-multi: "%REQ(x-multi)%" } } }
        cluster: backend
      - name: vars
        match: { path_prefix: /vars/ }
        filters:
          - filter: headers
            config:
              request:
                set:
                  x-id: "%REQUEST_ID%"
                  x-peer-ip: "%PEER_IP%"
                  x-peer-addr: "%PEER_ADDR%"
                  x-route: "%ROUTE%"
                  x-cluster: "%CLUSTER%"
                  x-listener: "%LISTENER%"
                  x-method: "%METHOD%"
                  x-path: "%PATH%"
                  x-authority: "%AUTHORITY%"
                  x-start: "%START_TIME%"
                  x-in-copy: "in=%REQ(X-In)%;"
                  x-absent: "[%REQ(x-nope)%]"
                  x-percent: "100%% %METHOD%"
              response:
                set:
                  x-resp-status: "%STATUS% via %ROUTE%"
                  x-resp-upstream: "%RESP(x-upstream)%"
                  x-resp-in: "%REQ(x-in)%"
                  x-resp-id: "%REQUEST_ID%"
                  x-resp-start: "%START_TIME%"
        cluster: backend
      - name: resp
        filters:
          - filter: headers
            config:
              response:
                remove: [x-upstream]
                rename: { content-type: x-original-type }
                set: { x-multi: zero, x-status: "%STATUS%", x-type: "%RESP(content-type)%" }
                set_if_absent: { content-type: text/plain, x-absent: "was absent" }
                add: { x-multi: one }
        cluster: backend"#
        .to_string()
}

/// Sends `method url` with the given request headers.
async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(&client(false), req.body(Full::default()).unwrap()).await
}

/// Every value of response header `name`.
fn all(reply: &Reply, name: &str) -> Vec<String> {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_operations_change_what_the_upstream_gets() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &routes(), up.addr));
    let url = weft.url("public");

    let r = request(
        "GET",
        &format!("{url}/ops/x"),
        &[
            ("x-drop", "1"),
            ("x-also-drop", "2"),
            ("x-old", "moved"),
            ("x-new", "stale"),
            ("x-over", "client"),
            ("x-kept", "client"),
            ("x-multi", "first"),
            ("x-other", "untouched"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let echo = r.json();
    let got = &echo["headers"];
    assert_eq!(got.get("x-drop"), None, "{echo}");
    assert_eq!(got.get("x-also-drop"), None, "names ignore case: {echo}");
    assert_eq!(got.get("x-old"), None, "{echo}");
    assert_eq!(got["x-new"], "moved", "the rename replaces x-new: {echo}");
    assert_eq!(got["x-set"], "fixed");
    assert_eq!(got["x-over"], "replaced");
    assert_eq!(got["x-default"], "default");
    assert_eq!(
        got["x-kept"], "client",
        "set_if_absent keeps a present header"
    );
    assert_eq!(got["x-other"], "untouched");
    // `add` appends: the upstream got both values, in order.
    assert_eq!(r.header("x-saw-multi"), Some("first, appended"));
    assert_eq!(got["x-multi"], "appended", "the echo keeps the last value");

    // Without the header to rename, the rename does nothing: the client's
    // x-new stays. Without x-multi, `add` creates it.
    let r = request("GET", &format!("{url}/ops/y"), &[("x-new", "from client")]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.echoed_header("x-new").as_deref(), Some("from client"));
    assert_eq!(r.echoed_header("x-old"), None);
    assert_eq!(r.echoed_header("x-kept").as_deref(), Some("default"));
    assert_eq!(r.header("x-saw-multi"), Some("appended"));

    // No rename source and no target: neither appears.
    let r = request("GET", &format!("{url}/ops/z"), &[]).await;
    assert_eq!(r.echoed_header("x-new"), None);
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_operations_change_what_the_client_gets() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &routes(), up.addr));
    let url = weft.url("public");

    let r = request("GET", &format!("{url}/resp/x"), &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-upstream"), None, "{:?}", r.headers);
    assert_eq!(r.header("x-original-type"), Some("application/json"));
    assert_eq!(all(&r, "x-multi"), ["zero", "one"]);
    assert_eq!(r.header("x-status"), Some("200"));
    // Variables see the response as it reached the filter; set_if_absent
    // runs after the rename took content-type away.
    assert_eq!(r.header("x-type"), Some("application/json"));
    assert_eq!(all(&r, "content-type"), ["text/plain"]);
    assert_eq!(r.header("x-absent"), Some("was absent"));
    // The body is untouched.
    assert_eq!(r.json()["path"], "/resp/x");

    let r = request("GET", &format!("{url}/status/503"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-status"), Some("503"));
    assert_eq!(up.hits(), 2);
}

/// Whether `s` has the shape `2026-05-01T12:34:56.789Z`.
fn is_rfc3339_millis(s: &str) -> bool {
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    s.len() == shape.len()
        && s.chars().zip(shape.chars()).all(|(c, p)| match p {
            'd' => c.is_ascii_digit(),
            _ => c == p,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_template_variable_renders() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &routes(), up.addr));
    let url = weft.url("public");
    let addr = weft.addr("public");

    let r = request(
        "POST",
        &format!("{url}/vars/items?q=1&r=%20"),
        &[("x-request-id", "vars-req-1"), ("x-in", "hello")],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let echo = r.json();
    let got = &echo["headers"];
    assert_eq!(got["x-request-id"], "vars-req-1");
    assert_eq!(got["x-id"], "vars-req-1");
    assert_eq!(got["x-peer-ip"], "127.0.0.1");
    let peer_addr = got["x-peer-addr"].as_str().unwrap();
    let port = peer_addr
        .strip_prefix("127.0.0.1:")
        .unwrap_or_else(|| panic!("{peer_addr}"));
    assert!(port.parse::<u16>().unwrap() > 0, "{peer_addr}");
    assert_eq!(got["x-route"], "vars");
    assert_eq!(got["x-cluster"], "backend");
    assert_eq!(got["x-listener"], "public");
    assert_eq!(got["x-method"], "POST");
    assert_eq!(got["x-path"], "/vars/items?q=1&r=%20");
    assert_eq!(got["x-authority"], addr.to_string());
    let start = got["x-start"].as_str().unwrap();
    assert!(is_rfc3339_millis(start), "{start}");
    assert_eq!(got["x-in-copy"], "in=hello;");
    assert_eq!(got["x-absent"], "[]");
    assert_eq!(got["x-percent"], "100% POST");

    assert_eq!(r.header("x-resp-status"), Some("200 via vars"));
    assert_eq!(r.header("x-resp-upstream"), Some("test"));
    assert_eq!(r.header("x-resp-in"), Some("hello"));
    assert_eq!(r.header("x-resp-id"), Some("vars-req-1"));
    assert_eq!(
        r.header("x-resp-start"),
        Some(start),
        "one start time per request"
    );

    // A generated request id is the one the upstream saw.
    let r = request("GET", &format!("{url}/vars/"), &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let generated = r.echoed_header("x-request-id").unwrap();
    assert_eq!(generated.len(), 36, "{generated}");
    assert_eq!(r.echoed_header("x-id").as_deref(), Some(generated.as_str()));
    assert_eq!(r.header("x-resp-id"), Some(generated.as_str()));
    assert_eq!(r.echoed_header("x-in-copy").as_deref(), Some("in=;"));
    let second_start = r.echoed_header("x-start").unwrap();
    assert!(is_rfc3339_millis(&second_start), "{second_start}");
    assert!(second_start.as_str() >= start, "{second_start} < {start}");
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_renders_invalid_is_skipped_and_logged() {
    let up = Upstream::start().await;
    // A route name with a control character: %ROUTE% cannot be a header
    // value. The operation is skipped; the request goes on.
    let routes = r#"      - name: "odd\x01route"
        filters:
          - filter: headers
            config: { request: { set: { x-route: "%ROUTE%", x-ok: "yes" } } }
        cluster: backend"#;
    let weft = start(&config(&filters(), routes, up.addr));
    let r = request("GET", &format!("{}/x", weft.url("public")), &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.echoed_header("x-route"), None);
    assert_eq!(r.echoed_header("x-ok").as_deref(), Some("yes"));
    weft.wait_for_log("request.set.x-route: skipped for this request", 1);
    assert_eq!(up.hits(), 1);
}

#[test]
fn an_invalid_headers_config_is_rejected_with_its_path() {
    let yaml = |headers_config: &str| {
        config(
            &filters(),
            &format!(
                "      - name: api\n        filters:\n          - {{ filter: add-header, config: {{ request: {{ x-a: b }} }} }}\n          - {{ filter: headers, config: {headers_config} }}\n        cluster: backend"
            ),
            "127.0.0.1:9000".parse().unwrap(),
        )
    };
    let cases = [
        (
            r#"{ request: { set: { x-a: "%NOPE%" } } }"#,
            "request.set.x-a: unknown variable `%NOPE%` (known: %REQUEST_ID%,",
        ),
        (
            r#"{ request: { add: { x-a: "%STATUS%" } } }"#,
            "request.add.x-a: %STATUS% is only available in `response` operations",
        ),
        (
            r#"{ response: { set: { x-a: "50% off" } } }"#,
            "response.set.x-a: unterminated variable `% off`: a literal percent sign is written `%%`",
        ),
        (
            r#"{ response: { set: { Content-Length: "1" } } }"#,
            "response.set.Content-Length: `content-length` cannot be changed",
        ),
        (
            r#"{ request: { rename: { x-host: host } } }"#,
            "request.rename.x-host: target: `host` cannot be changed",
        ),
        (
            r#"{ request: { remove: [ok, "bad name"] } }"#,
            "request.remove[1]: invalid header name `bad name`",
        ),
        (
            r#"{ request: { set: { x-a: "a\nb" } } }"#,
            "request.set.x-a: the value contains the control character '\\n'",
        ),
        (
            r#"{ request: { rename: { a: b, b: c } } }"#,
            "request.rename.a: the target `b` is itself renamed",
        ),
        ("{}", "headers needs at least one operation"),
        (
            "{ request: { sett: { x-a: b } } }",
            "invalid config: unknown field `sett`",
        ),
    ];
    for (headers_config, expected) in cases {
        let (ok, out) = validate(bin(), &yaml(headers_config), "weft.yaml", &[]);
        assert!(!ok, "{headers_config} was accepted:\n{out}");
        assert!(
            out.contains(&format!(
                "listeners[0].routes[0].filters[1].config: init rejected the config: {expected}"
            )),
            "{headers_config}:\n{out}"
        );
    }

    // And a valid one passes.
    let (ok, out) = validate(
        bin(),
        &yaml(
            r#"{ request: { set: { x-a: "%REQ(x-b)% 100%%" } }, response: { remove: [server] } }"#,
        ),
        "weft.yaml",
        &[],
    );
    assert!(ok, "{out}");
}
