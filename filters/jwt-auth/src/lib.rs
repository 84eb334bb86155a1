//! `jwt-auth`: lets a request through only with a valid JWT bearer token,
//! and tells the upstream what the token says.
//!
//! Config (see `docs/filters/jwt-auth.md`):
//!
//! ```json
//! {
//!   "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "x": "…", "y": "…"}]},
//!   "algorithms": ["ES256"],
//!   "issuer": "https://idp.example.com",
//!   "audiences": ["orders-api"],
//!   "required_claims": ["exp", "sub"],
//!   "forward_claims": {"sub": "x-user", "scope": "x-scope"},
//!   "strip_token": true
//! }
//! ```
//!
//! or `"jwks_url": "http://127.0.0.1:8081/jwks.json"` instead of `jwks`,
//! fetched with the host's HTTP callout (the module needs
//! `allow_http: ["127.0.0.1:8081"]`).
//!
//! - no token: 401 `{"error": "missing_token", …}`, `www-authenticate: Bearer`;
//! - a token that does not verify (malformed, algorithm not accepted,
//!   unknown key, bad signature, expired, wrong issuer or audience, …): 401
//!   `{"error": "invalid_token", …}` with `error="invalid_token"` in the
//!   challenge;
//! - no keys to check it with (the JWK Set cannot be fetched): 500
//!   `{"error": "jwks_unavailable", …}`;
//! - a valid token: the claims named in `forward_claims` are set as request
//!   headers (replacing what the client sent), the token header is removed
//!   if `strip_token`, and the request goes on.
//!
//! Decisions are counted in
//! `weft_user_jwt_auth_requests_total{result="allowed|missing|invalid|error"}`.

mod alg;
mod auth;
mod b64;
mod cache;
mod claims;
mod config;
mod jwk;
mod jwt;
mod remote;
#[cfg(test)]
mod testkeys;
mod verify;

#[cfg(test)]
mod phase_tests;

use weft_sdk::log::{self, Level};
use weft_sdk::{Action, Filter, LocalResponse, Request, metrics, time};

use crate::auth::{Extracted, Invalid};
use crate::config::{Config, KeySource, Settings};
use crate::jwk::NoKey;
use crate::remote::Remote;

/// The counter of decisions (exported as `weft_user_jwt_auth_requests_total`).
const REQUESTS_METRIC: &str = "jwt_auth_requests_total";

struct JwtAuth {
    settings: Settings,
    /// The fetched keys, with `jwks_url`.
    remote: Option<Remote>,
}

/// Why a token could not be checked at all.
enum Refusal {
    Invalid(Invalid),
    /// No keys: the JWK Set could not be fetched.
    NoKeys,
}

#[weft_sdk::filter]
impl Filter for JwtAuth {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let settings = config.validate()?;
        let remote = match &settings.source {
            KeySource::Remote(remote) => Some(Remote::new(remote.clone())),
            KeySource::Inline(_) => None,
        };
        Ok(JwtAuth { settings, remote })
    }

    fn on_request_headers(&mut self, req: &Request) -> Action {
        let values = req.header_all(&self.settings.header);
        let token = match auth::extract(&self.settings, &values) {
            Extracted::Token(token) => token,
            Extracted::Missing => {
                count("missing");
                log_refusal(req, "no token");
                return LocalResponse::error(
                    401,
                    "missing_token",
                    &auth::missing_message(&self.settings),
                )
                .header("www-authenticate", auth::challenge(&self.settings, None))
                .into();
            }
            Extracted::Several => return self.refuse(req, Refusal::Invalid(Invalid::Several)),
        };
        match self.check(token) {
            Ok(headers) => {
                count("allowed");
                for (_, header) in &self.settings.forward {
                    req.remove_header(header);
                }
                for (header, value) in &headers {
                    req.set_header(header, value);
                }
                if self.settings.strip_token {
                    req.remove_header(&self.settings.header);
                }
                Action::Continue
            }
            Err(refusal) => self.refuse(req, refusal),
        }
    }
}

impl JwtAuth {
    /// Checks `token`; returns the headers to set from its claims.
    fn check(&mut self, token: &str) -> Result<Vec<(String, String)>, Refusal> {
        let JwtAuth { settings, remote } = self;
        let (token, alg) = auth::parse(settings, token).map_err(Refusal::Invalid)?;
        let now = time::now_unix_nanos();
        let verified = match (&settings.source, remote) {
            (KeySource::Inline(keys), _) => auth::verify(settings, keys, &token, alg, now),
            (KeySource::Remote(_), Some(remote)) => {
                let keys = remote.current(now).ok_or(Refusal::NoKeys)?;
                match auth::verify(settings, keys, &token, alg, now) {
                    Err(invalid) if invalid.newer_keys_may_help() => {
                        let kid = token.kid.as_deref();
                        let lacks = |keys: &jwk::KeySet| {
                            keys.candidates(alg, kid).err() == Some(NoKey::Unknown)
                        };
                        if remote.refresh_for_unknown_key(now, lacks) {
                            let keys = remote.keys().ok_or(Refusal::NoKeys)?;
                            auth::verify(settings, keys, &token, alg, now)
                        } else {
                            Err(invalid)
                        }
                    }
                    other => other,
                }
            }
            (KeySource::Remote(_), None) => Err(Refusal::NoKeys)?,
        };
        verified.map_err(Refusal::Invalid)?;
        auth::forwarded_headers(settings, &token.claims).map_err(Refusal::Invalid)
    }

    fn refuse(&self, req: &Request, refusal: Refusal) -> Action {
        match refusal {
            Refusal::Invalid(invalid) => {
                count("invalid");
                let message = invalid.message();
                log_refusal(req, &message);
                LocalResponse::error(401, "invalid_token", &message)
                    .header(
                        "www-authenticate",
                        auth::challenge(&self.settings, Some(&invalid)),
                    )
                    .into()
            }
            Refusal::NoKeys => {
                count("error");
                // The cause is logged where the fetch failed.
                LocalResponse::error(
                    500,
                    "jwks_unavailable",
                    "the keys to verify the token could not be fetched (the proxy's log says why)",
                )
                .into()
            }
        }
    }
}

fn count(result: &str) {
    metrics::counter_add(REQUESTS_METRIC, &[("result", result)], 1);
}

/// Logs a refusal at debug level, with the method and the path but not the
/// query; never the token.
fn log_refusal(req: &Request, why: &str) {
    // The arguments cost host calls: skip them when nobody reads the line.
    if !log::enabled(Level::Debug) {
        return;
    }
    let mut path = req.path();
    if let Some(query_start) = path.find('?') {
        path.truncate(query_start);
    }
    weft_sdk::debug!("refused {} {path}: {why}", req.method());
}
