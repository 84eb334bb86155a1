//! A `weft control` process under test (its log read like a proxy's, see
//! [`crate::process`]), and the operator's commands (`weft push`, `apply`,
//! `status`, `modules`) run against it.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{Log, field, proc_status_kib};

/// The environment variables the operator's commands read: cleared for
/// every command so that only what a test gives counts.
const CLIENT_ENV: [&str; 3] = ["WEFT_CONTROL", "WEFT_TOKEN", "WEFT_LOG"];

/// How long a command may run before the test gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `weft control`; killed on drop, and its data directory
/// removed then (modules of tens of MiB must not pile up in the temp dir).
pub struct Control {
    child: Child,
    bin: String,
    /// Its data directory (`--data`).
    pub data: PathBuf,
    args: Vec<String>,
    addr: SocketAddr,
    log: Log,
}

impl Control {
    /// Starts `bin control --listen 127.0.0.1:0 --data data` with `args`
    /// and waits until it listens.
    pub fn start(bin: &str, data: &Path, args: &[&str]) -> Control {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (child, log) = spawn(bin, "127.0.0.1:0", data, &args);
        let mut control = Control {
            child,
            bin: bin.to_string(),
            data: data.to_path_buf(),
            args,
            addr: "127.0.0.1:0".parse().unwrap(),
            log,
        };
        control.addr = control.wait_listening();
        control
    }

    fn wait_listening(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let addr = self
                .log
                .lines()
                .iter()
                .filter(|l| l.contains("control plane listening"))
                .find_map(|l| field(l, "addr=")?.parse().ok());
            if let Some(addr) = addr {
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "weft control exited with {status} before listening:\n{}",
                    self.log.text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "weft control did not listen in 30 s:\n{}",
                self.log.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory in KiB; `None` once it is gone.
    pub fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid(), "VmRSS")
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills it (SIGKILL) if it runs and starts it again on the same port
    /// with the same data directory and arguments.
    pub fn restart(&mut self) {
        self.kill9();
        let (child, log) = spawn(&self.bin, &self.addr.to_string(), &self.data, &self.args);
        self.child = child;
        self.log = log;
        let addr = self.wait_listening();
        assert_eq!(addr, self.addr, "restarted on another address");
    }

    /// Everything logged since it (re)started.
    pub fn log_text(&self) -> String {
        self.log.text()
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log.count(needle)
    }

    /// Waits up to 30 s until at least `n` log lines contain `needle`.
    pub fn wait_for_log(&self, needle: &str, n: usize) {
        self.log.wait_for(needle, n)
    }

    /// Runs `weft <args>` against this control plane (`WEFT_CONTROL`).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// Like [`Control::run`], with environment variables set.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let url = self.url();
        let mut all = vec![("WEFT_CONTROL", url.as_str())];
        all.extend_from_slice(env);
        run(&self.bin, args, &all)
    }

    /// Starts `weft <args>` against this control plane without waiting:
    /// for a command killed while it runs.
    pub fn spawn_command(&self, args: &[&str]) -> Child {
        command(&self.bin, args, &[("WEFT_CONTROL", &self.url())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn weft")
    }

    /// `weft status --output json`, parsed.
    pub fn status(&self) -> Value {
        self.run(&["status", "--output", "json"]).json()
    }

    /// `weft modules --output json`, parsed.
    pub fn modules(&self) -> Value {
        self.run(&["modules", "--output", "json"]).json()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn spawn(bin: &str, listen: &str, data: &Path, args: &[String]) -> (Child, Log) {
    let mut child = Command::new(bin)
        .args(["control", "--listen", listen, "--data"])
        .arg(data)
        .args(args)
        .env_remove("WEFT_TOKEN")
        .env("WEFT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft control");
    let log = Log::read(&mut child, "control");
    (child, log)
}

/// What a finished command did.
#[derive(Debug)]
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl Output {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Its stdout parsed as JSON; panics (with both outputs) unless it
    /// succeeded.
    pub fn json(&self) -> Value {
        assert!(self.success(), "command failed: {self:?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

fn command(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(bin);
    command.args(args).stdin(Stdio::null());
    for name in CLIENT_ENV {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Runs `bin <args>` with only the given `WEFT_*` variables (up to 2
/// minutes) and collects its output.
pub fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = command(bin, args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout piped")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr piped")));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for weft") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`weft {}` still ran after {COMMAND_TIMEOUT:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}
