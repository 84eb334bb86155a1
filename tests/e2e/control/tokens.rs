//! Writes need the token when the control plane has one, reads do not;
//! a control plane off loopback without a token, and a proxy with neither
//! a control plane nor a cache, refuse to start and say why.

use weft_test_harness::Weft;
use weft_test_harness::control::run;
use weft_test_harness::process::temp_dir;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_token_and_reads_do_not() {
    let token_file = file("token", b"s3cret-token\n");
    let token_path = token_file.display().to_string();
    let cp = control(&["--token-file", &token_path]);
    let module = file("tag.wasm", &add_header());
    let module = module.display().to_string();
    let config = file(
        "group.yaml",
        group_config("tag", "one", "127.0.0.1:9".parse().unwrap()).as_bytes(),
    );
    let config = config.display().to_string();
    let push = ["push", module.as_str(), "--name", "tag"];
    let apply = ["apply", "-f", config.as_str(), "--group", "web"];
    let needed = "give the token with --token-file or WEFT_TOKEN";

    for args in [&push[..], &apply[..]] {
        let out = weft(&cp, args);
        assert!(!out.success(), "{out:?}");
        assert!(out.stderr.contains(needed), "{out:?}");
        let wrong = tokio::task::block_in_place(|| cp.run_env(args, &[("WEFT_TOKEN", "wrong")]));
        assert!(!wrong.success(), "{wrong:?}");
        assert!(wrong.stderr.contains(needed), "{wrong:?}");
    }
    assert_eq!(modules(&cp), Vec::<Value>::new(), "reads need no token");

    let out = tokio::task::block_in_place(|| cp.run_env(&push, &[("WEFT_TOKEN", "s3cret-token")]));
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.starts_with("pushed tag@1 "), "{out:?}");
    let with_file: Vec<&str> = apply
        .iter()
        .copied()
        .chain(["--token-file", &token_path])
        .collect();
    let out = weft(&cp, &with_file);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("to group web: version 1"), "{out:?}");
    let status = weft(&cp, &["status"]);
    assert!(status.success(), "{status:?}");
    assert_eq!(modules(&cp).len(), 1);
}

#[test]
fn a_control_plane_off_loopback_without_a_token_does_not_start() {
    let data = temp_dir("control-open");
    let data = data.display().to_string();
    let out = run(
        bin(),
        &["control", "--listen", "0.0.0.0:0", "--data", &data],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("refusing to listen on 0.0.0.0:0 without a token"),
        "the message says why: {out:?}"
    );
}

#[test]
fn a_proxy_with_no_cache_and_no_control_plane_exits_naming_both() {
    // A port nothing listens on.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let cache = temp_dir("cache-lonely");
    let cache_arg = cache.display().to_string();
    let args = [
        "--control",
        &url,
        "--node",
        "lonely",
        "--group",
        "web",
        "--cache",
        &cache_arg,
    ];
    let mut proxy = Weft::launch_with(bin(), LOCAL, &args);
    let status = proxy
        .wait_exit(PATIENCE)
        .unwrap_or_else(|| panic!("still running:\n{}", proxy.log_text()));
    assert_eq!(status.code(), Some(1), "{}", proxy.log_text());
    let log = proxy.log_text();
    assert!(log.contains(&url), "names the control plane: {log}");
    assert!(log.contains(&cache_arg), "names the cache: {log}");
}
