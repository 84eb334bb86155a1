//! `weft filter new`: a crate created outside the repository builds for
//! wasm32-wasip2 and passes its own test as generated, and its case file
//! passes `weft filter test`; every other template builds (`cargo check`).
//!
//! Slow the first time (the new crates compile weft-sdk and wit-bindgen):
//! they share one target directory, target/filter-new, so later runs are
//! fast. One test, so the builds never run side by side.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bin;
use crate::filter_test::filter_test;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// `weft filter new` with `args`: exit code and stdout + stderr.
fn filter_new(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .args(["filter", "new"])
        .args(args)
        .output()
        .expect("run weft filter new");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Cargo in `dir` with `args`, with none of the outer build's settings and
/// the shared target directory. Panics with cargo's output on failure.
///
/// At the lowest CPU priority (`nice -n 19`): the builds must not starve
/// the e2e tests that run beside them and measure time (deadlines).
fn cargo(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new("nice");
    cmd.args(["-n", "19"])
        .arg(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir).args(args);
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let outer = (name.starts_with("CARGO") && name != "CARGO_HOME")
            || name.starts_with("RUST") && !name.starts_with("RUSTUP")
            || name == "MAKEFLAGS"
            || name == "MFLAGS";
        if outer {
            cmd.env_remove(name);
        }
    }
    cmd.env("CARGO_TARGET_DIR", repo().join("target/filter-new"));
    let out = cmd.output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_new_filter_builds_passes_its_test_and_its_cases_as_generated() {
    let dir = std::env::temp_dir().join(format!("weft-filter-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let krate = dir.join("my-filter");
    let path = krate.to_str().unwrap();

    let (code, text) = filter_new(&[path]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("created"), "{text}");
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("crate-type = [\"cdylib\"]"), "{manifest}");
    assert!(manifest.contains("\n[workspace]\n"), "{manifest}");
    let sdk = repo().join("sdk");
    assert!(
        manifest.contains(&format!(
            "weft-sdk = {{ path = {:?} }}",
            sdk.to_str().unwrap()
        )),
        "{manifest}"
    );
    for file in [
        "src/lib.rs",
        "README.md",
        "config.json",
        "cases.yaml",
        ".gitignore",
    ] {
        assert!(krate.join(file).is_file(), "{file}");
    }

    // Refusals: an existing directory, a bad name, an SDK that is not there.
    let (code, text) = filter_new(&[path]);
    assert_eq!(code, 2);
    assert!(text.contains("exists already"), "{text}");
    let bad = dir.join("my filter");
    let (code, text) = filter_new(&[bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        text.contains("invalid crate name \"my filter\": ' ' is not allowed"),
        "{text}"
    );
    assert!(!bad.exists());
    let elsewhere = dir.join("other");
    let (code, text) = filter_new(&[elsewhere.to_str().unwrap(), "--sdk", "/no/such/sdk"]);
    assert_eq!(code, 2);
    assert!(text.contains("--sdk /no/such/sdk"), "{text}");
    assert!(!elsewhere.exists());

    // As generated: the component builds, its test passes, its cases pass.
    cargo(&krate, &["build", "--target", "wasm32-wasip2", "--release"]);
    cargo(&krate, &["test"]);
    let component = repo().join("target/filter-new/wasm32-wasip2/release/my_filter.wasm");
    let (code, stdout, output) = filter_test(
        component.to_str().unwrap(),
        Some(&krate.join("config.json")),
        &krate.join("cases.yaml"),
    );
    assert_eq!(
        code,
        0,
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.ends_with(" 0 failed\n"), "{stdout}");

    // The other templates build for wasm32-wasip2.
    for (template, name) in [
        ("response-rewrite", "rewrite-filter"),
        ("body", "body-filter"),
        ("shared-state", "counter-filter"),
    ] {
        let krate = dir.join(name);
        let (code, text) = filter_new(&[krate.to_str().unwrap(), "--template", template]);
        assert_eq!(code, 0, "{text}");
        cargo(&krate, &["check", "--target", "wasm32-wasip2", "--release"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
