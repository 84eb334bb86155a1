//! `weft filter test`: a built component run in the proxy in-process
//! against YAML cases; one line per case, exit 1 when one fails.

use std::path::Path;
use std::process::{Command, Output};

use weft_test_harness::process::temp_dir;

use crate::{bin, wasm};

/// Runs `weft filter test` and returns its exit code and stdout.
pub fn filter_test(component: &str, config: Option<&Path>, cases: &Path) -> (i32, String, Output) {
    let mut cmd = Command::new(bin());
    cmd.args(["filter", "test", component]).arg(cases);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    let output = cmd.output().expect("run weft filter test");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code().unwrap_or(-1), stdout, output)
}

#[test]
fn the_hello_filter_example_passes_its_case_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = root.join("examples/hello-filter");
    let (code, stdout, output) = filter_test(
        &wasm("hello_filter"),
        Some(&example.join("config.json")),
        &example.join("cases.yaml"),
    );
    assert_eq!(
        code,
        0,
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("ok  /hello is answered by the filter\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok  other paths go upstream untouched\n"),
        "{stdout}"
    );
    assert!(stdout.ends_with("3 passed, 0 failed\n"), "{stdout}");
}

#[test]
fn built_in_filters_pass_and_fail_cases_by_what_they_do() {
    let dir = temp_dir("filter-test");
    let config = dir.join("api-key.json");
    std::fs::write(
        &config,
        r#"{ "keys": [{ "key": "secret", "consumer": "alice" }] }"#,
    )
    .unwrap();
    let cases = dir.join("cases.yaml");
    std::fs::write(
        &cases,
        r#"cases:
  - name: the right key reaches the upstream with the consumer
    request: { path: /api, headers: { x-api-key: secret }, client: 127.0.0.5 }
    expect:
      status: 200
      upstream: true
      upstream_headers: { x-consumer: alice }
      upstream_headers_absent: [x-api-key]
  - name: no key is 401
    request: { path: /api }
    expect: { status: 401, upstream: false }
  - name: a wrong expectation fails and says why
    request: { path: /api, headers: { x-api-key: wrong } }
    expect: { status: 200 }
  - name: a header the filter does not set
    request: { path: /api, headers: { x-api-key: secret } }
    expect: { upstream_headers: { x-team: blue } }
"#,
    )
    .unwrap();
    let (code, stdout, output) = filter_test(&wasm("api_key"), Some(&config), &cases);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0], "ok  the right key reaches the upstream with the consumer",
        "{stdout}\n{stderr}"
    );
    assert_eq!(lines[1], "ok  no key is 401");
    assert_eq!(
        lines[2],
        "FAIL a wrong expectation fails and says why: expected status 200, got 403"
    );
    assert_eq!(
        lines[3],
        "FAIL a header the filter does not set: expected upstream header x-team: \"blue\", got none"
    );
    assert_eq!(lines[4], "2 passed, 2 failed");
}

/// The upstream answers per attempt: a retrying filter's second attempt is
/// seen, and counted.
#[test]
fn a_retry_is_an_attempt_of_its_own() {
    let dir = temp_dir("filter-test-retry");
    let config = dir.join("retry.yaml");
    std::fs::write(
        &config,
        "max_attempts: 3\nretry_on: [gateway-error]\nbackoff: { base_ms: 1, max_ms: 2 }\nbudget: null\n",
    )
    .unwrap();
    let cases = dir.join("cases.yaml");
    std::fs::write(
        &cases,
        r#"cases:
  - name: a 503 then a 200
    request: { path: /r }
    upstream: [{ status: 503 }, { status: 200, body: second }]
    expect: { attempts: 2, status: 200, body: second }
  - name: no retry on success
    request: { path: /r }
    upstream: { status: 200 }
    expect: { attempts: 1 }
  - name: a wrong count
    request: { path: /r }
    upstream: [{ status: 502 }, { status: 502 }, { status: 502 }]
    expect: { attempts: 2 }
"#,
    )
    .unwrap();
    let (code, stdout, output) = filter_test(&wasm("retry"), Some(&config), &cases);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "ok  a 503 then a 200", "{stdout}\n{stderr}");
    assert_eq!(lines[1], "ok  no retry on success", "{stdout}");
    assert_eq!(
        lines[2], "FAIL a wrong count: expected upstream attempts 2, got 3",
        "{stdout}"
    );
}

#[test]
fn a_case_file_with_a_typo_is_refused_before_anything_runs() {
    let dir = temp_dir("filter-test-typo");
    let cases = dir.join("cases.yaml");
    std::fs::write(
        &cases,
        "cases:\n  - name: a\n    request: { path: / }\n    expect: { stauts: 200 }\n",
    )
    .unwrap();
    let (code, stdout, output) = filter_test(&wasm("hello_filter"), None, &cases);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("unknown field `stauts`"), "{stderr}");
}
