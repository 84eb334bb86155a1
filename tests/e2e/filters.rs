//! Filters at work and filters failing: local responses, traps, deadlines
//! and memory caps, each with `fail_closed` and `fail_open`.

use http::Request;
use http_body_util::Full;
use weft_test_harness::{Upstream, client, get, send};

use crate::{config, start, wasm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_response_never_reaches_the_upstream() {
    let up = Upstream::start().await;
    let filters = format!("  hello: {{ path: {} }}", wasm("hello_filter"));
    let routes = "      - { name: all, filters: [{ filter: hello }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let url = weft.url("public");
    for _ in 0..3 {
        let r = get(&format!("{url}/hello?x=1")).await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"hello from weft\n");
        assert_eq!(r.header("content-type"), Some("text/plain"));
    }
    assert_eq!(up.hits(), 0, "the upstream must not be contacted");
    let r = get(&format!("{url}/other")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/other");
    assert_eq!(up.hits(), 1);
}

/// Routes `/closed/` and `/open/` run the misbehave filter doing `action`
/// when the request has `x-boom`; `/healthy/` runs add-header only.
fn misbehaving_config(action: &str, limits: &str, upstream: std::net::SocketAddr) -> String {
    let filters = format!(
        "  misbehave: {{ path: {}{limits} }}\n  add-header: {{ path: {} }}",
        wasm("misbehave_filter"),
        wasm("add_header")
    );
    let entry = |on_error: &str| {
        format!(
            "[{{ filter: misbehave, config: {{ do: {action}, when_header: x-boom }}, on_error: {on_error} }}]"
        )
    };
    let routes = format!(
        r#"      - {{ name: closed, match: {{ path_prefix: /closed/ }}, filters: {}, cluster: backend }}
      - {{ name: open, match: {{ path_prefix: /open/ }}, filters: {}, cluster: backend }}
      - {{ name: healthy, match: {{ path_prefix: /healthy/ }}, filters: [{{ filter: add-header, config: {{ request: {{ x-ok: "1" }} }} }}], cluster: backend }}"#,
        entry("fail_closed"),
        entry("fail_open")
    );
    config(&filters, &routes, upstream)
}

async fn boom(url: &str) -> weft_test_harness::Reply {
    let req = Request::get(url)
        .header("x-boom", "1")
        .body(Full::default())
        .unwrap();
    send(&client(false), req).await
}

/// Checks fail_closed/fail_open for a misbehaviour, and that the proxy keeps
/// serving every route afterwards. Returns the fail_closed error message.
async fn check_failure_policy(action: &str, limits: &str) -> String {
    let up = Upstream::start().await;
    let weft = start(&misbehaving_config(action, limits, up.addr));
    let url = weft.url("public");

    let closed = boom(&format!("{url}/closed/x")).await;
    assert_eq!(closed.status, 500, "{action}: {:?}", closed.body);
    let body = closed.json();
    assert_eq!(body["error"], "filter_failed");
    assert_eq!(up.hits(), 0, "fail_closed must not reach the upstream");

    let open = boom(&format!("{url}/open/x")).await;
    assert_eq!(open.status, 200, "{action}: fail_open passes through");
    assert_eq!(
        open.echoed_header("x-misbehave"),
        None,
        "the failed filter was skipped"
    );

    // The failed instances were replaced: the same routes keep working.
    for _ in 0..5 {
        let spared = get(&format!("{url}/closed/x")).await;
        assert_eq!(spared.status, 200);
        assert_eq!(
            spared.echoed_header("x-misbehave").as_deref(),
            Some("spared")
        );
        let healthy = get(&format!("{url}/healthy/x")).await;
        assert_eq!(healthy.echoed_header("x-ok").as_deref(), Some("1"));
    }
    let again = boom(&format!("{url}/closed/y")).await;
    assert_eq!(
        again.status, 500,
        "a second failure is handled the same way"
    );
    body["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_filter_fails_closed_or_open_and_the_proxy_keeps_serving() {
    let message = check_failure_policy("trap", "").await;
    assert!(
        message.contains("\"misbehave\" failed in on-request-headers: trapped"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_filter_is_a_trap() {
    let message = check_failure_policy("panic", "").await;
    assert!(message.contains("trapped"), "{message}");
}

/// The contract's `response` functions act on the call's response: called
/// in a request phase, where there is none, they trap and say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_function_called_in_a_request_phase_traps_and_says_why() {
    let message = check_failure_policy("misuse", "").await;
    assert!(
        message.contains(
            "response.status called in on-request-headers: there is no response before the response phases"
        ),
        "{message}"
    );
}

/// Property sets are the instance's own: reading one never registered, or
/// registering more than 64, traps and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_set_misuse_traps_and_says_why() {
    let message = check_failure_policy("unknown_property_set", "").await;
    assert!(
        message.contains("properties: no property set 999 (ids come from property-set)"),
        "{message}"
    );
    let message = check_failure_policy("hoard_property_sets", "").await;
    assert!(
        message
            .contains("property-set: at most 64 sets per instance (register a set once, in init)"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_filter_is_cut_off_by_its_deadline_without_stalling_other_routes() {
    let up = Upstream::start().await;
    let weft = start(&misbehaving_config("loop", ", deadline_ms: 50", up.addr));
    let url = weft.url("public");
    // A looping call and ordinary requests at the same time.
    let looping = tokio::spawn({
        let url = url.clone();
        async move {
            let started = std::time::Instant::now();
            (boom(&format!("{url}/closed/x")).await, started.elapsed())
        }
    });
    for _ in 0..10 {
        let healthy = get(&format!("{url}/healthy/x")).await;
        assert_eq!(healthy.status, 200);
    }
    let (r, took) = looping.await.unwrap();
    assert_eq!(r.status, 500);
    // Stopped once its deadline passed, not before.
    assert!(took >= std::time::Duration::from_millis(50), "{took:?}");
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("deadline of 50 ms exceeded"), "{message}");
    drop(weft);
    let message = check_failure_policy("loop", ", deadline_ms: 50").await;
    assert!(message.contains("deadline"), "{message}");
}

/// `on-done` runs once the response is written: a filter that spins in
/// `on-done` until its deadline does not hold the response back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_on_done_does_not_hold_the_response_back() {
    let up = Upstream::start().await;
    let filters = format!(
        "  misbehave: {{ path: {}, deadline_ms: 2000 }}",
        wasm("misbehave_filter")
    );
    let routes = "      - { name: all, filters: [{ filter: misbehave, config: { do: loop, phase: done } }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let started = std::time::Instant::now();
    let r = get(&format!("{}/x", weft.url("public"))).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/x");
    // A response that waited for on-done would take its whole deadline.
    assert!(
        took < std::time::Duration::from_millis(2000),
        "the response waited for on-done: {took:?}"
    );
    // on-done did run, and was cut off by its deadline.
    weft.wait_for_log("about to loop", 1);
    weft.wait_for_log("deadline of 2000 ms exceeded", 1);
}

/// A deadline counts the filter's own time: the whole proxy standing still
/// during a call (stopped here; a paused VM or a container's CPU quota in
/// production) does not fail the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_of_the_whole_proxy_does_not_count_against_a_deadline() {
    let up = Upstream::start().await;
    let filters = format!(
        "  misbehave: {{ path: {}, deadline_ms: 1000 }}",
        wasm("misbehave_filter")
    );
    let routes = "      - { name: all, filters: [{ filter: misbehave, config: { busy_ms: 400 } }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let url = format!("{}/x", weft.url("public"));
    let request = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let reply = get(&url).await;
        (reply, started.elapsed())
    });
    // The filter is in its 400 ms of work: stop the proxy for longer than
    // the deadline.
    weft.wait_for_log("misbehave-filter: busy for 400 ms", 1);
    weft.signal("STOP");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    weft.signal("CONT");
    let (r, took) = request.await.unwrap();
    assert!(
        took >= std::time::Duration::from_millis(1500),
        "the stop did not fall in the request: {took:?}"
    );
    assert_eq!(r.status, 200, "{}", weft.log_text());
    assert_eq!(r.json()["path"], "/x");
    weft.wait_for_log("was busy for 400 ms", 1);
    assert_eq!(weft.log_count("deadline of"), 0, "{}", weft.log_text());
}

/// The first CPU this process may run on.
fn first_allowed_cpu() -> usize {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled by the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .find(|&cpu| libc::CPU_ISSET(cpu, &set))
            .expect("some CPU allowed")
    }
}

/// Restricts thread `tid` (0: the calling thread) to `cpu`.
fn pin(tid: libc::pid_t, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set),
            0,
            "cannot pin thread {tid} to CPU {cpu}"
        );
    }
}

/// Threads spinning on one CPU, stopped when dropped or after 10 s.
struct BusyCpu {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyCpu {
    fn start(cpu: usize, threads: usize) -> BusyCpu {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let pinned = std::sync::Arc::new(AtomicUsize::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (stop, pinned) = (stop.clone(), pinned.clone());
                std::thread::spawn(move || {
                    pin(0, cpu);
                    pinned.fetch_add(1, Ordering::SeqCst);
                    let begun = std::time::Instant::now();
                    while !stop.load(Ordering::Relaxed)
                        && begun.elapsed() < std::time::Duration::from_secs(10)
                    {
                        for _ in 0..10_000 {
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect::<Vec<_>>();
        let begun = std::time::Instant::now();
        while pinned.load(Ordering::SeqCst) < threads.len() {
            assert!(begun.elapsed() < std::time::Duration::from_secs(10));
            std::thread::yield_now();
        }
        BusyCpu { stop, threads }
    }
}

impl Drop for BusyCpu {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A GET of `url` and how long it took.
async fn timed_get(url: &str) -> (weft_test_harness::Reply, std::time::Duration) {
    let started = std::time::Instant::now();
    let reply = get(url).await;
    (reply, started.elapsed())
}

/// On a busy machine a call waits for the CPU other processes hold; that
/// wait is not the filter's time and does not count against its deadline.
/// A filter that loops is still cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_a_worker_waits_for_a_busy_cpu_does_not_count_against_a_deadline() {
    use std::time::Duration;
    const DEADLINE: Duration = Duration::from_millis(200);
    let up = Upstream::start().await;
    let yaml = |turns: u64| {
        let filters = format!(
            "  misbehave: {{ path: {}, deadline_ms: {} }}",
            wasm("misbehave_filter"),
            DEADLINE.as_millis()
        );
        let routes = format!(
            "      - {{ name: spin, match: {{ path_prefix: /spin/ }}, filters: [{{ filter: misbehave, config: {{ spin_iterations: {turns} }} }}], cluster: backend }}\n      \
             - {{ name: loop, match: {{ path_prefix: /loop/ }}, filters: [{{ filter: misbehave, config: {{ do: loop }} }}], cluster: backend }}"
        );
        config(&filters, &routes, up.addr)
    };
    // One worker, every thread of the proxy on one CPU.
    let cpu = first_allowed_cpu();
    const PROBE: u64 = 20_000_000;
    let weft = crate::start_workers(&yaml(PROBE), 1);
    for task in std::fs::read_dir(format!("/proc/{}/task", weft.pid())).unwrap() {
        let tid = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        pin(tid, cpu);
    }
    let spin = format!("{}/spin/x", weft.url("public"));
    // With the CPU to itself: how long a request takes (the median of 3,
    // after one to warm up).
    let alone = || async {
        let mut took = Vec::new();
        for _ in 0..4 {
            let (r, t) = timed_get(&spin).await;
            assert_eq!(r.status, 200, "{}", weft.log_text());
            took.push(t);
        }
        took.remove(0);
        took.sort();
        took[1]
    };
    // Enough turns for 90 ms of the CPU, over the deadline at a quarter of
    // it: the time per turn is not quite proportional, so a few rounds.
    let (mut turns, mut took) = (PROBE, alone().await);
    for _ in 0..3 {
        if (80..=105).contains(&took.as_millis()) {
            break;
        }
        turns = (turns as f64 * 90.0 / took.as_secs_f64() / 1000.0) as u64;
        let outcome = weft.reload(&yaml(turns));
        assert!(outcome.contains("config reloaded"), "{outcome}");
        took = alone().await;
    }
    assert!(
        (60..=120).contains(&took.as_millis()),
        "{turns} turns took {took:?} with the CPU to itself"
    );
    let alone = took;
    // Three more threads spinning on that CPU: the proxy gets a quarter.
    let busy = BusyCpu::start(cpu, 3);
    let mut took = Vec::new();
    for _ in 0..3 {
        let (r, t) = timed_get(&spin).await;
        assert_eq!(r.status, 200, "after {t:?}: {}", weft.log_text());
        took.push(t);
    }
    assert!(
        took.iter().filter(|&&t| t > DEADLINE).count() >= 2,
        "the CPU was not busy enough to prove anything: {took:?} (alone {alone:?})"
    );
    assert_eq!(weft.log_count("deadline of"), 0, "{}", weft.log_text());
    // A loop, on the same busy CPU, is still stopped.
    let (r, looped) = timed_get(&format!("{}/loop/x", weft.url("public"))).await;
    drop(busy);
    assert_eq!(r.status, 500, "after {looped:?}");
    weft.wait_for_log("deadline of 200 ms exceeded", 1);
}

/// Context switches of each of the proxy's threads, by thread name.
fn thread_switches(pid: u32) -> std::collections::HashMap<String, u64> {
    let mut switches = std::collections::HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let (Ok(name), Ok(status)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue;
        };
        let count: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        *switches.entry(name.trim().to_string()).or_default() += count;
    }
    switches
}

/// The deadline watchdog wakes when a deadline may have passed, not on a
/// fixed tick: about once per `deadline_ms` under load, and not at all
/// once the filters go quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_watchdog_wakes_once_per_deadline_under_load_and_sleeps_when_idle() {
    let up = Upstream::start().await;
    let weft = start(&misbehaving_config("loop", ", deadline_ms: 50", up.addr));
    let url = format!("{}/healthy/x", weft.url("public"));
    assert_eq!(get(&url).await.status, 200);
    let before = thread_switches(weft.pid());
    let started = std::time::Instant::now();
    // Bounded: 400 requests, or 4 s.
    let mut sent = 0;
    while sent < 400 && started.elapsed() < std::time::Duration::from_secs(4) {
        assert_eq!(get(&url).await.status, 200);
        sent += 1;
    }
    let busy = started.elapsed();
    let after = thread_switches(weft.pid());
    let wakes = after["weft-deadline"] - before["weft-deadline"];
    // One wake per 10 ms at most with a 10 ms deadline (add-header's
    // default), plus a few for calls that arrive while it sleeps longer; a
    // 1 ms tick would wake at least once per millisecond.
    let per_ms = wakes as f64 / busy.as_millis().max(1) as f64;
    assert!(
        per_ms < 0.5,
        "{wakes} wake-ups in {busy:?} for {sent} requests"
    );
    // Ten rounds of the deadline after the last call, then asleep.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let quiet = thread_switches(weft.pid());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let idle = thread_switches(weft.pid())["weft-deadline"] - quiet["weft-deadline"];
    assert!(idle <= 4, "{idle} wake-ups in 1.5 s without a request");
}

/// The deadline is generous so that the memory cap, not the clock, stops
/// the filter even on a loaded machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_growing_memory_past_its_cap_is_stopped() {
    let message = check_failure_policy("grow", ", max_memory_mib: 8, deadline_ms: 5000").await;
    assert!(
        message.contains("memory cap of 8 MiB exceeded"),
        "{message}"
    );
}
