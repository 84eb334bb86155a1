//! `weft validate`: one line per error, each naming the path of the field.

use weft_test_harness::process::validate;

use crate::{bin, wasm};

fn base(filters: &str, route_extra: &str, listen: &str, cluster: &str) -> String {
    format!(
        r#"filters:
{filters}
listeners:
  - name: public
    listen: {listen}
    routes:
      - name: api
        match: {{ path_prefix: /api/ }}
        cluster: backend
      - name: rest
        cluster: {cluster}
{route_extra}
clusters:
  backend: {{ endpoints: ["127.0.0.1:9000"] }}
"#
    )
}

fn add_header() -> String {
    format!("  add-header: {{ path: {} }}", wasm("add_header"))
}

#[test]
fn a_valid_config_passes_in_yaml_and_json() {
    let yaml = base(
        &add_header(),
        "        filters: [{ filter: add-header, config: { request: { x-a: b } } }]",
        "127.0.0.1:8080",
        "backend",
    );
    let (ok, out) = validate(crate::bin(), &yaml, "weft.yaml", &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("ok (1 listeners, 2 routes, 1 filters)"),
        "{out}"
    );
    let json = format!(
        r#"{{"filters": {{"add-header": {{"path": {:?}}}}},
            "listeners": [{{"name": "public", "listen": "127.0.0.1:8080",
               "routes": [{{"name": "r", "cluster": "backend", "filters": [{{"filter": "add-header", "config": {{"response": {{"x-a": "b"}}}}}}]}}]}}],
            "clusters": {{"backend": {{"endpoints": ["127.0.0.1:9000"]}}}}}}"#,
        wasm("add_header")
    );
    let (ok, out) = validate(bin(), &json, "weft.json", &[]);
    assert!(ok, "{out}");
}

#[test]
fn unknown_filter_names_its_path() {
    let yaml = base(
        &add_header(),
        "        filters: [{ filter: rate-limt }]",
        "127.0.0.1:8080",
        "backend",
    );
    let (ok, out) = validate(bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok);
    assert!(
        out.contains(r#"listeners[0].routes[1].filters[0].filter: unknown filter "rate-limt" (known: add-header)"#),
        "{out}"
    );
}

#[test]
fn bad_yaml_gives_the_line_number() {
    let yaml = "listeners:\n  - name: public\n    listen: [127.0.0.1\n";
    let (ok, out) = validate(bin(), yaml, "weft.yaml", &[]);
    assert!(!ok);
    assert!(out.contains("line 3") || out.contains("line 4"), "{out}");
}

#[test]
fn unknown_field_names_its_path_and_line() {
    let yaml = base(
        "  {}",
        "        timeout_msec: 100",
        "127.0.0.1:8080",
        "backend",
    );
    let (ok, out) = validate(bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok);
    assert!(
        out.contains("listeners[0].routes[1].timeout_msec: unknown field `timeout_msec`"),
        "{out}"
    );
    assert!(out.contains("line 12"), "{out}");
}

#[test]
fn missing_cluster_and_bad_listen_address_are_both_reported() {
    let yaml = base("  {}", "", "127.0.0.1:99999", "nowhere");
    let (ok, out) = validate(bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        out.contains(r#"listeners[0].listen: invalid socket address "127.0.0.1:99999""#),
        "{out}"
    );
    assert!(
        out.contains(
            r#"listeners[0].routes[1].cluster: unknown cluster "nowhere" (known: backend)"#
        ),
        "{out}"
    );
}

#[test]
fn modules_that_are_not_weft_filters_are_refused() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("text.wasm", b"not wasm at all", "not a WebAssembly file"),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0",
            "a core WebAssembly module, not a component",
        ),
        (
            "empty-component.wasm",
            b"\0asm\x0d\0\x01\0",
            "not a component of the weft:filter world",
        ),
    ];
    for (file, bytes, expected) in cases {
        let yaml = base(
            &format!("  bad: {{ path: {file} }}"),
            "        filters: [{ filter: bad }]",
            "127.0.0.1:8080",
            "backend",
        );
        let (ok, out) = validate(bin(), &yaml, "weft.yaml", &[(file, bytes)]);
        assert!(!ok, "{file}");
        assert!(out.contains("filters.bad.path: "), "{out}");
        assert!(out.contains(expected), "{file}: {out}");
        assert_eq!(
            out.lines().count(),
            1,
            "the chain entry is not reported again: {out}"
        );
    }
    let yaml = base(
        "  gone: { path: missing.wasm }",
        "",
        "127.0.0.1:8080",
        "backend",
    );
    let (ok, out) = validate(bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok);
    assert!(out.contains("filters.gone.path: "), "{out}");
    assert!(
        out.contains("missing.wasm: cannot read: No such file"),
        "{out}"
    );
}

#[test]
fn a_filter_config_rejected_by_init_names_the_chain_entry() {
    let filters = format!("  misbehave: {{ path: {} }}", wasm("misbehave_filter"));
    let yaml = base(
        &filters,
        "        filters: [{ filter: misbehave, config: { do: trap, init_error: \"keys must not be empty\" } }]",
        "127.0.0.1:8080",
        "backend",
    );
    let (ok, out) = validate(bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok);
    assert!(
        out.contains("listeners[0].routes[1].filters[0].config: init rejected the config: keys must not be empty"),
        "{out}"
    );
    let add = add_header();
    let yaml = base(
        &add,
        "        filters: [{ filter: add-header, config: { request: { \"bad header\": x } } }]",
        "127.0.0.1:8080",
        "backend",
    );
    let (ok, out) = validate(bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok);
    assert!(
        out.contains("listeners[0].routes[1].filters[0].config: init rejected the config"),
        "{out}"
    );
    assert!(out.contains("bad header"), "{out}");
}

/// `init` has no request or response: the contract's functions on them trap
/// there, and the error says so.
#[test]
fn a_filter_reading_the_response_in_init_is_rejected_saying_why() {
    let filters = format!("  misbehave: {{ path: {} }}", wasm("misbehave_filter"));
    let yaml = base(
        &filters,
        "        filters: [{ filter: misbehave, config: { do: misuse, phase: init } }]",
        "127.0.0.1:8080",
        "backend",
    );
    let (ok, out) = validate(bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok);
    assert!(
        out.contains("listeners[0].routes[1].filters[0].config: init"),
        "{out}"
    );
    assert!(
        out.contains("response.status called outside a phase: there is no response in init"),
        "{out}"
    );
}

#[test]
fn a_component_built_for_another_contract_version_is_refused_naming_both() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/hello-filter-contract-0.1.0.wasm");
    let yaml = base(
        &format!("  old: {{ path: {} }}", fixture.display()),
        "        filters: [{ filter: old }]",
        "127.0.0.1:8080",
        "backend",
    );
    let (ok, out) = validate(bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok);
    assert!(
        out.contains("filters.old.path: ")
            && out.contains(
                "built for contract weft:filter@0.1.0, but this proxy serves weft:filter@0.4.0"
            ),
        "{out}"
    );
}
