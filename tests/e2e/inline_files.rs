//! `{"$file": …}` in a filter's config: only regular files in the config's
//! directory, up to a size cap, are inlined; anything else is refused by
//! `weft validate` with the path of the reference and the reason, without
//! reading it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_test_harness::process::temp_dir;

use crate::{bin, config, wasm};

/// A config in `dir` whose add-header chain entry sets header `x-a` from
/// `{"$file": file}`.
fn write_config(dir: &Path, file: &str) -> std::path::PathBuf {
    let filters = format!("  add-header: {{ path: {} }}", wasm("add_header"));
    let routes = format!(
        "      - {{ name: all, filters: [{{ filter: add-header, config: {{ request: {{ x-a: {{ $file: \"{file}\" }} }} }} }}], cluster: backend }}"
    );
    let path = dir.join("weft.yaml");
    std::fs::write(
        &path,
        config(&filters, &routes, "127.0.0.1:1".parse().unwrap()),
    )
    .unwrap();
    path
}

/// `weft validate` on the config at `path`, given at most 30 s and 2 GiB
/// of data (a proxy that read a device whole would otherwise take the
/// machine's memory): (success, output).
fn validate_bounded(path: &Path) -> (bool, String) {
    let mut child = Command::new("sh")
        .args([
            "-c",
            "ulimit -d 2097152 && exec \"$0\" validate --config \"$1\"",
        ])
        .arg(bin())
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weft validate {} did not finish in 30 s", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const AT: &str = "listeners[0].routes[0].filters[0].config.request.x-a.$file";

#[test]
fn files_outside_the_config_directory_are_refused() {
    let dir = temp_dir("inline-outside");
    std::fs::write(dir.join("value.txt"), "inside").unwrap();
    let (ok, out) = validate_bounded(&write_config(&dir, "value.txt"));
    assert!(ok, "a file in the directory is read: {out}");
    std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
    for file in ["../../etc/passwd", "/etc/passwd", "link"] {
        let (ok, out) = validate_bounded(&write_config(&dir, file));
        assert!(!ok, "{file}: {out}");
        assert!(
            out.contains(&format!(
                "{AT}: \"{file}\" resolves to /etc/passwd, outside the config's directory"
            )),
            "{file}: {out}"
        );
        assert!(!out.contains("root:"), "the file's text is shown: {out}");
    }
}

#[test]
fn devices_fifos_and_large_files_are_refused_without_reading_them() {
    let dir = temp_dir("inline-kinds");
    // A device, through a link in the directory that points out of it.
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero")).unwrap();
    let (ok, out) = validate_bounded(&write_config(&dir, "/dev/zero"));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "{AT}: \"/dev/zero\" resolves to /dev/zero, outside"
        )),
        "{out}"
    );
    // A FIFO with no writer: reading it would wait forever.
    let status = Command::new("mkfifo")
        .arg(dir.join("fifo"))
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, out) = validate_bounded(&write_config(&dir, "fifo"));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("{AT}: ")) && out.contains("fifo is not a regular file"),
        "{out}"
    );
    // Larger than the cap.
    std::fs::write(dir.join("big.txt"), "x".repeat(2000)).unwrap();
    let config = write_config(&dir, "big.txt");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("inline_files: {{ max_bytes: 1000 }}\n{text}"),
    )
    .unwrap();
    let (ok, out) = validate_bounded(&config);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("{AT}: "))
            && out.contains("big.txt is larger than inline_files.max_bytes (1000 bytes)"),
        "{out}"
    );
}
