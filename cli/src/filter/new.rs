//! `weft filter new NAME`: a filter crate that builds for wasm32-wasip2 and
//! passes its own test as generated. The files are templates under
//! `cli/templates/`, compiled into the binary.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

#[derive(Args)]
pub struct NewArgs {
    /// The crate's directory, created; its last component is the crate's
    /// name (e.g. `my-filter` or `filters/my-filter`).
    path: PathBuf,
    /// Where weft-sdk comes from: a path to a checkout's `sdk/`, or a
    /// version from a registry (e.g. `0.1`). [default: the sdk/ of the
    /// checkout this weft was built from]
    #[arg(long, value_name = "PATH|VERSION")]
    sdk: Option<String>,
    /// What the filter starts as.
    #[arg(long, value_enum, default_value_t = Template::HeaderCheck)]
    template: Template,
}

/// The starting points.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// Refuse requests whose header is missing or not allowed (401/403).
    HeaderCheck,
    /// Set and remove response headers.
    ResponseRewrite,
    /// Look at the whole request body; refuse one with a denied word.
    Body,
    /// Count requests per client across instances with shared state.
    SharedState,
}

impl Template {
    /// All of them.
    #[cfg(test)]
    pub const ALL: [Template; 4] = [
        Template::HeaderCheck,
        Template::ResponseRewrite,
        Template::Body,
        Template::SharedState,
    ];

    /// `src/lib.rs`, `config.json` and `cases.yaml` of the template.
    fn files(self) -> [&'static str; 3] {
        match self {
            Template::HeaderCheck => [
                include_str!("../../templates/header-check/lib.rs"),
                include_str!("../../templates/header-check/config.json"),
                include_str!("../../templates/header-check/cases.yaml"),
            ],
            Template::ResponseRewrite => [
                include_str!("../../templates/response-rewrite/lib.rs"),
                include_str!("../../templates/response-rewrite/config.json"),
                include_str!("../../templates/response-rewrite/cases.yaml"),
            ],
            Template::Body => [
                include_str!("../../templates/body/lib.rs"),
                include_str!("../../templates/body/config.json"),
                include_str!("../../templates/body/cases.yaml"),
            ],
            Template::SharedState => [
                include_str!("../../templates/shared-state/lib.rs"),
                include_str!("../../templates/shared-state/config.json"),
                include_str!("../../templates/shared-state/cases.yaml"),
            ],
        }
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.to_possible_value().expect("no variant is skipped");
        f.write_str(value.get_name())
    }
}

const CARGO_TOML: &str = include_str!("../../templates/Cargo.toml.in");
const README: &str = include_str!("../../templates/README.md.in");
const GITIGNORE: &str = "/target\n";

/// The SDK of the checkout this binary was built from.
fn built_in_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

pub fn run(args: NewArgs) -> Result<(), String> {
    let name = args
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            format!(
                "{}: no crate name at the end of the path",
                args.path.display()
            )
        })?
        .to_string();
    check_crate_name(&name)?;
    if args.path.exists() {
        return Err(format!(
            "{} exists already: give a new directory (nothing was written)",
            args.path.display()
        ));
    }
    let sdk = sdk_dependency(args.sdk.as_deref())?;
    let lib_name = name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("{{name}}", &name)
            .replace("{{lib_name}}", &lib_name)
            .replace("{{sdk}}", &sdk)
            .replace("{{template}}", &args.template.to_string())
    };
    let [lib, config, cases] = args.template.files();
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("README.md", fill(README)),
        (".gitignore", GITIGNORE.to_string()),
        ("src/lib.rs", fill(lib)),
        ("config.json", fill(config)),
        ("cases.yaml", fill(cases)),
    ];
    std::fs::create_dir_all(args.path.join("src"))
        .map_err(|e| format!("cannot create {}: {e}", args.path.display()))?;
    for (file, text) in files {
        let path = args.path.join(file);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!(
        "created {} ({} template): a filter crate `{name}`",
        args.path.display(),
        args.template
    );
    println!("  cd {}", args.path.display());
    println!("  cargo test                                     # its unit test");
    println!("  cargo build --target wasm32-wasip2 --release   # the component");
    println!(
        "  weft filter test target/wasm32-wasip2/release/{lib_name}.wasm --config config.json cases.yaml"
    );
    Ok(())
}

/// The `weft-sdk = …` dependency's value: a path (made absolute) or a
/// version requirement.
fn sdk_dependency(sdk: Option<&str>) -> Result<String, String> {
    let path = match sdk {
        Some(v) if looks_like_version(v) => return Ok(format!("{:?}", v)),
        Some(p) => PathBuf::from(p),
        None => {
            let built_in = built_in_sdk();
            if !built_in.join("Cargo.toml").is_file() {
                return Err(format!(
                    "the weft-sdk this weft was built with is not at {} any more: give \
                     --sdk PATH (the sdk/ directory of a weft checkout) or --sdk VERSION",
                    built_in.display()
                ));
            }
            built_in
        }
    };
    let absolute = path
        .canonicalize()
        .map_err(|e| format!("--sdk {}: {e}", path.display()))?;
    if !absolute.join("Cargo.toml").is_file() {
        return Err(format!(
            "--sdk {}: no Cargo.toml there (give the sdk/ directory of a weft checkout)",
            path.display()
        ));
    }
    let text = absolute
        .to_str()
        .ok_or_else(|| format!("--sdk {}: not a UTF-8 path", absolute.display()))?;
    Ok(format!("{{ path = {text:?} }}"))
}

/// `1`, `0.1`, `0.1.0`, `=0.1.0`, `^0.1`, `~0.1`: a version requirement.
fn looks_like_version(text: &str) -> bool {
    let rest = text.trim_start_matches(['=', '^', '~']);
    !rest.is_empty()
        && rest.split('.').count() <= 3
        && rest
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

/// A name cargo accepts for a package and its library: ASCII letters,
/// digits, `-` and `_`, starting with a letter, not a Rust keyword or a
/// name cargo reserves.
fn check_crate_name(name: &str) -> Result<(), String> {
    const RESERVED: [&str; 12] = [
        "test",
        "std",
        "core",
        "alloc",
        "proc_macro",
        "proc-macro",
        "build",
        "deps",
        "examples",
        "incremental",
        "target",
        "weft_sdk",
    ];
    const KEYWORDS: [&str; 51] = [
        "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn",
        "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
        "return", "self", "Self", "static", "struct", "super", "trait", "true", "type", "unsafe",
        "use", "where", "while", "async", "await", "dyn", "abstract", "become", "box", "do",
        "final", "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try",
    ];
    let invalid = |why: String| Err(format!("invalid crate name {name:?}: {why}"));
    let Some(first) = name.chars().next() else {
        return invalid("it is empty".into());
    };
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return invalid(format!(
            "{c:?} is not allowed (only ASCII letters, digits, `-` and `_`)"
        ));
    }
    if !first.is_ascii_alphabetic() {
        return invalid("it must start with an ASCII letter".into());
    }
    if name.len() > 64 {
        return invalid("it is longer than 64 characters".into());
    }
    let lib = name.replace('-', "_");
    if KEYWORDS.contains(&lib.as_str()) {
        return invalid("it is a Rust keyword".into());
    }
    if RESERVED.contains(&name) || RESERVED.contains(&lib.as_str()) || name == "weft-sdk" {
        return invalid("cargo or Rust reserves it (or it is the SDK's own)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_are_checked_and_the_error_says_why() {
        assert!(check_crate_name("my-filter").is_ok());
        assert!(check_crate_name("auth_v2").is_ok());
        let why = |name| check_crate_name(name).unwrap_err();
        assert!(why("").contains("empty"));
        assert!(why("my filter").contains("' ' is not allowed"));
        assert!(why("2fa").contains("start with an ASCII letter"));
        assert!(why("fn").contains("Rust keyword"));
        assert!(why("test").contains("reserves"));
        assert!(why("héllo").contains("'é' is not allowed"));
    }

    #[test]
    fn the_sdk_is_a_version_or_an_absolute_path() {
        assert_eq!(sdk_dependency(Some("0.1")).unwrap(), "\"0.1\"");
        assert_eq!(sdk_dependency(Some("=0.1.0")).unwrap(), "\"=0.1.0\"");
        let path = sdk_dependency(None).unwrap();
        assert!(path.starts_with("{ path = \"/"), "{path}");
        assert!(path.ends_with("/sdk\" }"), "{path}");
        let err = sdk_dependency(Some("/no/such/sdk")).unwrap_err();
        assert!(err.starts_with("--sdk /no/such/sdk"), "{err}");
    }

    #[test]
    fn every_template_has_its_files() {
        for template in Template::ALL {
            let [lib, config, cases] = template.files();
            assert!(lib.contains("#[weft_sdk::filter]"), "{template}");
            assert!(lib.contains("#[cfg(test)]"), "{template}");
            serde_json::from_str::<serde_json::Value>(config).expect("config.json is JSON");
            assert!(cases.contains("cases:"), "{template}");
        }
    }
}
