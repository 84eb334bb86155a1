//! `weft-loadgen` against real servers on loopback: it holds its rate, counts
//! late requests from when they were due, and counts failures.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

/// A keep-alive HTTP/1.1 server on 127.0.0.1 that answers every request with
/// `status` after `delay`. Its threads end with the test process.
fn server(status: u16, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || serve(conn, status, delay));
        }
    });
    addr
}

/// What `serve` answers with `status`.
fn answer(status: u16) -> String {
    format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok")
}

fn serve(mut conn: TcpStream, status: u16, delay: Duration) {
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            thread::sleep(delay);
            if conn.write_all(answer(status).as_bytes()).is_err() {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

fn loadgen(addr: &str, rate: u32, connections: u32, duration: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft-loadgen"))
        .args(["--addr", addr, "--rate", &rate.to_string()])
        .args([
            "--connections",
            &connections.to_string(),
            "--duration",
            duration,
        ])
        .args(["--path", "/x", "--header", "x-test: 1"])
        .output()
        .unwrap()
}

/// The `BENCH key=value …` line as numbers.
fn summary(output: &Output) -> HashMap<String, f64> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .unwrap_or_else(|| panic!("no BENCH line in {stdout:?}"));
    line.split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn it_sends_exactly_the_scheduled_requests() {
    let addr = server(200, Duration::ZERO);
    let out = loadgen(&addr, 400, 4, "1");
    assert!(out.status.success(), "{out:?}");
    let s = summary(&out);
    // 400 req/s for 1 s over 4 connections: 100 each, none lost or added.
    assert_eq!(s["requests"], 400.0);
    for errors in [
        "connect_errors",
        "read_errors",
        "write_errors",
        "status_errors",
        "timeouts",
    ] {
        assert_eq!(s[errors], 0.0, "{errors}");
    }
    let whole = 400 * answer(200).len();
    assert_eq!(s["bytes"], whole as f64, "every answer read whole");
    assert!(s["p50_us"] > 0.0 && s["p50_us"] <= s["p99_us"] && s["p99_us"] <= s["max_us"]);
}

#[test]
fn a_late_request_counts_from_when_it_was_due() {
    // One connection due every 10 ms, answers that take 20 ms: request k is
    // sent about 10·k ms late. Counted from the send, every latency would
    // be about 20 ms; counted from when each was due, they grow to ~500 ms.
    let addr = server(200, Duration::from_millis(20));
    let out = loadgen(&addr, 100, 1, "0.5");
    assert!(out.status.success(), "{out:?}");
    let s = summary(&out);
    assert_eq!(s["requests"], 50.0);
    assert!(s["p50_us"] > 150_000.0, "p50 {} µs", s["p50_us"]);
    assert!(s["max_us"] > 400_000.0, "max {} µs", s["max_us"]);
}

#[test]
fn error_statuses_and_refused_connections_are_counted_and_fail_the_run() {
    let addr = server(503, Duration::ZERO);
    let out = loadgen(&addr, 100, 2, "0.2");
    let s = summary(&out);
    assert_eq!(s["status_errors"], 20.0);
    assert_eq!(s["requests"], 20.0);
    assert!(!out.status.success(), "no request succeeded: the run fails");

    // Nothing listens on a port just freed.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let out = loadgen(&closed, 100, 2, "0.2");
    let s = summary(&out);
    assert!(s["connect_errors"] >= 20.0, "{s:?}");
    assert_eq!(s["requests"], 0.0);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no request succeeded against"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
