//! Command-line arguments.

use std::net::SocketAddr;
use std::time::Duration;

/// Printed after an argument error.
pub const USAGE: &str = "usage: weft-loadgen --addr IP:PORT --rate REQ_PER_S --connections N --duration S \
                         [--path PATH] [--header 'name: value']...";

/// What to load, and how hard.
#[derive(Debug, PartialEq)]
pub struct Args {
    /// Where to connect (also sent as `host`).
    pub addr: SocketAddr,
    /// Requests per second, over all connections.
    pub rate: f64,
    /// Keep-alive connections, each on its own thread.
    pub connections: u32,
    /// How long requests are started for.
    pub duration: Duration,
    /// The request target.
    pub path: String,
    /// Extra request headers, as given.
    pub headers: Vec<String>,
}

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let (mut addr, mut rate, mut connections, mut duration) = (None, None, None, None);
        let mut path = "/".to_string();
        let mut headers = Vec::new();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--addr" => {
                    let v = value()?;
                    addr = Some(
                        v.parse::<SocketAddr>()
                            .map_err(|e| format!("--addr {v:?}: {e}"))?,
                    );
                }
                "--rate" => rate = Some(positive::<f64>("--rate", &value()?)?),
                "--connections" => connections = Some(positive::<u32>("--connections", &value()?)?),
                "--duration" => {
                    duration = Some(Duration::from_secs_f64(positive::<f64>(
                        "--duration",
                        &value()?,
                    )?))
                }
                "--path" => {
                    path = value()?;
                    if !path.starts_with('/') {
                        return Err(format!("--path {path:?} must start with '/'"));
                    }
                }
                "--header" => {
                    let h = value()?;
                    if !h.contains(':') || h.contains(['\r', '\n']) {
                        return Err(format!("--header {h:?} must be one 'name: value' line"));
                    }
                    headers.push(h);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        let need = |name: &str| format!("{name} is required");
        Ok(Args {
            addr: addr.ok_or_else(|| need("--addr"))?,
            rate: rate.ok_or_else(|| need("--rate"))?,
            connections: connections.ok_or_else(|| need("--connections"))?,
            duration: duration.ok_or_else(|| need("--duration"))?,
            path,
            headers,
        })
    }

    /// The one request every connection sends, again and again.
    pub fn request_bytes(&self) -> Vec<u8> {
        let mut request = format!("GET {} HTTP/1.1\r\nhost: {}\r\n", self.path, self.addr);
        for header in &self.headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request.into_bytes()
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(flag: &str, v: &str) -> Result<T, String> {
    match v.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(format!("{flag} {v:?} must be a number above 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn a_full_command_line() {
        let args = parse(&[
            "--addr",
            "127.0.0.1:18011",
            "--rate",
            "5000",
            "--connections",
            "10",
            "--duration",
            "2.5",
            "--path",
            "/bench",
            "--header",
            "x-api-key: k",
        ])
        .unwrap();
        assert_eq!(args.rate, 5000.0);
        assert_eq!(args.connections, 10);
        assert_eq!(args.duration, Duration::from_millis(2500));
        assert_eq!(
            String::from_utf8(args.request_bytes()).unwrap(),
            "GET /bench HTTP/1.1\r\nhost: 127.0.0.1:18011\r\nx-api-key: k\r\n\r\n"
        );
    }

    #[test]
    fn errors_say_which_argument() {
        let base = [
            "--addr",
            "127.0.0.1:1",
            "--connections",
            "1",
            "--duration",
            "1",
        ];
        assert_eq!(parse(&base).unwrap_err(), "--rate is required");
        let mut bad = base.to_vec();
        bad.extend(["--rate", "0"]);
        assert_eq!(
            parse(&bad).unwrap_err(),
            "--rate \"0\" must be a number above 0"
        );
        let mut bad = base.to_vec();
        bad.extend(["--rate", "1", "--header", "no colon"]);
        assert!(parse(&bad).unwrap_err().starts_with("--header"));
        assert!(
            parse(&["--addr", "localhost"])
                .unwrap_err()
                .starts_with("--addr")
        );
        assert_eq!(
            parse(&["--bogus"]).unwrap_err(),
            "unknown argument \"--bogus\""
        );
    }
}
