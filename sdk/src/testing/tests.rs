//! Tests of the testing host itself, with small filters written here.

use std::time::Duration;

use serde::Deserialize;

use super::*;
use crate::log::Level;
use crate::shared::{self, SharedError};
use crate::{Action, Filter, LocalResponse, Phases, Request, Response, metrics, property};

/// A filter whose phases do what its config's `mode` says.
struct Probe {
    mode: String,
    phases: Phases,
    /// A property set registered in `new`.
    set: property::PropertySet,
}

#[derive(Deserialize)]
struct ProbeConfig {
    mode: String,
    #[serde(default)]
    retry: bool,
}

impl Filter for Probe {
    type Config = ProbeConfig;

    fn new(config: ProbeConfig) -> Result<Self, String> {
        if config.mode == "refuse" {
            return Err("refused".into());
        }
        crate::info!("new {}", config.mode);
        let mut phases = Phases::REQUEST_HEADERS
            | Phases::REQUEST_BODY
            | Phases::RESPONSE_HEADERS
            | Phases::RESPONSE_BODY
            | Phases::DONE;
        if config.retry {
            phases |= Phases::RETRY;
        }
        Ok(Probe {
            mode: config.mode,
            phases,
            set: property::PropertySet::new(&["request.method", "route.name", "response.status"]),
        })
    }

    fn phases(&self) -> Phases {
        self.phases
    }

    fn on_request_headers(&mut self, req: &Request) -> Action {
        match self.mode.as_str() {
            "rewrite" => {
                req.set_header("x-added", "1");
                req.append_header("x-added", "2");
                req.remove_header("x-gone");
                req.set_path("/rewritten?q=1");
                req.set_timeout(Duration::from_millis(250));
                Action::Continue
            }
            "deny" => LocalResponse::new(403)
                .header("content-type", "text/plain")
                .body("denied")
                .into(),
            "bad-respond" => LocalResponse::new(200).header("bad name", "x").into(),
            "managed" => {
                req.set_header("content-length", "7");
                Action::Continue
            }
            "set-body-early" => {
                req.set_body("x");
                Action::Continue
            }
            "retry-early" => Action::Retry {
                delay: Duration::ZERO,
            },
            "count" => {
                let n = self.count();
                Action::respond(200, n.to_string())
            }
            _ => Action::Continue,
        }
    }

    fn on_request_body(&mut self, req: &Request) -> Action {
        let body = req.body().expect("the body phase has the body");
        req.set_body([b"<", body.as_slice(), b">"].concat());
        Action::Continue
    }

    fn on_response_headers(&mut self, req: &Request, resp: &Response) -> Action {
        match self.mode.as_str() {
            "write-request-late" => req.set_header("x-late", "1"),
            "retry" if resp.status() == 503 => {
                return Action::Retry {
                    delay: Duration::from_millis(10),
                };
            }
            _ => {
                assert_eq!(req.body(), None, "no body outside the body phase");
                resp.set_status(resp.status() + 1);
                resp.set_header("x-seen", &req.path());
                let values = self.set.read();
                resp.set_header("x-props", &format!("{values:?}"));
            }
        }
        Action::Continue
    }

    fn on_response_body(&mut self, _req: &Request, resp: &Response) -> Action {
        let body = resp.body().expect("the body phase has the body");
        resp.set_body(body.to_ascii_uppercase());
        Action::Continue
    }

    fn on_done(&mut self, req: &Request, resp: &Response) {
        metrics::counter_add("done_total", &[("status", &resp.status().to_string())], 1);
        metrics::histogram_observe("elapsed_seconds", &[], {
            let ns: u64 = property::elapsed_nanos().unwrap_or(0);
            ns as f64 / 1e9
        });
        crate::warn!("done {}", req.method());
        if self.mode == "write-done" {
            resp.set_header("x-done", "1");
        }
    }
}

impl Probe {
    /// Adds one to shared key `n` with compare-and-swap.
    fn count(&self) -> u64 {
        loop {
            let (n, cas) = shared::get("n").map_or((0, 0), |e| {
                (u64::from_le_bytes(e.value.try_into().unwrap()), e.cas)
            });
            match shared::set("n", (n + 1).to_le_bytes(), cas) {
                Ok(_) => return n + 1,
                Err(SharedError::CasMismatch) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    }
}

fn probe(host: &TestHost, mode: &str) -> TestFilter<Probe> {
    host.init_json::<Probe>(serde_json::json!({ "mode": mode }))
        .unwrap()
}

#[test]
fn init_parses_the_config_like_the_proxy() {
    let host = TestHost::new();
    let err = host.init::<Probe>(r#"{"mode": 7}"#).unwrap_err();
    assert!(
        err.starts_with("invalid config: invalid type: integer `7`"),
        "{err}"
    );
    let err = host.init::<Probe>("null").unwrap_err();
    assert_eq!(
        err,
        "this filter needs a config, but none was given (missing field `mode`)"
    );
    assert_eq!(
        host.init::<Probe>(r#"{"mode": "refuse"}"#).unwrap_err(),
        "refused"
    );
    let filter = probe(&host, "plain");
    assert!(!filter.phases().contains(Phases::RETRY));
    assert!(host.logged(Level::Info, "new plain"));
}

#[test]
fn request_changes_show_in_the_request_sent_upstream() {
    let host = TestHost::new();
    let mut filter = probe(&host, "rewrite");
    let mut ex = filter.request(
        TestRequest::get("/a")
            .header("X-Gone", "bye")
            .header("x-added", "old"),
    );
    assert_eq!(ex.on_request_headers(), Action::Continue);
    let sent = ex.request();
    assert_eq!(sent.path, "/rewritten?q=1");
    assert_eq!(sent.header_all("x-added"), ["1", "2"]);
    assert_eq!(sent.header("x-gone"), None);
    assert_eq!(sent.timeout_ms, Some(250));
    assert!(ex.response().is_none());
}

#[test]
fn bodies_are_readable_and_replaceable_in_their_phases_only() {
    let host = TestHost::new();
    let mut filter = probe(&host, "plain");
    let mut ex = filter.request(TestRequest::post("/").body("abc"));
    ex.on_request_headers();
    ex.on_request_body();
    assert_eq!(ex.request().body, b"<abc>");
    assert_eq!(ex.request().header("content-length"), Some("5"));
    ex.upstream(TestResponse::new(200).body("hello"));
    ex.on_response_headers();
    ex.on_response_body();
    let response = ex.response().unwrap();
    assert_eq!(response.status, 201);
    assert_eq!(response.body_text(), "HELLO");
    assert_eq!(response.header("x-seen"), Some("/"));
    assert_eq!(
        response.header("x-props"),
        Some(r#"[Some("POST"), Some("route"), Some("201")]"#)
    );
}

#[test]
fn a_local_response_is_what_the_client_gets() {
    let host = TestHost::new();
    let mut filter = probe(&host, "deny");
    let mut ex = filter.request(TestRequest::get("/"));
    let action = ex.on_request_headers();
    let Action::Respond(local) = action else {
        panic!("{action:?}")
    };
    assert_eq!(local.status, 403);
    let response = ex.response().unwrap();
    assert_eq!(
        (response.status, response.body_text().as_str()),
        (403, "denied")
    );
    assert_eq!(response.header("content-length"), Some("6"));
    assert_eq!(response.header("content-type"), Some("text/plain"));
}

fn panic_message(run: impl FnOnce()) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_err();
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn what_the_proxy_refuses_panics() {
    let host = TestHost::new();
    let cases = [
        (
            "write-request-late",
            "request.set-header called in on-response-headers: the request is read-only",
        ),
        ("managed", "\"content-length\" is managed by the proxy"),
        (
            "set-body-early",
            "request.set-body called in on-request-headers: only allowed in on-request-body",
        ),
        (
            "bad-respond",
            "on-request-headers: respond: invalid header name",
        ),
        (
            "retry-early",
            "on-request-headers: retry is only allowed in on-response-headers",
        ),
        (
            "retry",
            "on-response-headers: retry from a filter whose phases do not include `retry`",
        ),
        (
            "write-done",
            "response.set-header called in on-done: the response is already sent",
        ),
    ];
    for (mode, expected) in cases {
        let message = panic_message(|| {
            let mut filter = probe(&host, mode);
            let mut ex = filter.request(TestRequest::get("/"));
            ex.on_request_headers();
            ex.upstream(TestResponse::new(503));
            ex.on_response_headers();
            ex.on_done();
        });
        assert!(message.contains(expected), "{mode}: {message}");
    }
    let message = panic_message(|| {
        crate::time::now_unix_nanos();
    });
    assert!(
        message.contains("called outside a filter call"),
        "{message}"
    );
}

#[test]
fn a_phase_left_out_of_phases_is_not_called() {
    struct Quiet;
    impl Filter for Quiet {
        type Config = ();
        const PHASES: Phases = Phases::REQUEST_HEADERS;
        fn new(_: ()) -> Result<Self, String> {
            Ok(Quiet)
        }
    }
    let host = TestHost::new();
    let mut filter = host.init::<Quiet>("null").unwrap();
    let message = panic_message(|| {
        let mut ex = filter.request(TestRequest::get("/"));
        ex.on_request_headers();
        ex.upstream(TestResponse::new(200));
        ex.on_response_headers();
    });
    assert!(
        message.contains("the proxy does not call on-response-headers of this filter"),
        "{message}"
    );
}

#[test]
fn a_retry_discards_the_response_and_the_next_attempt_is_counted() {
    let host = TestHost::new();
    let mut filter = host
        .init_json::<Probe>(serde_json::json!({"mode": "retry", "retry": true}))
        .unwrap();
    let mut ex = filter.request(TestRequest::get("/"));
    ex.upstream(TestResponse::new(503));
    assert_eq!(
        ex.on_response_headers(),
        Action::Retry {
            delay: Duration::from_millis(10)
        }
    );
    assert!(ex.response().is_none());
    ex.upstream(TestResponse::new(200));
    assert_eq!(ex.on_response_headers(), Action::Continue);
    assert_eq!(ex.response().unwrap().status, 201);
}

#[test]
fn shared_state_has_the_hosts_compare_and_swap() {
    let host = TestHost::new();
    let mut a = probe(&host, "count");
    let mut b = probe(&host, "count");
    for (use_a, expected) in [(true, "1"), (false, "2"), (true, "3")] {
        let filter = if use_a { &mut a } else { &mut b };
        let mut ex = filter.request(TestRequest::get("/"));
        ex.on_request_headers();
        assert_eq!(ex.response().unwrap().body_text(), expected);
    }
    let entry = host.shared("n").unwrap();
    assert_eq!(entry.value, 3u64.to_le_bytes());
    host.set_shared("n", 10u64.to_le_bytes());
    assert_ne!(host.shared("n").unwrap().cas, entry.cas);
    assert_eq!(host.shared_keys(), ["n"]);

    use crate::sys::host::SharedError as Refused;
    let mut state = super::shared::Shared::default();
    let v1 = state.set("k", b"1", 0).unwrap();
    assert!(matches!(state.set("k", b"x", 0), Err(Refused::CasMismatch)));
    let v2 = state.set("k", b"2", v1).unwrap();
    assert_ne!(v1, v2);
    assert!(matches!(state.delete("k", v1), Err(Refused::CasMismatch)));
    assert!(state.delete("k", v2).is_ok());
    assert!(state.delete("k", 0).is_ok());
    assert!(matches!(state.delete("k", 5), Err(Refused::CasMismatch)));
    assert!(matches!(
        state.set("k", &[0; 64 * 1024 + 1], 0),
        Err(Refused::TooLarge)
    ));
    state.max_keys = 1;
    state.set("a", b"", 0).unwrap();
    assert!(matches!(state.set("b", b"", 0), Err(Refused::TooLarge)));
}

#[test]
fn metrics_logs_and_clocks() {
    let host = TestHost::new();
    let mut filter = probe(&host, "plain");
    let mut ex = filter.request(TestRequest::get("/"));
    ex.on_request_headers();
    ex.advance(Duration::from_millis(1500));
    ex.upstream(TestResponse::new(200));
    ex.on_response_headers();
    ex.on_done();
    assert_eq!(host.counter("done_total", &[("status", "201")]), 1);
    assert_eq!(host.counter("done_total", &[("status", "500")]), 0);
    assert_eq!(host.histogram("elapsed_seconds", &[]), [1.5]);
    assert!(host.logged(Level::Warn, "done GET"));

    host.set_log_level(Level::Error);
    let mut ex = filter.request(TestRequest::get("/"));
    ex.local_response(TestResponse::new(404));
    ex.on_done();
    assert_eq!(host.counter("done_total", &[("status", "404")]), 1);
    assert_eq!(
        host.logs()
            .iter()
            .filter(|l| l.level == Level::Warn)
            .count(),
        1
    );

    let mut metrics = super::metrics::Metrics::default();
    metrics.counter_add("hits", &[("b", "2"), ("a", "1")], 2);
    metrics.counter_add("hits", &[("a", "1"), ("b", "2")], 3);
    let ask = [("a", "1"), ("b", "2")];
    assert_eq!(metrics.counter("hits", &ask), 5);
    let message = panic_message(move || metrics.histogram_observe("hits", &[], 1.0));
    assert_eq!(message, "metric \"hits\" is a counter, not a histogram");
    let message = panic_message(|| {
        super::metrics::Metrics::default().counter_add("x", &[("le", "1")], 1);
    });
    assert!(
        message.contains("label name \"le\" is reserved"),
        "{message}"
    );
}

#[test]
fn randomness_is_deterministic_and_per_instance() {
    fn numbers(seed: u64) -> Vec<u64> {
        let host = TestHost::with_seed(seed);
        let mut out = Vec::new();
        for _ in 0..2 {
            let mut filter = probe(&host, "plain");
            let mut ex = filter.request(TestRequest::get("/"));
            ex.on_request_headers();
            // Reading through a phase keeps the instance's generator.
            out.push(filter.inner().mode.len() as u64);
            let host = filter.host().clone();
            let call = super::current::Call {
                host: host.state.clone(),
                instance: Default::default(),
                exchange: None,
                phase: super::current::Phase::Init,
            };
            let (n, _) = super::current::enter(call, crate::random_u64);
            out.push(n);
        }
        out
    }
    assert_eq!(numbers(1), numbers(1));
    assert_ne!(numbers(1), numbers(2));
    let n = numbers(1);
    assert_ne!(n[1], n[3], "instances are seeded apart");
}

#[test]
fn callouts_are_answered_by_the_table_then_the_handler() {
    use crate::http::{self, HttpRequest, HttpResponse};
    let host = TestHost::new();
    host.http_response(
        "http://keys/jwks",
        HttpResponse {
            status: 200,
            headers: vec![],
            body: b"{}".to_vec(),
        },
    );
    let call = |url: &str| {
        let state = host.state.clone();
        let call = super::current::Call {
            host: state,
            instance: Default::default(),
            exchange: None,
            phase: super::current::Phase::Init,
        };
        super::current::enter(call, || http::call(&HttpRequest::get(url).header("a", "b"))).0
    };
    assert_eq!(call("http://keys/jwks").unwrap().body, b"{}");
    let err = call("http://other:81/x").unwrap_err();
    assert!(err.starts_with("other:81 is not allowed"), "{err}");
    host.on_http(|request| Err(format!("cannot connect to {}", request.url)));
    assert_eq!(
        call("http://other:81/x").unwrap_err(),
        "cannot connect to http://other:81/x"
    );
    let calls = host.http_calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].headers, [("a".to_string(), "b".to_string())]);
}
