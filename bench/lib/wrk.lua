-- wrk script for bench/run.sh: every request carries the API key (the same
-- bytes go to every target, filters or not), and the summary is printed as
-- one machine-readable line (wrk's own output has no p99.9).
wrk.method = "GET"
wrk.path = os.getenv("BENCH_PATH") or "/bench"
wrk.headers["x-api-key"] = os.getenv("BENCH_API_KEY") or "bench-key-0123456789"
wrk.headers["user-agent"] = "wrk-weft-bench"

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d bytes=%d connect_errors=%d read_errors=%d write_errors=%d status_errors=%d timeouts=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d mean_us=%.1f\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean))
end
