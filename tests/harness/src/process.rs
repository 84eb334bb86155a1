//! A `weft` process under test: started on a config written to a temporary
//! directory, its log collected, killed on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty directory for one test's files.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weft-test-{}-{}-{tag}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A running `weft run`.
pub struct Weft {
    child: Child,
    /// The config file it runs on.
    pub config_path: PathBuf,
    bin: String,
    args: Vec<String>,
    /// Extra environment variables, kept for restarts.
    env: Vec<(String, String)>,
    log: Log,
    listeners: HashMap<String, SocketAddr>,
}

/// The stderr of a child process, read line by line on a thread of its own
/// (each line echoed to the test's stderr with a tag) into a shared log.
pub(crate) struct Log {
    lines: Arc<Mutex<Vec<String>>>,
    gate: Arc<LogGate>,
}

impl Log {
    /// Starts reading `child`'s piped stderr.
    pub(crate) fn read(child: &mut Child, tag: &'static str) -> Log {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = lines.clone();
        let gate = Arc::new(LogGate::default());
        let open = gate.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                sink.lock().unwrap().push(line);
                open.wait_open();
            }
        });
        Log { lines, gate }
    }

    pub(crate) fn lines(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.lines.lock().unwrap()
    }

    pub(crate) fn text(&self) -> String {
        self.lines().join("\n")
    }

    pub(crate) fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits up to 30 s until at least `n` lines contain `needle`.
    pub(crate) fn wait_for(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count(needle) < n {
            assert!(
                Instant::now() < deadline,
                "no {n}x {needle:?} in log:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether the thread that reads weft's stderr may go on reading.
#[derive(Default)]
pub(crate) struct LogGate {
    paused: Mutex<bool>,
    resumed: Condvar,
}

impl LogGate {
    fn set(&self, paused: bool) {
        *self.paused.lock().unwrap() = paused;
        self.resumed.notify_all();
    }

    fn wait_open(&self) {
        let mut paused = self.paused.lock().unwrap();
        while *paused {
            paused = self.resumed.wait(paused).unwrap();
        }
    }
}

impl Weft {
    /// Writes `config` (YAML) to a temp dir and starts `bin run` on it,
    /// waiting until every listener is bound.
    pub fn start(bin: &str, config: &str) -> Weft {
        Self::start_with(bin, config, &[])
    }

    /// Like [`Weft::start`], with extra arguments for `weft run`.
    pub fn start_with(bin: &str, config: &str, args: &[&str]) -> Weft {
        Self::start_with_files(bin, config, args, &[])
    }

    /// Like [`Weft::start`], with extra environment variables (kept for
    /// restarts).
    pub fn start_with_env(bin: &str, config: &str, env: &[(&str, &str)]) -> Weft {
        let mut weft = Self::launch_with_files(bin, config, &[], &[], env);
        weft.wait_listening();
        weft
    }

    /// Like [`Weft::start_with`], with `files` (name, content) written
    /// beside the config first, for `$file` references.
    pub fn start_with_files(
        bin: &str,
        config: &str,
        args: &[&str],
        files: &[(&str, &[u8])],
    ) -> Weft {
        let mut weft = Self::launch_with_files(bin, config, args, files, &[]);
        weft.wait_listening();
        weft
    }

    /// Starts `bin run` like [`Weft::start_with`] without waiting for its
    /// listeners (see [`Weft::wait_listening`]): under `--control` with no
    /// cache they are bound only once the first snapshot is served.
    pub fn launch_with(bin: &str, config: &str, args: &[&str]) -> Weft {
        Self::launch_with_files(bin, config, args, &[], &[])
    }

    fn launch_with_files(
        bin: &str,
        config: &str,
        args: &[&str],
        files: &[(&str, &[u8])],
        env: &[(&str, &str)],
    ) -> Weft {
        let dir = temp_dir("weft");
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).expect("write file");
        }
        let config_path = dir.join("weft.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, log) = Self::spawn(bin, &config_path, &args, &env);
        Weft {
            child,
            config_path,
            bin: bin.to_string(),
            args,
            env,
            log,
            listeners: HashMap::new(),
        }
    }

    fn spawn(
        bin: &str,
        config_path: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> (Child, Log) {
        let mut child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(config_path)
            .args(args)
            .env("WEFT_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weft");
        let log = Log::read(&mut child, "weft");
        (child, log)
    }

    /// Waits up to 60 s until every listener of the config file is bound.
    pub fn wait_listening(&mut self) {
        let config = std::fs::read_to_string(&self.config_path).expect("read config");
        let expected = config.matches("listen:").count();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.listeners.len() < expected {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "weft exited with {status} before listening:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "weft did not listen in time:\n{}",
                self.log_text()
            );
            self.listeners = parse_listeners(&self.log.lines());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The argument given after `flag` (e.g. `--cache`), if any.
    pub fn arg_after(&self, flag: &str) -> Option<&str> {
        let at = self.args.iter().position(|a| a == flag)?;
        self.args.get(at + 1).map(String::as_str)
    }

    /// Kills the process with SIGKILL and reaps it: no drain, no goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the process (SIGKILL) if it runs, starts it again with the
    /// same config file and arguments (so the same `--cache`) and waits
    /// for its listeners: their addresses are new ones when the config
    /// binds port 0.
    pub fn restart(&mut self) {
        self.resume_log_reading();
        self.kill9();
        let (child, log) = Self::spawn(&self.bin, &self.config_path, &self.args, &self.env);
        self.child = child;
        self.log = log;
        self.listeners.clear();
        self.wait_listening();
    }

    /// The bound address of listener `name` (`admin` for the admin API).
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name:?}: {:?}", self.listeners))
    }

    /// `http://<addr of listener name>`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}", self.addr(name))
    }

    /// Stops reading weft's stderr (after the line being read): once the
    /// pipe is full, weft's writes to stderr block.
    pub fn pause_log_reading(&self) {
        self.log.gate.set(true);
    }

    /// Reads weft's stderr again.
    pub fn resume_log_reading(&self) {
        self.log.gate.set(false);
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        self.log.text()
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log.count(needle)
    }

    /// Waits until at least `n` log lines contain `needle`.
    pub fn wait_for_log(&self, needle: &str, n: usize) {
        self.log.wait_for(needle, n)
    }

    /// Rewrites the config file and sends SIGHUP; waits until the reload
    /// is logged as done or rejected and returns that line.
    pub fn reload(&self, config: &str) -> String {
        std::fs::write(&self.config_path, config).expect("write config");
        self.signal_reload()
    }

    /// Sends SIGHUP; returns the log line that reports the outcome.
    pub fn signal_reload(&self) -> String {
        let before = self.outcomes();
        self.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let lines = self.log.lines();
            let outcome: Vec<&String> = lines.iter().filter(|l| is_outcome(l)).collect();
            if outcome.len() > before {
                return outcome[before].clone();
            }
            drop(lines);
            assert!(
                Instant::now() < deadline,
                "reload not reported:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends signal `name` (`HUP`, `STOP`, `CONT`, …) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    fn outcomes(&self) -> usize {
        self.log.lines().iter().filter(|l| is_outcome(l)).count()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn proc_status_kib(&self, field: &str) -> u64 {
        proc_status_kib(self.pid(), field)
            .unwrap_or_else(|| panic!("no {field} in /proc status of {}", self.pid()))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `within` for the process to exit by itself; its exit
    /// status, or `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`); `None` once
/// the process is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A reload outcome: first line of either kind.
fn is_outcome(line: &str) -> bool {
    line.contains("config reloaded") || line.contains("config rejected")
}

/// Bound addresses by listener name; the admin API's is under `admin`.
fn parse_listeners(lines: &[String]) -> HashMap<String, SocketAddr> {
    lines
        .iter()
        .filter(|l| l.contains("listening"))
        .filter_map(|l| {
            if l.starts_with('{') {
                return json_listener(l);
            }
            let name = if l.contains("admin API listening") {
                "admin"
            } else {
                field(l, "listener=")?
            };
            let addr = field(l, "addr=")?.parse().ok()?;
            Some((name.to_string(), addr))
        })
        .collect()
}

/// A `listening` line of `--log-format json`.
fn json_listener(line: &str) -> Option<(String, SocketAddr)> {
    let line: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = &line["fields"];
    let name = match fields["message"].as_str()? {
        "admin API listening" => "admin",
        "listening" => fields["listener"].as_str()?,
        _ => return None,
    };
    Some((name.to_string(), fields["addr"].as_str()?.parse().ok()?))
}

pub(crate) fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = &line[line.find(key)? + key.len()..];
    Some(rest.split_whitespace().next()?.trim_matches('"'))
}

impl Drop for Weft {
    fn drop(&mut self) {
        self.resume_log_reading();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `bin validate --config <file with text>`: (exit success, stdout + stderr).
pub fn validate(
    bin: &str,
    text: &str,
    file_name: &str,
    extra_files: &[(&str, &[u8])],
) -> (bool, String) {
    let dir = temp_dir("validate");
    for (name, bytes) in extra_files {
        std::fs::write(dir.join(name), bytes).expect("write file");
    }
    let path = dir.join(file_name);
    std::fs::write(&path, text).expect("write config");
    validate_file(bin, &path)
}

/// Runs `bin validate --config path`.
pub fn validate_file(bin: &str, path: &Path) -> (bool, String) {
    let out = Command::new(bin)
        .args(["validate", "--config"])
        .arg(path)
        .output()
        .expect("run weft validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
