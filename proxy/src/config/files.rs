//! `{"$file": "path"}` in a filter's config: the proxy replaces it by the
//! file's content when it loads the config, so secrets and key sets can
//! live in files of their own (filters have no filesystem). A file that
//! parses as JSON is inlined as that value, any other file as a string.
//! Paths are relative to the config file.

use std::path::Path;

use serde_json::Value;

use super::ConfigError;

/// The key that marks a file reference.
pub const FILE_KEY: &str = "$file";

/// `value` with every file reference replaced by the file's content; `at`
/// is the path of `value` in the config, for errors.
pub fn inline_files(value: &Value, base_dir: &Path, at: &str) -> Result<Value, Vec<ConfigError>> {
    let mut out = value.clone();
    let mut errors = Vec::new();
    inline(&mut out, base_dir, at, &mut errors);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn inline(value: &mut Value, base_dir: &Path, at: &str, errors: &mut Vec<ConfigError>) {
    match value {
        Value::Object(map) if map.len() == 1 && map.contains_key(FILE_KEY) => {
            let at = format!("{at}.{FILE_KEY}");
            let Some(path) = map[FILE_KEY].as_str() else {
                errors.push(ConfigError::new(at, "must be a path (a string)"));
                return;
            };
            let full = base_dir.join(path);
            match std::fs::read_to_string(&full) {
                Ok(text) => *value = serde_json::from_str(&text).unwrap_or(Value::String(text)),
                Err(e) => errors.push(ConfigError::new(
                    at,
                    format!("cannot read {}: {e}", full.display()),
                )),
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                inline(item, base_dir, &format!("{at}.{key}"), errors);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                inline(item, base_dir, &format!("{at}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_files_inline_as_values_and_others_as_strings() {
        let dir = std::env::temp_dir().join(format!("weft-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keys.json"), r#"{"keys": [1, 2]}"#).unwrap();
        std::fs::write(dir.join("secret.txt"), "s3cret").unwrap();
        let config = json!({
            "jwks": {"$file": "keys.json"},
            "list": [{"$file": "secret.txt"}],
            "kept": {"$file": "x", "other": 1},
        });
        let out = inline_files(&config, &dir, "c").unwrap();
        assert_eq!(out["jwks"], json!({"keys": [1, 2]}));
        assert_eq!(out["list"][0], json!("s3cret"));
        assert_eq!(
            out["kept"], config["kept"],
            "only a lone $file key is a reference"
        );
        let missing = inline_files(&json!({"a": {"$file": "nope"}}), &dir, "c").unwrap_err();
        assert_eq!(missing[0].path, "c.a.$file");
        assert!(
            missing[0].message.starts_with("cannot read"),
            "{:?}",
            missing[0]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
