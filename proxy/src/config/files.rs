//! `{"$file": "path"}` in a filter's config: the proxy replaces it by the
//! file's content when it loads the config, so secrets and key sets can
//! live in files of their own (filters have no filesystem). A file that
//! parses as JSON is inlined as that value, any other file as a string.
//! `{"$secret": value}` is replaced by `value`: it only marks the value as
//! a secret, for the admin API's redaction (`admin::redact`).
//!
//! Paths are relative to the config file, and confined to its directory:
//! the path is resolved (symlinks and `..` included) before it is checked,
//! so neither `../x`, an absolute path elsewhere, nor a link out of the
//! directory reaches another file. Only regular files are read (a device
//! or FIFO is refused without reading or blocking), up to
//! `inline_files.max_bytes`.
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{ConfigError, InlineFilesConfig};

/// The key that marks a file reference.
pub const FILE_KEY: &str = "$file";
/// The key that marks a secret: `{"$secret": value}` is handed to the
/// filter as `value`, and the admin API's `/config` shows it redacted.
pub const SECRET_KEY: &str = "$secret";

/// Where `$file` references may point, and how large a file may be.
#[derive(Debug)]
pub struct InlineFiles {
    /// The config's directory, resolved; the error when it cannot be.
    root: Result<PathBuf, String>,
    max_bytes: u64,
}

impl InlineFiles {
    /// References relative to `base_dir` (the config file's directory).
    pub fn new(base_dir: &Path, config: &InlineFilesConfig) -> Self {
        let root = base_dir.canonicalize().map_err(|e| {
            format!(
                "cannot resolve the config's directory {}: {e}",
                base_dir.display()
            )
        });
        InlineFiles {
            root,
            max_bytes: config.max_bytes,
        }
    }

    /// `value` with every file reference replaced by the file's content;
    /// `at` is the path of `value` in the config, for errors.
    pub fn inline(&self, value: &Value, at: &str) -> Result<Value, Vec<ConfigError>> {
        let mut out = value.clone();
        let mut errors = Vec::new();
        self.inline_into(&mut out, at, &mut errors);
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    fn inline_into(&self, value: &mut Value, at: &str, errors: &mut Vec<ConfigError>) {
        match value {
            Value::Object(map) if map.len() == 1 && map.contains_key(FILE_KEY) => {
                let at = format!("{at}.{FILE_KEY}");
                let Some(path) = map[FILE_KEY].as_str() else {
                    errors.push(ConfigError::new(at, "must be a path (a string)"));
                    return;
                };
                match self.read(path) {
                    Ok(text) => *value = serde_json::from_str(&text).unwrap_or(Value::String(text)),
                    Err(why) => errors.push(ConfigError::new(at, why)),
                }
            }
            Value::Object(map) if map.len() == 1 && map.contains_key(SECRET_KEY) => {
                let mut secret = map.remove(SECRET_KEY).unwrap_or_default();
                self.inline_into(&mut secret, &format!("{at}.{SECRET_KEY}"), errors);
                *value = secret;
            }
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    self.inline_into(item, &format!("{at}.{key}"), errors);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.inline_into(item, &format!("{at}[{i}]"), errors);
                }
            }
            _ => {}
        }
    }

    /// The text of the file `path` names, if it may be read.
    fn read(&self, path: &str) -> Result<String, String> {
        let root = self.root.as_ref()?;
        let full = root.join(path);
        let cannot = |e: std::io::Error| format!("cannot read {}: {e}", full.display());
        let resolved = full.canonicalize().map_err(cannot)?;
        if !resolved.starts_with(root) {
            return Err(format!(
                "{path:?} resolves to {}, outside the config's directory {}: files inlined into a config must be in its directory",
                resolved.display(),
                root.display()
            ));
        }
        // Non-blocking, so that opening a FIFO does not wait for a writer;
        // no link followed, should one have been put in place since.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&resolved)
            .map_err(cannot)?;
        let meta = file.metadata().map_err(cannot)?;
        if !meta.is_file() {
            return Err(format!(
                "{} is not a regular file (a device, FIFO, socket or directory): only regular files are inlined",
                resolved.display()
            ));
        }
        if meta.len() > self.max_bytes {
            return Err(too_large(&resolved, self.max_bytes));
        }
        read_capped(file, self.max_bytes).map_err(|e| match e {
            Some(e) => cannot(e),
            None => too_large(&resolved, self.max_bytes),
        })
    }
}

fn too_large(path: &Path, max: u64) -> String {
    format!(
        "{} is larger than inline_files.max_bytes ({max} bytes)",
        path.display()
    )
}

/// The file's text, at most `max` bytes (`Err(None)` past it: it grew
/// after it was looked at).
fn read_capped(file: File, max: u64) -> Result<String, Option<std::io::Error>> {
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text).map_err(Some)?;
    if text.len() as u64 > max {
        return Err(None);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-files-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn files(dir: &Path, max_bytes: u64) -> InlineFiles {
        InlineFiles::new(dir, &InlineFilesConfig { max_bytes })
    }

    /// The one error inlining `{"$file": path}` gives.
    fn error(files: &InlineFiles, path: &str) -> String {
        let errors = files
            .inline(&json!({"a": {"$file": path}}), "c")
            .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "c.a.$file");
        errors[0].message.clone()
    }

    #[test]
    fn json_files_inline_as_values_and_others_as_strings() {
        let dir = temp("inline");
        std::fs::create_dir(dir.join("keys")).unwrap();
        std::fs::write(dir.join("keys/keys.json"), r#"{"keys": [1, 2]}"#).unwrap();
        std::fs::write(dir.join("secret.txt"), "s3cret").unwrap();
        let config = json!({
            "jwks": {"$file": "keys/keys.json"},
            "list": [{"$file": "secret.txt"}],
            "inside": {"$file": dir.join("keys/../secret.txt")},
            "kept": {"$file": "x", "other": 1},
        });
        let out = files(&dir, 1024).inline(&config, "c").unwrap();
        assert_eq!(out["jwks"], json!({"keys": [1, 2]}));
        assert_eq!(out["list"][0], json!("s3cret"));
        assert_eq!(out["inside"], json!("s3cret"), "an absolute path inside");
        assert_eq!(
            out["kept"], config["kept"],
            "only a lone $file key is a reference"
        );
        let missing = error(&files(&dir, 1024), "nope");
        assert!(missing.starts_with("cannot read"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_outside_the_directory_are_refused_links_included() {
        let dir = temp("outside");
        let config_dir = dir.join("config");
        std::fs::create_dir(&config_dir).unwrap();
        std::fs::write(dir.join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), config_dir.join("link")).unwrap();
        let files = files(&config_dir, 1024);
        for path in [
            "../secret",
            "link",
            "/etc/hostname",
            "./../config/../secret",
        ] {
            let message = error(&files, path);
            assert!(
                message.contains("outside the config's directory"),
                "{path}: {message}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_regular_files_within_the_size_cap_are_read() {
        let dir = temp("kinds");
        std::fs::write(dir.join("big"), "0123456789").unwrap();
        std::fs::write(dir.join("fits"), "012345678").unwrap();
        let fifo =
            std::ffi::CString::new(dir.join("fifo").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero")).unwrap();
        let files = files(&dir, 9);
        let message = error(&files, "big");
        assert!(
            message.ends_with("big is larger than inline_files.max_bytes (9 bytes)"),
            "{message}"
        );
        assert_eq!(
            files.inline(&json!({"$file": "fits"}), "c").unwrap(),
            json!("012345678")
        );
        // No reader blocks: the FIFO has no writer.
        assert!(error(&files, "fifo").contains("is not a regular file"));
        assert!(error(&files, ".").contains("is not a regular file"));
        assert!(error(&files, "zero").contains("outside the config's directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
