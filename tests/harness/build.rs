//! Builds the workspace's filter components for `wasm32-wasip2` (profile
//! `filter`, target dir `target/wasm-filters`) and tells the harness where
//! they are through `WEFT_WASM_DIR`; builds the proxy-wasm filters of
//! `examples/proxy-wasm` (their own workspace) for `wasm32-wasip1` into
//! `target/proxy-wasm`, and exports that directory as `WEFT_PROXY_WASM_DIR`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
/// The target of the proxy-wasm filters: core modules.
const PROXY_WASM_TARGET: &str = "wasm32-wasip1";
/// The proxy-wasm filters' workspace, relative to the workspace root.
const PROXY_WASM_DIR: &str = "examples/proxy-wasm";
const PROFILE: &str = "filter";
/// The profile of the one filter built with its debug info.
const DEBUG_PROFILE: &str = "filter-debug";
const PACKAGES: [&str; 11] = [
    "add-header-filter",
    "weft-filter-api-key",
    "weft-filter-headers",
    "weft-filter-fault",
    "weft-filter-rate-limit",
    "weft-filter-retry",
    "weft-filter-telemetry",
    "weft-filter-jwt-auth",
    "hello-filter",
    "misbehave-filter",
    "inspect-filter",
];
/// What the filters are built from, relative to the workspace root.
const INPUTS: [&str; 9] = [
    "wit",
    "sdk",
    "filters",
    "examples/add-header",
    "examples/hello-filter",
    "examples/misbehave-filter",
    "examples/inspect-filter",
    "Cargo.toml",
    "Cargo.lock",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists");
    for input in INPUTS {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }

    compile_echo_proto(&workspace);

    println!(
        "cargo:rerun-if-changed={}",
        workspace.join(PROXY_WASM_DIR).display()
    );
    check_target_installed(TARGET);
    check_target_installed(PROXY_WASM_TARGET);

    let target_dir = workspace.join("target/wasm-filters");
    build(&workspace, &target_dir, PROFILE, &PACKAGES);
    let wasm_dir = target_dir.join(TARGET).join(PROFILE);
    println!("cargo:rustc-env=WEFT_WASM_DIR={}", wasm_dir.display());

    // One filter with its debug info: trap reports with file and line.
    build(
        &workspace,
        &target_dir,
        DEBUG_PROFILE,
        &["misbehave-filter"],
    );
    let debug_dir = target_dir.join(TARGET).join(DEBUG_PROFILE);
    println!(
        "cargo:rustc-env=WEFT_WASM_DEBUG_DIR={}",
        debug_dir.display()
    );

    let proxy_wasm_target_dir = workspace.join("target/proxy-wasm");
    build_proxy_wasm(&workspace, &proxy_wasm_target_dir);
    let proxy_wasm_dir = proxy_wasm_target_dir
        .join(PROXY_WASM_TARGET)
        .join("release");
    println!(
        "cargo:rustc-env=WEFT_PROXY_WASM_DIR={}",
        proxy_wasm_dir.display()
    );
}

/// Builds every proxy-wasm filter of `examples/proxy-wasm` (a workspace of
/// its own, with its own lock file) for `wasm32-wasip1`, profile `release`.
fn build_proxy_wasm(workspace: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace.join(PROXY_WASM_DIR).join("Cargo.toml"))
        .args(["--target", PROXY_WASM_TARGET, "--release", "--workspace"])
        .arg("--target-dir")
        .arg(target_dir);
    clear_build_script_env(&mut build);
    let output = build
        .output()
        .unwrap_or_else(|err| panic!("cannot run cargo to build the proxy-wasm filters: {err}"));
    if !output.status.success() {
        panic!(
            "building the proxy-wasm filters of {PROXY_WASM_DIR} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Generates the gRPC test service's code from `tests/fixtures/echo.proto`
/// with protox (no `protoc` needed).
fn compile_echo_proto(workspace: &Path) {
    let fixtures = workspace.join("tests/fixtures");
    let proto = fixtures.join("echo.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let descriptors =
        protox::compile([&proto], [&fixtures]).expect("tests/fixtures/echo.proto compiles");
    tonic_prost_build::configure()
        .compile_fds(descriptors)
        .expect("generate the echo service's code");
}

/// Builds `packages` for `wasm32-wasip2` with `profile` into `target_dir`.
fn build(workspace: &Path, target_dir: &Path, profile: &str, packages: &[&str]) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args(["build", "--target", TARGET, "--profile", profile])
        .arg("--target-dir")
        .arg(target_dir);
    for package in packages {
        build.args(["-p", package]);
    }
    clear_build_script_env(&mut build);
    let output = build
        .output()
        .unwrap_or_else(|err| panic!("cannot run cargo to build the filters: {err}"));
    if !output.status.success() {
        panic!(
            "building the filter components ({profile}) failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Fails with instructions when the standard library of `target`
/// (`wasm32-wasip2` for Weft's filters, `wasm32-wasip1` for the proxy-wasm
/// ones) is missing (the inner build's own error is less clear).
fn check_target_installed(target: &str) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    let Some(sysroot) = sysroot else {
        // Let the build itself report what is wrong.
        return;
    };
    let std_dir = Path::new(&sysroot).join("lib/rustlib").join(target);
    if !std_dir.is_dir() {
        panic!(
            "the {target} target is not installed ({} is missing), and the e2e tests need the \
             filters built for it: run `make setup` or `rustup target add {TARGET} {PROXY_WASM_TARGET}`",
            std_dir.display()
        );
    }
}

/// Removes what cargo sets for this build script and that would otherwise
/// leak into the inner build: flags, wrappers and target of the outer build,
/// its jobserver, and the build-script metadata.
fn clear_build_script_env(build: &mut Command) {
    const VARS: [&str; 23] = [
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "PROFILE",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "OPT_LEVEL",
        "DEBUG",
        "NUM_JOBS",
    ];
    const PREFIXES: [&str; 4] = ["CARGO_CFG_", "CARGO_FEATURE_", "CARGO_PKG_", "DEP_"];
    for var in VARS {
        build.env_remove(var);
    }
    for (name, _) in env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if PREFIXES.iter().any(|prefix| name.starts_with(prefix)) {
            build.env_remove(name);
        }
    }
}
