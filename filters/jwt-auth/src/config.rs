//! The filter's config and its validation.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::alg::Alg;
use crate::claims::ClaimRules;
use crate::jwk::{self, KeySet};

/// The config as written.
// No `Debug`: `jwks` may hold shared secrets.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The keys, inline: a JWK Set `{"keys": [...]}`.
    #[serde(default)]
    pub jwks: Option<Value>,
    /// Where to fetch the JWK Set (`http://host:port/path`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How long a fetched JWK Set is used before it is fetched again.
    #[serde(default = "default_jwks_ttl_s")]
    pub jwks_ttl_s: u64,
    /// Least time between two fetches (for unknown `kid`s, or after a
    /// failure).
    #[serde(default = "default_jwks_min_refresh_s")]
    pub jwks_min_refresh_s: u64,
    /// Time allowed for one fetch.
    #[serde(default = "default_jwks_timeout_ms")]
    pub jwks_timeout_ms: u32,
    /// The accepted `alg`s.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// The accepted `iss`: a string or a list.
    #[serde(default)]
    pub issuer: Option<Value>,
    /// The accepted audiences: a list (or one string).
    #[serde(default)]
    pub audiences: Option<Value>,
    /// Claims every token must have.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// Claim name → request header set from it for the upstream.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Remove the token's header from the request sent upstream.
    #[serde(default)]
    pub strip_token: bool,
    /// The request header carrying the token.
    #[serde(default = "default_header")]
    pub header: String,
    /// What precedes the token in that header (compared without case).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The `realm` of the `www-authenticate` challenge, if any.
    #[serde(default)]
    pub realm: Option<String>,
}

fn default_jwks_ttl_s() -> u64 {
    600
}

fn default_jwks_min_refresh_s() -> u64 {
    30
}

fn default_jwks_timeout_ms() -> u32 {
    2000
}

fn default_leeway_s() -> u64 {
    30
}

fn default_header() -> String {
    "authorization".into()
}

fn default_prefix() -> String {
    "Bearer ".into()
}

/// Largest `leeway_s`: a day.
const MAX_LEEWAY_S: u64 = 86_400;
/// Largest `jwks_ttl_s` and `jwks_min_refresh_s`: a week.
const MAX_JWKS_S: u64 = 7 * 86_400;
/// Largest `jwks_timeout_ms` (the proxy's own cap on a callout).
const MAX_JWKS_TIMEOUT_MS: u32 = 60_000;

/// Headers the proxy derives from the message framing, or that route the
/// request: a claim must not set them.
const RESERVED_HEADERS: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// Where the keys come from.
pub enum KeySource {
    /// Given in the config.
    Inline(KeySet),
    /// Fetched from a URL.
    Remote(RemoteSettings),
}

/// How to fetch the JWK Set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSettings {
    /// The URL.
    pub url: String,
    /// `host:port` of the URL, for messages (`allow_http`).
    pub authority: String,
    /// Refetch after this long, in seconds.
    pub ttl_s: u64,
    /// At most one fetch per this long, in seconds.
    pub min_refresh_s: u64,
    /// Time allowed for a fetch.
    pub timeout_ms: u32,
}

/// The validated config.
pub struct Settings {
    /// The keys.
    pub source: KeySource,
    /// The accepted algorithms.
    pub algorithms: Vec<Alg>,
    /// Claim checks.
    pub rules: ClaimRules,
    /// (claim, header) pairs, in claim order.
    pub forward: Vec<(String, String)>,
    /// Remove the token header before forwarding.
    pub strip_token: bool,
    /// The token header, lower case.
    pub header: String,
    /// The prefix before the token.
    pub prefix: String,
    /// The challenge's realm.
    pub realm: Option<String>,
}

impl Config {
    /// Checks the config and returns the settings.
    pub fn validate(self) -> Result<Settings, String> {
        let algorithms = algorithms(self.algorithms)?;
        let source = match (self.jwks, self.jwks_url) {
            (Some(jwks), None) => {
                let set = jwk::parse_jwks_strict(&jwks).map_err(|e| format!("jwks.{e}"))?;
                if set.is_empty() {
                    return Err("jwks.keys is empty: give at least one key".into());
                }
                KeySource::Inline(set)
            }
            (None, Some(url)) => KeySource::Remote(RemoteSettings {
                authority: url_authority(&url)?,
                url,
                ttl_s: in_range("jwks_ttl_s", self.jwks_ttl_s, 1, MAX_JWKS_S)?,
                min_refresh_s: in_range(
                    "jwks_min_refresh_s",
                    self.jwks_min_refresh_s,
                    1,
                    MAX_JWKS_S,
                )?,
                timeout_ms: in_range(
                    "jwks_timeout_ms",
                    u64::from(self.jwks_timeout_ms),
                    1,
                    u64::from(MAX_JWKS_TIMEOUT_MS),
                )? as u32,
            }),
            (Some(_), Some(_)) => {
                return Err(
                    "give either `jwks` (the keys) or `jwks_url` (where to fetch \
                            them), not both"
                        .into(),
                );
            }
            (None, None) => {
                return Err(
                    "jwt-auth needs keys: `jwks` (a JWK Set, {\"keys\": [...]}) or \
                            `jwks_url` (http://host:port/path of one)"
                        .into(),
                );
            }
        };
        let has_hmac_key = match &source {
            KeySource::Inline(set) => set.has_alg(Alg::Hs256),
            KeySource::Remote(_) => false,
        };
        match (algorithms.contains(&Alg::Hs256), has_hmac_key) {
            (true, false) => {
                return Err(
                    "algorithms lists HS256, which needs a shared secret: an `oct` key \
                            in the inline `jwks` (shared secrets are never fetched from a URL)"
                        .into(),
                );
            }
            (false, true) => {
                return Err(
                    "jwks has an `oct` key (HS256), but `algorithms` does not list \
                            HS256: add it to accept HS256 tokens, or remove the key"
                        .into(),
                );
            }
            _ => {}
        }
        let header = header_name("header", &self.header)?;
        let forward = forward_claims(self.forward_claims, &header)?;
        Ok(Settings {
            source,
            algorithms,
            rules: ClaimRules {
                issuers: string_list("issuer", self.issuer)?,
                audiences: string_list("audiences", self.audiences)?,
                required: required_claims(self.required_claims)?,
                leeway_s: in_range("leeway_s", self.leeway_s, 0, MAX_LEEWAY_S)?,
            },
            forward,
            strip_token: self.strip_token,
            header,
            prefix: prefix(self.prefix)?,
            realm: self.realm.map(realm).transpose()?,
        })
    }
}

fn algorithms(names: Option<Vec<String>>) -> Result<Vec<Alg>, String> {
    let Some(names) = names else {
        return Ok(Alg::DEFAULT.to_vec());
    };
    if names.is_empty() {
        return Err(format!(
            "algorithms is empty: list the accepted ones ({})",
            Alg::supported_list()
        ));
    }
    let mut algs = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let alg = Alg::from_name(name).ok_or_else(|| {
            if name.eq_ignore_ascii_case("none") {
                format!("algorithms[{index}]: `none` (unsigned tokens) is never accepted")
            } else {
                format!(
                    "algorithms[{index}]: {name:?} is not supported (supported: {})",
                    Alg::supported_list()
                )
            }
        })?;
        if !algs.contains(&alg) {
            algs.push(alg);
        }
    }
    Ok(algs)
}

/// Checks `http://host[:port]/path` and returns `host:port`.
fn url_authority(url: &str) -> Result<String, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "jwks_url {url:?}: must start with http:// (the proxy's callouts do not speak TLS: \
             serve the JWK Set on a local or trusted network address)"
        ));
    };
    if let Some(bad) = url
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '#')
    {
        return Err(format!(
            "jwks_url {url:?}: {bad:?} is not allowed in the URL"
        ));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("jwks_url {url:?}: the host is missing"));
    }
    if authority.contains('@') {
        return Err(format!(
            "jwks_url {url:?}: credentials in the URL are not supported"
        ));
    }
    // `host`, `host:port`, `[v6]` or `[v6]:port`.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    if host.is_empty() {
        return Err(format!("jwks_url {url:?}: the host is missing"));
    }
    let port = match port {
        None => 80,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("jwks_url {url:?}: {port:?} is not a port number"))?,
    };
    Ok(format!("{host}:{port}"))
}

fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<u64, String> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{field}: {value} is out of range ({min} to {max})"))
    }
}

/// A string or a list of non-empty strings.
fn string_list(field: &str, value: Option<Value>) -> Result<Vec<String>, String> {
    let items = match value {
        None => return Ok(Vec::new()),
        Some(Value::String(one)) => vec![Value::String(one)],
        Some(Value::Array(many)) if !many.is_empty() => many,
        Some(Value::Array(_)) => {
            return Err(format!("{field} is empty: leave it out to accept any"));
        }
        Some(_) => return Err(format!("{field} must be a string or a list of strings")),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::String(text) if !text.is_empty() => Ok(text),
            _ => Err(format!("{field}[{index}] must be a non-empty string")),
        })
        .collect()
}

fn required_claims(names: Vec<String>) -> Result<Vec<String>, String> {
    if let Some(index) = names.iter().position(String::is_empty) {
        return Err(format!("required_claims[{index}] is empty"));
    }
    Ok(names)
}

fn forward_claims(
    map: BTreeMap<String, String>,
    token_header: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut forward: Vec<(String, String)> = Vec::new();
    for (claim, header) in map {
        if claim.is_empty() {
            return Err("forward_claims: a claim name is empty".into());
        }
        let field = format!("forward_claims.{claim}");
        let header = header_name(&field, &header)?;
        if header == token_header {
            return Err(format!(
                "{field}: `{header}` is the header that carries the token"
            ));
        }
        if let Some((other, _)) = forward.iter().find(|(_, h)| *h == header) {
            return Err(format!(
                "{field}: `{header}` is already set from claim {other:?}"
            ));
        }
        forward.push((claim, header));
    }
    Ok(forward)
}

/// Checks a header name from field `field` and lower-cases it.
fn header_name(field: &str, name: &str) -> Result<String, String> {
    let lower = weft_sdk::header::check_name(name).map_err(|e| format!("{field}: {e}"))?;
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "{field}: `{name}` is managed by the proxy and cannot be used here"
        ));
    }
    Ok(lower)
}

fn prefix(prefix: String) -> Result<String, String> {
    if let Some(bad) = prefix.chars().find(|c| c.is_control() || !c.is_ascii()) {
        return Err(format!(
            "prefix {prefix:?}: {bad:?} is not allowed (printable ASCII only)"
        ));
    }
    Ok(prefix)
}

fn realm(realm: String) -> Result<String, String> {
    if let Some(bad) = realm
        .chars()
        .find(|c| !(' '..='~').contains(c) || *c == '"' || *c == '\\')
    {
        return Err(format!(
            "realm {realm:?}: {bad:?} is not allowed (printable ASCII without \" and \\)"
        ));
    }
    Ok(realm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkeys;
    use serde_json::json;

    fn parse(value: Value) -> Result<Settings, String> {
        let config: Config = serde_json::from_value(value).map_err(|e| e.to_string())?;
        config.validate()
    }

    fn err(value: Value) -> String {
        match parse(value.clone()) {
            Ok(_) => panic!("accepted: {value}"),
            Err(e) => e,
        }
    }

    fn ec_only() -> Value {
        json!({"keys": [testkeys::ec_jwk("ec")]})
    }

    #[test]
    fn defaults() {
        let s = parse(json!({"jwks": ec_only()})).unwrap();
        assert_eq!(s.algorithms, Alg::DEFAULT);
        assert_eq!(s.header, "authorization");
        assert_eq!(s.prefix, "Bearer ");
        assert!(!s.strip_token);
        assert_eq!(s.realm, None);
        assert_eq!(s.rules.leeway_s, 30);
        assert!(s.rules.issuers.is_empty() && s.rules.audiences.is_empty());
        assert!(s.forward.is_empty());
        assert!(matches!(s.source, KeySource::Inline(ref set) if set.len() == 1));
    }

    #[test]
    fn everything_set() {
        let s = parse(json!({
            "jwks": testkeys::jwks(),
            "algorithms": ["HS256", "ES256", "ES256"],
            "issuer": ["https://a", "https://b"],
            "audiences": "api",
            "required_claims": ["sub"],
            "leeway_s": 0,
            "forward_claims": {"sub": "X-User", "scope": "x-scope"},
            "strip_token": true,
            "header": "X-Token",
            "prefix": "",
            "realm": "api"
        }))
        .unwrap();
        assert_eq!(s.algorithms, [Alg::Hs256, Alg::Es256], "duplicates dropped");
        assert_eq!(s.rules.issuers, ["https://a", "https://b"]);
        assert_eq!(s.rules.audiences, ["api"]);
        assert_eq!(s.rules.required, ["sub"]);
        assert_eq!(s.rules.leeway_s, 0);
        assert_eq!(
            s.forward,
            [
                ("scope".into(), "x-scope".into()),
                ("sub".into(), "x-user".into())
            ]
        );
        assert!(s.strip_token);
        assert_eq!(s.header, "x-token");
        assert_eq!(s.prefix, "");
        assert_eq!(s.realm.as_deref(), Some("api"));
    }

    #[test]
    fn a_jwks_url_with_its_timings() {
        let s = parse(
            json!({"jwks_url": "http://127.0.0.1:8081/.well-known/jwks.json",
                             "jwks_ttl_s": 60, "jwks_min_refresh_s": 5}),
        )
        .unwrap();
        let KeySource::Remote(remote) = s.source else {
            panic!("not remote")
        };
        assert_eq!(
            remote,
            RemoteSettings {
                url: "http://127.0.0.1:8081/.well-known/jwks.json".into(),
                authority: "127.0.0.1:8081".into(),
                ttl_s: 60,
                min_refresh_s: 5,
                timeout_ms: 2000,
            }
        );
        let s = parse(json!({"jwks_url": "http://keys.internal"})).unwrap();
        let KeySource::Remote(remote) = s.source else {
            panic!("not remote")
        };
        assert_eq!(remote.authority, "keys.internal:80");
        assert_eq!((remote.ttl_s, remote.min_refresh_s), (600, 30));
        let s = parse(json!({"jwks_url": "http://[::1]:9000/k"})).unwrap();
        let KeySource::Remote(remote) = s.source else {
            panic!("not remote")
        };
        assert_eq!(remote.authority, "[::1]:9000");
    }

    #[test]
    fn bad_urls() {
        let cases = [
            ("https://idp/jwks", "must start with http://"),
            ("http:///jwks", "the host is missing"),
            (
                "http://u:p@idp/jwks",
                "credentials in the URL are not supported",
            ),
            ("http://idp:99999/jwks", "\"99999\" is not a port number"),
            ("http://idp:0/", "\"0\" is not a port number"),
            ("http://idp/a b", "' ' is not allowed in the URL"),
        ];
        for (url, expected) in cases {
            let e = err(json!({ "jwks_url": url }));
            assert!(e.starts_with(&format!("jwks_url {url:?}: ")), "{e}");
            assert!(e.contains(expected), "{url}: {e}");
        }
    }

    #[test]
    fn keys_are_required_once() {
        assert!(err(json!({})).starts_with("jwt-auth needs keys"));
        assert!(
            err(json!({"jwks": ec_only(), "jwks_url": "http://a/"}))
                .starts_with("give either `jwks`")
        );
        assert_eq!(
            err(json!({"jwks": {"keys": []}})),
            "jwks.keys is empty: give at least one key"
        );
        assert_eq!(
            err(json!({"jwks": {"keys": [{"kty": "EC", "crv": "P-256"}]}})),
            "jwks.keys[0]: `x` is missing"
        );
        assert_eq!(
            err(json!({"jwks": [testkeys::ec_jwk("ec")]})),
            "jwks.a JWK Set must be a JSON object {\"keys\": [...]}"
        );
    }

    #[test]
    fn algorithms_are_checked() {
        assert_eq!(
            err(json!({"jwks": ec_only(), "algorithms": ["ES256", "none"]})),
            "algorithms[1]: `none` (unsigned tokens) is never accepted"
        );
        assert_eq!(
            err(json!({"jwks": ec_only(), "algorithms": ["PS256"]})),
            "algorithms[0]: \"PS256\" is not supported (supported: RS256, ES256, EdDSA, HS256)"
        );
        assert!(
            err(json!({"jwks": ec_only(), "algorithms": []})).starts_with("algorithms is empty")
        );
    }

    #[test]
    fn hs256_needs_an_inline_secret_and_a_secret_needs_hs256() {
        assert!(
            err(json!({"jwks": ec_only(), "algorithms": ["HS256"]}))
                .starts_with("algorithms lists HS256, which needs a shared secret")
        );
        assert!(
            err(json!({"jwks_url": "http://a/", "algorithms": ["HS256"]}))
                .starts_with("algorithms lists HS256")
        );
        assert!(
            err(json!({"jwks": testkeys::jwks()}))
                .starts_with("jwks has an `oct` key (HS256), but `algorithms` does not list HS256")
        );
    }

    #[test]
    fn timings_are_bounded() {
        let url = "http://a/";
        assert_eq!(
            err(json!({"jwks_url": url, "jwks_ttl_s": 0})),
            "jwks_ttl_s: 0 is out of range (1 to 604800)"
        );
        assert_eq!(
            err(json!({"jwks_url": url, "jwks_min_refresh_s": 0})),
            "jwks_min_refresh_s: 0 is out of range (1 to 604800)"
        );
        assert_eq!(
            err(json!({"jwks_url": url, "jwks_timeout_ms": 60001})),
            "jwks_timeout_ms: 60001 is out of range (1 to 60000)"
        );
        assert_eq!(
            err(json!({"jwks": ec_only(), "leeway_s": 86401})),
            "leeway_s: 86401 is out of range (0 to 86400)"
        );
    }

    #[test]
    fn issuer_and_audiences_are_strings() {
        assert_eq!(
            err(json!({"jwks": ec_only(), "issuer": 3})),
            "issuer must be a string or a list of strings"
        );
        assert_eq!(
            err(json!({"jwks": ec_only(), "issuer": []})),
            "issuer is empty: leave it out to accept any"
        );
        assert_eq!(
            err(json!({"jwks": ec_only(), "audiences": ["a", ""]})),
            "audiences[1] must be a non-empty string"
        );
        assert_eq!(
            err(json!({"jwks": ec_only(), "required_claims": ["sub", ""]})),
            "required_claims[1] is empty"
        );
    }

    #[test]
    fn forwarded_headers_are_checked() {
        let with = |forward: Value| err(json!({"jwks": ec_only(), "forward_claims": forward}));
        assert!(
            with(json!({"sub": "x user"}))
                .starts_with("forward_claims.sub: invalid header name `x user`")
        );
        assert_eq!(
            with(json!({"sub": "Host"})),
            "forward_claims.sub: `Host` is managed by the proxy and cannot be used here"
        );
        assert_eq!(
            with(json!({"sub": "Authorization"})),
            "forward_claims.sub: `authorization` is the header that carries the token"
        );
        assert_eq!(
            with(json!({"a": "x-who", "b": "X-Who"})),
            "forward_claims.b: `x-who` is already set from claim \"a\""
        );
        assert_eq!(
            with(json!({"": "x-who"})),
            "forward_claims: a claim name is empty"
        );
    }

    #[test]
    fn header_prefix_and_realm_are_checked() {
        assert_eq!(
            err(json!({"jwks": ec_only(), "header": ""})),
            "header: the header name is empty"
        );
        assert!(
            err(json!({"jwks": ec_only(), "prefix": "Bearer\n"}))
                .starts_with("prefix \"Bearer\\n\": '\\n' is not allowed")
        );
        assert!(
            err(json!({"jwks": ec_only(), "realm": "a\"b"}))
                .starts_with("realm \"a\\\"b\": '\"' is not allowed")
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(
            err(json!({"jwks": ec_only(), "issuers": "x"})).starts_with("unknown field `issuers`")
        );
    }
}
