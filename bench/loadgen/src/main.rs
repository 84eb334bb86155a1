//! `weft-loadgen`: HTTP/1.1 keep-alive load at a fixed rate (open loop), for
//! the latency-at-a-fixed-rate runs of `bench/run.sh`.
//!
//! wrk and h2load run closed loops, or pace requests on a millisecond timer
//! that fires many connections at once, so their latency at a fixed rate
//! measures their own bursts. Here each connection has its own thread and its
//! own schedule, the connections' schedules interleaved evenly: request `k`
//! of connection `i` (of `n`) is due at `start + (k·n + i) / rate`. A request
//! whose time comes while the previous answer is still awaited is sent when
//! that answer arrives, and its latency counts from when it was due (no
//! coordinated omission); otherwise it counts from the send.
//!
//! ```text
//! weft-loadgen --addr 127.0.0.1:18011 --rate 5000 --connections 10 --duration 8 \
//!     [--path /bench] [--header 'x-api-key: …']…
//! ```
//!
//! Prints one line, the same keys as `bench/lib/wrk.lua`'s summary:
//! `BENCH requests=… duration_us=… … p50_us=… p99_us=… p999_us=… max_us=… mean_us=…`.

mod args;
mod response;

use std::io::Write;
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::response::{ReadError, read_response};

/// How long a request may wait for its answer before it counts as a timeout.
const TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("weft-loadgen: {message}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let args = Arc::new(args);
    let request = Arc::new(args.request_bytes());
    // Every thread starts its schedule from the same instant, a little ahead
    // so that all are connected and waiting when it comes.
    let start = Instant::now() + Duration::from_millis(200);
    let workers: Vec<_> = (0..args.connections)
        .map(|i| {
            let (args, request) = (Arc::clone(&args), Arc::clone(&request));
            thread::spawn(move || run_connection(&args, &request, i, start))
        })
        .collect();
    let mut total = Tally::default();
    for worker in workers {
        match worker.join() {
            Ok(tally) => total.merge(tally),
            Err(_) => {
                eprintln!("weft-loadgen: a connection thread panicked");
                return ExitCode::FAILURE;
            }
        }
    }
    let succeeded = total.latencies_us.len();
    if let Some(error) = &total.first_error {
        eprintln!(
            "weft-loadgen: {} read error(s); the first: {error}",
            total.read_errors
        );
    }
    println!("{}", total.summary(args.duration));
    if succeeded == 0 {
        eprintln!("weft-loadgen: no request succeeded against {}", args.addr);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    bytes: u64,
    connect_errors: u64,
    read_errors: u64,
    write_errors: u64,
    status_errors: u64,
    timeouts: u64,
    /// The first read error, to say what went wrong.
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.bytes += other.bytes;
        self.connect_errors += other.connect_errors;
        self.read_errors += other.read_errors;
        self.write_errors += other.write_errors;
        self.status_errors += other.status_errors;
        self.timeouts += other.timeouts;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    /// The `BENCH …` line.
    fn summary(mut self, duration: Duration) -> String {
        self.latencies_us.sort_unstable();
        let l = &self.latencies_us;
        let at = |p: f64| {
            if l.is_empty() {
                return 0;
            }
            let rank = ((p / 100.0) * l.len() as f64).ceil() as usize;
            l[rank.clamp(1, l.len()) - 1]
        };
        let mean = if l.is_empty() {
            0.0
        } else {
            l.iter().map(|&v| f64::from(v)).sum::<f64>() / l.len() as f64
        };
        format!(
            "BENCH requests={} duration_us={} bytes={} connect_errors={} read_errors={} write_errors={} status_errors={} timeouts={} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} mean_us={:.1}",
            l.len() as u64 + self.status_errors,
            duration.as_micros(),
            self.bytes,
            self.connect_errors,
            self.read_errors,
            self.write_errors,
            self.status_errors,
            self.timeouts,
            at(50.0),
            at(90.0),
            at(99.0),
            at(99.9),
            l.last().copied().unwrap_or(0),
            mean
        )
    }
}

/// Connection `index`'s share of the load: its requests at their times,
/// reconnecting after an error.
fn run_connection(args: &Args, request: &[u8], index: u32, start: Instant) -> Tally {
    let mut tally = Tally::default();
    let interval = Duration::from_secs_f64(f64::from(args.connections) / args.rate);
    let first = start + Duration::from_secs_f64(f64::from(index) / args.rate);
    let end = start + args.duration;
    // Connected before the first request is due, so its latency holds no
    // handshake; later ones reconnect lazily after an error.
    let mut stream = connect(args)
        .inspect_err(|_| tally.connect_errors += 1)
        .ok();
    let mut buffer = Vec::with_capacity(16 * 1024);
    for k in 0u32.. {
        let due = first + interval * k;
        if due >= end {
            break;
        }
        let now = Instant::now();
        // On time: latency from the send. Late (the last answer took past
        // this one's time): from when it was due.
        let sent_at = if due > now {
            thread::sleep(due - now);
            Instant::now()
        } else {
            due
        };
        let conn = match &mut stream {
            Some(conn) => conn,
            None => match connect(args) {
                Ok(conn) => stream.insert(conn),
                Err(_) => {
                    tally.connect_errors += 1;
                    continue;
                }
            },
        };
        if conn.write_all(request).is_err() {
            tally.write_errors += 1;
            stream = None;
            continue;
        }
        match read_response(conn, &mut buffer) {
            Ok(answer) => {
                let micros = sent_at.elapsed().as_micros();
                tally.bytes += answer.bytes as u64;
                if (200..400).contains(&answer.status) {
                    tally
                        .latencies_us
                        .push(u32::try_from(micros).unwrap_or(u32::MAX));
                } else {
                    tally.status_errors += 1;
                }
                if answer.close {
                    stream = None;
                }
            }
            Err(ReadError::Timeout) => {
                tally.timeouts += 1;
                stream = None;
            }
            Err(error) => {
                tally.read_errors += 1;
                tally.first_error.get_or_insert_with(|| error.to_string());
                stream = None;
            }
        }
    }
    tally
}

fn connect(args: &Args) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&args.addr, TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}
