//! The bearer token of writes to the control plane: `--token-file FILE`,
//! else the `WEFT_TOKEN` environment variable. The same on `weft control`
//! (the token it requires) and on `weft push` / `weft apply` (the token
//! they present).

use std::path::Path;

use anyhow::{Context, bail};

/// The environment variable holding the token when no file is given.
pub const TOKEN_ENV: &str = "WEFT_TOKEN";

/// The token from `file` (its first line, surrounding whitespace removed),
/// else from `WEFT_TOKEN`; `None` when neither is given. An empty token is
/// an error: it would look like protection and be none.
pub fn read(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let (token, from) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--token-file {}: cannot read", path.display()))?;
            let line = text.lines().next().unwrap_or("").trim().to_string();
            (line, format!("--token-file {}", path.display()))
        }
        None => match std::env::var(TOKEN_ENV) {
            Ok(value) => (value.trim().to_string(), TOKEN_ENV.to_string()),
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(e) => bail!("{TOKEN_ENV}: {e}"),
        },
    };
    if token.is_empty() {
        bail!("{from}: the token is empty");
    }
    Ok(Some(token))
}
