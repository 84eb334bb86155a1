//! What the control plane refuses, each refusal shown where the operator
//! looks (the command's output, `weft status`) with nothing stored and the
//! proxies serving what they served.

use weft_test_harness::Upstream;
use weft_test_harness::components::{
    filter_component, filter_component_of_contract, other_world_component, padded, sha256_hex,
};
use weft_test_harness::process::validate;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_pushes_say_why_and_store_nothing() {
    let cp = control(&["--max-module-mib", "1"]);
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "garbage",
            b"this is not wasm at all".to_vec(),
            "not a WebAssembly file",
        ),
        (
            "core",
            b"\0asm\x01\0\0\0".to_vec(),
            "a core WebAssembly module, not a component",
        ),
        (
            "other-world",
            other_world_component(),
            "not a component of the weft:filter world",
        ),
        (
            "future",
            filter_component_of_contract("0.9.0"),
            "built for contract weft:filter@0.9.0, but the mesh serves weft:filter@0.4.0",
        ),
        (
            "huge",
            padded(&filter_component(), 2 << 20, "huge"),
            "over the control plane's cap of 1048576 bytes",
        ),
    ];
    for (name, bytes, why) in cases {
        let out = push(&cp, name, &bytes);
        assert!(!out.success(), "{name}: {out:?}");
        assert!(
            out.stderr.contains(why),
            "{name}: expected {why:?}: {out:?}"
        );
        assert!(out.stdout.is_empty(), "{name}: {out:?}");
    }
    assert_eq!(modules(&cp), Vec::<Value>::new());
    assert_eq!(files_in(&cp.data.join("modules")), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_cut_off_mid_upload_stores_nothing() {
    let cp = control(&["--max-module-mib", "256"]);
    let size = 200usize << 20;
    let path = file("cut.wasm", &padded(&filter_component(), size, "cut"));
    let before = cp.rss_kib().expect("control plane running");
    let mut push = tokio::task::block_in_place(|| {
        cp.spawn_command(&["push", &path.display().to_string(), "--name", "cut"])
    });
    // Killed once 32 MiB of the upload are in, long before its 200 MiB.
    mid_upload(&cp, &mut push, before, 32 << 10, size);
    push.kill().expect("kill weft push");
    push.wait().expect("reap weft push");
    std::fs::remove_file(&path).expect("remove the module file");
    // The control plane drops the partial upload.
    eventually("the partial upload to be dropped", || async {
        let grown = cp
            .rss_kib()
            .expect("control plane running")
            .saturating_sub(before);
        (grown < 16 << 10).then_some(())
    })
    .await;
    assert_eq!(modules(&cp), Vec::<Value>::new());
    assert_eq!(files_in(&cp.data.join("modules")), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_apply_prints_what_validate_prints_and_changes_nothing() {
    let cp = control(&[]);
    pushed(&cp, "tag", &add_header());
    let upstream = "127.0.0.1:9".parse().unwrap();
    let good = group_config("tag", "one", upstream);
    applied(&cp, "web", &good, 1, 0);

    let bad = good.replace("cluster: backend", "cluster: nowhere");
    let out = apply(&cp, "web", &bad, false);
    assert!(!out.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    // The same mistake in a local file, as `weft validate` reports it.
    let local = bad
        .replace(
            "tag: { module: \"tag\" }",
            &format!("tag: {{ path: \"{}\" }}", crate::wasm("add_header")),
        )
        .replace(
            "  - name: public\n",
            "  - name: public\n    listen: 127.0.0.1:0\n",
        );
    let (valid, report) = validate(bin(), &local, "weft.yaml", &[]);
    assert!(!valid, "{report}");
    let errors: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("listeners[0].routes[0]"))
        .collect();
    assert!(!errors.is_empty(), "validate names the route: {report}");
    for line in errors {
        let line = line.trim_start_matches("error: ").trim();
        assert!(
            out.stderr.lines().any(|l| l.ends_with(line)),
            "apply does not print {line:?}:\n{}\n(validate printed:\n{report})",
            out.stderr
        );
    }
    assert!(out.stderr.contains("group web is unchanged"), "{out:?}");
    // Version 1 is still the group's: applying it again changes nothing.
    let again = apply(&cp, "web", &good, false);
    assert!(
        again
            .stdout
            .contains("group web already has this configuration (version 1)"),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_init_and_a_corrupt_stored_module_are_nacked_and_never_served() {
    let up = Upstream::start().await;
    let cp = control(&[]);
    let code = add_header();
    pushed(&cp, "tag", &code);
    applied(&cp, "web", &group_config("tag", "one", up.addr), 1, 0);
    let web: Vec<Weft> = ["web-1", "web-2"]
        .iter()
        .map(|node| serving(launch(&cp, node, "web")))
        .collect();
    let web: Vec<&Weft> = web.iter().collect();
    connected(&cp, "web", 2).await;
    all_tagged(&web, "one").await;

    // add-header refuses a config without any header: every proxy says so.
    let empty = group_config_with("tag", "{ response: {} }", up.addr);
    let out = apply(&cp, "web", &empty, true);
    assert!(!out.success(), "{out:?}");
    let why = "add-header needs at least one header";
    for node in ["web-1", "web-2"] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{node}: ")))
            .unwrap_or_else(|| panic!("no line for {node}: {out:?}"));
        assert!(line.contains("refused version 2: "), "{line}");
        assert!(line.contains(why), "{line}");
        let status = proxy_status(&cp, node);
        assert_eq!(status["serving_version"], 1, "{status}");
        assert_eq!(status["last_nack"]["version"], 2, "{status}");
        assert_eq!(status["last_nack"]["by_control_plane"], false, "{status}");
        let error = status["last_nack"]["error"].as_str().unwrap();
        assert!(error.contains(why), "{status}");
    }
    all_tagged(&web, "one").await;

    // A stored module whose file was changed on disk (still a valid
    // component, other bytes): no proxy runs it.
    let len = code.len() + 4096;
    let (_, sha256) = pushed(&cp, "fresh", &padded(&code, len, "good"));
    let evil = padded(&code, len, "evil");
    std::fs::write(cp.data.join("modules").join(&sha256), &evil).expect("overwrite");
    let out = apply(&cp, "web", &group_config("fresh", "fresh", up.addr), true);
    assert!(!out.success(), "{out:?}");
    for proxy in &web {
        let node = proxy.arg_after("--node").unwrap();
        let status = proxy_status(&cp, node);
        assert_eq!(status["serving_version"], 1, "{status}");
        assert_eq!(status["last_nack"]["version"], 3, "{status}");
        let error = status["last_nack"]["error"].as_str().unwrap();
        assert!(error.contains(&sha256), "the hash is named: {status}");
        let cached = files_in(&cache_dir(proxy).join("modules"));
        let evil = sha256_hex(&evil);
        assert!(
            !cached
                .iter()
                .any(|f| f.contains(&sha256) || f.contains(&evil)),
            "{node} cached the bytes: {cached:?}"
        );
    }
    all_tagged(&web, "one").await;
}
