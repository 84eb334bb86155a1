//! `kill -9` of the control plane: the proxies serve on (a restarted one
//! from its cache), reconnect when it is back, and its store opens with
//! every acknowledged write, even after a kill in the middle of a push.

use weft_test_harness::Upstream;
use weft_test_harness::components::{filter_component, padded, sha256_hex};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_outlive_a_killed_control_plane_and_reconnect_to_its_restart() {
    let up = Upstream::start().await;
    let mut cp = control(&[]);
    let code = add_header();
    let (_, sha1) = pushed(&cp, "tag", &code);
    applied(&cp, "web", &group_config("tag", "one", up.addr), 1, 0);
    let mut web: Vec<Weft> = ["web-1", "web-2"]
        .iter()
        .map(|node| serving(launch(&cp, node, "web")))
        .collect();
    connected(&cp, "web", 2).await;
    let (_, sha2) = pushed(&cp, "tag", &padded(&code, code.len() + 512, "two"));
    applied(&cp, "web", &group_config("tag@2", "two", up.addr), 2, 2);

    tokio::task::block_in_place(|| cp.kill9());
    all_tagged(&web.iter().collect::<Vec<_>>(), "two").await;
    // Restarted while the control plane is away: it serves from its cache.
    tokio::task::block_in_place(|| web[1].restart());
    assert_eq!(web[1].log_count("starting from the cached snapshot"), 1);
    all_tagged(&web.iter().collect::<Vec<_>>(), "two").await;

    tokio::task::block_in_place(|| cp.restart());
    eventually("both proxies back, serving version 2", || async {
        let back = proxies(&cp)
            .iter()
            .filter(|p| p["connected"] == true && p["serving_version"] == 2)
            .count();
        (back == 2).then_some(())
    })
    .await;
    let stored: Vec<(String, u64, String)> = modules(&cp)
        .iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap().to_string();
            let sha256 = m["sha256"].as_str().unwrap().to_string();
            (name, m["version"].as_u64().unwrap(), sha256)
        })
        .collect();
    assert_eq!(
        stored,
        [("tag".to_string(), 1, sha1), ("tag".to_string(), 2, sha2)]
    );
    let again = apply(&cp, "web", &group_config("tag@2", "two", up.addr), false);
    assert!(
        again
            .stdout
            .contains("group web already has this configuration (version 2)"),
        "{again:?}"
    );
    all_tagged(&web.iter().collect::<Vec<_>>(), "two").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_killed_mid_push_reopens_its_store_clean() {
    let mut cp = control(&["--max-module-mib", "128"]);
    let (_, kept) = pushed(&cp, "kept", &filter_component());
    let size = 100usize << 20;
    let bytes = padded(&filter_component(), size, "cut");
    let sha256 = sha256_hex(&bytes);
    let path = file("cut.wasm", &bytes);
    drop(bytes);
    let before = cp.rss_kib().expect("control plane running");
    let mut push = tokio::task::block_in_place(|| {
        cp.spawn_command(&["push", &path.display().to_string(), "--name", "cut"])
    });
    // Killed once 16 MiB of the upload are in its memory.
    mid_upload(&cp, &mut push, before, 16 << 10, size);
    tokio::task::block_in_place(|| cp.kill9());
    std::fs::remove_file(&path).expect("remove the module file");
    let ended = tokio::task::block_in_place(|| push.wait()).expect("reap weft push");
    assert!(!ended.success(), "the push reported success");

    tokio::task::block_in_place(|| cp.restart());
    let listed = modules(&cp);
    let mut names: Vec<String> = Vec::new();
    for module in &listed {
        let sha = module["sha256"].as_str().unwrap();
        match module["name"].as_str().unwrap() {
            "kept" => assert_eq!(sha, kept),
            "cut" => assert_eq!(sha, sha256, "the cut module is whole"),
            other => panic!("unexpected module {other}"),
        }
        names.push(sha.to_string());
    }
    assert!(names.contains(&kept), "{listed:?}");
    // Only the listed modules' files: the store removes unfinished writes
    // (`.tmp-*`) when it opens.
    names.sort();
    assert_eq!(files_in(&cp.data.join("modules")), names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_proxy_is_marked_gone_after_its_missed_heartbeats_and_comes_back() {
    let up = Upstream::start().await;
    // Heartbeats every 200 ms: a proxy silent for 600 ms is gone.
    let cp = control(&["--heartbeat-interval-ms", "200"]);
    pushed(&cp, "tag", &add_header());
    applied(&cp, "web", &group_config("tag", "one", up.addr), 1, 0);
    let proxy = serving(launch(&cp, "web-1", "web"));
    connected(&cp, "web", 1).await;

    // Stopped, not killed: its connection stays open, only its heartbeats
    // stop.
    proxy.signal("STOP");
    let gone = eventually("the stopped proxy to be marked gone", || async {
        let status = proxy_status(&cp, "web-1");
        (status["connected"] == false).then_some(status)
    })
    .await;
    assert!(gone["gone_since_unix_ms"].as_u64().unwrap() > 0, "{gone}");
    assert_eq!(gone["serving_version"], 1, "{gone}");
    let text = weft(&cp, &["status"]);
    assert!(text.stdout.contains("gone since"), "{text:?}");

    proxy.signal("CONT");
    eventually("the resumed proxy to be connected again", || async {
        let status = proxy_status(&cp, "web-1");
        (status["connected"] == true && status["gone_since_unix_ms"].is_null()).then_some(())
    })
    .await;
    all_tagged(&[&proxy], "one").await;
}
