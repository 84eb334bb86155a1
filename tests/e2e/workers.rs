//! Worker threads: every worker serves its share of the connections of
//! every listener, and a bad worker count is refused before serving.

use std::process::Command;

use weft_test_harness::{Upstream, raw_status};

use crate::{bin, config, start_workers};

/// Each connection is new, so the kernel spreads them over the workers'
/// sockets (`SO_REUSEPORT`): a worker that did not serve its socket would
/// leave its share unanswered and fail the 10 s read of `raw_status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_answers_its_share_of_connections() {
    const CONNECTIONS: usize = 48;
    let up = Upstream::start().await;
    let routes = "      - { name: all, cluster: backend }";
    let yaml = config("  {}", routes, up.addr);
    let weft = start_workers(&yaml, 4);
    assert_eq!(
        weft.log_count("workers=4"),
        1,
        "the listening line gives the worker count:\n{}",
        weft.log_text()
    );
    let addr = weft.addr("public");
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let request = format!("GET /w/{i} HTTP/1.1\r\nhost: w\r\nconnection: close\r\n\r\n");
            tokio::spawn(async move { raw_status(addr, request.as_bytes()).await })
        })
        .collect();
    for task in tasks {
        let status = task.await.unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
    }
    assert_eq!(up.hits(), CONNECTIONS);
}

#[test]
fn zero_workers_is_refused_with_the_option_named() {
    let out = Command::new(bin())
        .args(["run", "--config", "does-not-matter.yaml", "--workers", "0"])
        .output()
        .expect("run weft");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--workers"), "{stderr}");
}
