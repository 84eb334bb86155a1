//! `weft filter test FILTER.wasm [--config FILE] CASES.yaml`: the real
//! proxy, in-process — the same snapshot build, engine, deadlines, memory
//! cap and phases as `weft run` — with one listener on 127.0.0.1:0 whose
//! one route chains the filter, in front of a loopback upstream that
//! answers each case's response. Each case is a real HTTP request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use bytes::Bytes;
use clap::Args;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use weft::config;
use weft::filter::FilterRuntime;
use weft::listener::Drain;
use weft::proxy::Proxy;
use weft::snapshot::Snapshot;
use weft::telemetry::Registry;

use super::cases::{Case, CaseFile, Outcome, Upstream, Values, check};
use super::upstream::TestUpstream;

/// The names a filter sees as properties in `weft filter test`.
pub const LISTENER: &str = "filter-test";
pub const ROUTE: &str = "test";
pub const CLUSTER: &str = "upstream";
/// How long one case may take, from connecting to the last byte.
const CASE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct TestArgs {
    /// The filter component (`.wasm`).
    filter: PathBuf,
    /// The case file (YAML).
    cases: PathBuf,
    /// The filter's config: a JSON file (or YAML, unless it ends in .json).
    /// Absent: no config (`null`).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The deadline of one phase call, as `filters.<name>.deadline_ms`.
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// The memory cap of one instance, as `filters.<name>.max_memory_mib`.
    #[arg(long)]
    max_memory_mib: Option<u64>,
    /// The proxy's log (the filter's lines included): e.g. `warn`, `info`,
    /// `off`. Written to stderr.
    #[arg(long, default_value = "warn")]
    log_level: String,
}

pub fn main(args: TestArgs) -> ExitCode {
    weft::logging::init(Some(&args.log_level), weft::logging::LogFormat::Text);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(&args)));
    weft::logging::flush();
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("weft filter test: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs every case; returns how many failed.
async fn run(args: &TestArgs) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(&args.cases)
        .with_context(|| format!("cannot read {}", args.cases.display()))?;
    let file: CaseFile = serde_yaml::from_str(&text)
        .with_context(|| format!("{}: not a case file", args.cases.display()))?;
    if file.cases.is_empty() {
        bail!("{}: no cases", args.cases.display());
    }
    for case in &file.cases {
        check_case(case).with_context(|| format!("case {:?}", case.name))?;
    }
    let filter_config = match &args.config {
        None => serde_json::Value::Null,
        Some(path) => read_config(path)?,
    };
    let upstream = TestUpstream::start()
        .await
        .context("cannot start the upstream")?;
    let filter = args
        .filter
        .canonicalize()
        .with_context(|| format!("{}", args.filter.display()))?;
    let name = filter
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("filter")
        .to_string();
    let mut module = serde_json::json!({ "path": filter });
    if let Some(ms) = args.deadline_ms {
        module["deadline_ms"] = ms.into();
    }
    if let Some(mib) = args.max_memory_mib {
        module["max_memory_mib"] = mib.into();
    }
    let config_json = serde_json::json!({
        "filters": { &name: module },
        "listeners": [{
            "name": LISTENER,
            "listen": "127.0.0.1:0",
            "routes": [{
                "name": ROUTE,
                "filters": [{ "filter": &name, "config": filter_config }],
                "cluster": CLUSTER,
                "error_details": true,
            }],
        }],
        "clusters": { CLUSTER: { "endpoints": [upstream.addr.to_string()] } },
    });
    let config = config::parse(&config_json.to_string(), true)
        .map_err(|e| anyhow::anyhow!("the generated config: {e}"))?;
    let metrics = Arc::new(Registry::default());
    let runtime = FilterRuntime::new(metrics.clone())
        .map_err(|e| anyhow::anyhow!("cannot start the filter runtime: {e}"))?;
    let base_dir = std::env::current_dir()?;
    let snapshot = Snapshot::build(&config, &base_dir, &runtime).map_err(|errors| {
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|e| {
                e.to_string()
                    .replace("listeners[0].routes[0].filters[0].config", "config")
            })
            .collect();
        anyhow::anyhow!("the filter cannot be loaded:\n  {}", lines.join("\n  "))
    })?;
    let limits = snapshot.config.limits.clone();
    weft::http::body::configure(&limits);
    let addr = snapshot.listeners[0].addr;
    let proxy = Arc::new(Proxy {
        snapshot: ArcSwap::from_pointee(snapshot),
        metrics,
    });
    let sockets = weft::listener::bind(addr, 1).context("cannot bind the listener")?;
    let addr = sockets[0].local_addr()?;
    let drain = Drain::default();
    weft::worker::start(vec![sockets], &proxy, &limits, &drain)
        .context("cannot start the worker thread")?;

    let mut failed = 0;
    let total = file.cases.len();
    for case in file.cases {
        let name = case.name.clone();
        let result = run_case(case, addr, &upstream).await;
        match result {
            Ok(()) => println!("ok  {name}"),
            Err(why) => {
                failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
    println!("{} passed, {failed} failed", total - failed);
    Ok(failed)
}

/// A filter config file: JSON when it ends in `.json`, else YAML.
fn read_config(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))
    } else {
        serde_yaml::from_str(&text).with_context(|| format!("{}", path.display()))
    }
}

/// What a case gives that HTTP cannot carry is refused before anything runs.
fn check_case(case: &Case) -> anyhow::Result<()> {
    http::Method::from_bytes(case.request.method.as_bytes())
        .with_context(|| format!("invalid method {:?}", case.request.method))?;
    if !case.request.path.starts_with('/') {
        bail!("request.path {:?} must start with /", case.request.path);
    }
    http::uri::PathAndQuery::try_from(case.request.path.as_str())
        .with_context(|| format!("invalid request.path {:?}", case.request.path))?;
    check_headers("request.headers", &case.request.headers)?;
    if let Some(ip) = case.request.client
        && !ip.is_loopback()
    {
        bail!("request.client {ip} is not a loopback address (127.0.0.0/8, ::1)");
    }
    for n in 0..attempts(&case.upstream) {
        let r = case.upstream.response(n);
        if !(200..=999).contains(&r.status) {
            bail!("upstream status {} is not a final status", r.status);
        }
        check_headers("upstream.headers", &r.headers)?;
    }
    Ok(())
}

fn attempts(upstream: &Upstream) -> usize {
    match upstream {
        Upstream::One(_) => 1,
        Upstream::PerAttempt(list) => list.len().max(1),
    }
}

fn check_headers(at: &str, headers: &BTreeMap<String, Values>) -> anyhow::Result<()> {
    for (name, values) in headers {
        HeaderName::from_bytes(name.as_bytes())
            .with_context(|| format!("{at}: invalid header name {name:?}"))?;
        for v in values.all() {
            HeaderValue::from_str(v).with_context(|| format!("{at}.{name}: invalid value"))?;
        }
    }
    Ok(())
}

async fn run_case(
    case: Case,
    proxy: std::net::SocketAddr,
    up: &TestUpstream,
) -> Result<(), String> {
    up.begin(Arc::new(case.upstream));
    let request = &case.request;
    let exchange = async {
        let socket = match proxy {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(|e| format!("cannot open a socket: {e}"))?;
        if let Some(ip) = request.client {
            socket
                .bind((ip, 0).into())
                .map_err(|e| format!("cannot send from {ip}: {e}"))?;
        }
        let stream = socket
            .connect(proxy)
            .await
            .map_err(|e| format!("cannot connect to the proxy: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let mut builder = Request::builder()
            .method(request.method.as_str())
            .uri(request.path.as_str())
            .header(http::header::HOST, "filter-test.local");
        for (name, values) in &request.headers {
            for v in values.all() {
                builder = builder.header(name.as_str(), v);
            }
        }
        let body = Bytes::from(request.body.clone().unwrap_or_default());
        let req = builder
            .body(Full::new(body))
            .map_err(|e| format!("invalid request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("the proxy did not answer: {e}"))?;
        let (head, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("the response body broke: {e}"))?
            .to_bytes()
            .to_vec();
        Ok::<_, String>((head, body))
    };
    let (head, body) = tokio::time::timeout(CASE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {} s", CASE_TIMEOUT.as_secs()))??;
    let failure = failure_report(head.status.as_u16(), &body);
    let outcome = Outcome {
        status: head.status.as_u16(),
        headers: head.headers,
        body,
        received: up.received(),
        failure,
    };
    check(&case.expect, &outcome)
}

/// The report of a filter failure, from the 500's `details`: the message,
/// then the backtrace on following lines.
fn failure_report(status: u16, body: &[u8]) -> Option<String> {
    if status != 500 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    if json["error"] != "filter_failed" {
        return None;
    }
    let details = &json["details"];
    let mut report = json["message"].as_str().unwrap_or_default().to_string();
    let skipped = details["frames_skipped"].as_u64().unwrap_or(0);
    let frames = details["backtrace"].as_array().cloned().unwrap_or_default();
    if !frames.is_empty() {
        report.push_str("\n    backtrace");
        if skipped > 0 {
            report.push_str(&format!(" ({skipped} panic frames skipped)"));
        }
        report.push(':');
        for (i, frame) in frames.iter().enumerate() {
            report.push_str(&format!("\n      #{i} {}", frame.as_str().unwrap_or("?")));
        }
        if let Some(n) = details["frames_omitted"].as_u64().filter(|n| *n > 0) {
            report.push_str(&format!("\n      … {n} more"));
        }
    }
    Some(report)
}
