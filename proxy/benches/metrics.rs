//! Microbenchmarks of the metrics registry, which every worker updates on
//! every request (filters' counters and histograms):
//!
//! - `metrics/counter_add/N`: one `counter_add` of an existing series, with N
//!   threads updating the same series at once (time per update, per thread);
//! - `metrics/histogram_observe/N`: the same for a histogram observation;
//! - `metrics/filter_counter_add/N`, `metrics/filter_histogram_observe/N`:
//!   the same through the filters' entry points (a filter's series, found by
//!   filter name, then labels), as the host calls them.
//!
//! Run: `cargo bench -p weft --bench metrics`. See bench/README.md.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use weft::telemetry::{Labels, Registry};

fn labels() -> Labels {
    vec![
        ("route".to_string(), "api".to_string()),
        ("method".to_string(), "GET".to_string()),
        ("status_class".to_string(), "2xx".to_string()),
    ]
}

/// Time per update when `threads` threads each make `iters` updates at once.
fn contended(threads: usize, iters: u64, update: impl Fn(Labels) + Sync) -> Duration {
    let start = Barrier::new(threads);
    let elapsed: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    // The labels are made outside the timing, as the host
                    // lifts them from the guest before calling the registry.
                    let all: Vec<Labels> = (0..iters).map(|_| labels()).collect();
                    start.wait();
                    let began = Instant::now();
                    for l in all {
                        update(l);
                    }
                    began.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    elapsed.into_iter().max().unwrap_or_default()
}

fn registry(c: &mut Criterion) {
    let registry = Registry::default();
    registry
        .counter_add("weft_filter_requests_total", labels(), 1)
        .unwrap();
    registry
        .histogram_observe("weft_filter_duration_seconds", labels(), 0.001)
        .unwrap();
    let filter: Arc<str> = "telemetry".into();
    registry
        .filter_counter_add(&filter, "requests_total", labels(), 1)
        .unwrap();
    registry
        .filter_histogram_observe(&filter, "duration_seconds", labels(), 0.001)
        .unwrap();
    let mut group = c.benchmark_group("metrics");
    for threads in [1, 2] {
        group.bench_function(format!("counter_add/{threads}"), |b| {
            b.iter_custom(|iters| {
                contended(threads, iters, |l| {
                    black_box(registry.counter_add("weft_filter_requests_total", l, 1)).unwrap()
                })
            })
        });
        group.bench_function(format!("histogram_observe/{threads}"), |b| {
            b.iter_custom(|iters| {
                contended(threads, iters, |l| {
                    black_box(registry.histogram_observe("weft_filter_duration_seconds", l, 0.003))
                        .unwrap()
                })
            })
        });
        group.bench_function(format!("filter_counter_add/{threads}"), |b| {
            b.iter_custom(|iters| {
                contended(threads, iters, |l| {
                    black_box(registry.filter_counter_add(&filter, "requests_total", l, 1)).unwrap()
                })
            })
        });
        group.bench_function(format!("filter_histogram_observe/{threads}"), |b| {
            b.iter_custom(|iters| {
                contended(threads, iters, |l| {
                    black_box(registry.filter_histogram_observe(
                        &filter,
                        "duration_seconds",
                        l,
                        0.003,
                    ))
                    .unwrap()
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = registry
}
criterion_main!(benches);
