//! The JWK Set behind `jwks_url`: fetched with the host's HTTP callout on
//! first need, kept in the instance and in the filter's shared state (see
//! [`crate::cache`] for the rules), refetched after `jwks_ttl_s` and for
//! unknown `kid`s, at most once per `jwks_min_refresh_s`.

use serde_json::Value;
use weft_sdk::http::{self, HttpRequest};
use weft_sdk::shared::{self, SharedError};
use weft_sdk::{metrics, time};

use crate::cache::{self, Entry, Need};
use crate::config::RemoteSettings;
use crate::jwk::{self, KeySet};

/// The counter of fetches (exported as `weft_user_jwt_auth_jwks_fetches_total`).
const FETCHES_METRIC: &str = "jwt_auth_jwks_fetches_total";
/// Largest JWK Set body accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Compare-and-swap attempts when publishing a fetch's outcome.
const PUBLISH_TRIES: usize = 4;
const NANOS_PER_S: u64 = 1_000_000_000;

/// One instance's view of the remote JWK Set.
pub struct Remote {
    settings: RemoteSettings,
    shared_key: String,
    keys: Option<KeySet>,
    /// When `keys` was fetched (Unix nanoseconds); 0: no keys.
    fetched_at: u64,
}

impl Remote {
    /// Nothing fetched yet: the first request that needs keys fetches them.
    pub fn new(settings: RemoteSettings) -> Remote {
        Remote {
            shared_key: cache::shared_key(&settings.url),
            settings,
            keys: None,
            fetched_at: 0,
        }
    }

    /// The keys to check a token with at `now`: fetched first when the
    /// instance has none or they are older than the TTL (a failed refresh
    /// keeps the old keys). `None`: no keys could be had.
    pub fn current(&mut self, now: u64) -> Option<&KeySet> {
        let need = match self.keys {
            None => Some(Need::First),
            Some(_) if self.is_stale(now) => Some(Need::Stale),
            Some(_) => None,
        };
        if let Some(need) = need {
            self.refresh(need, now, |_| true);
        }
        self.keys.as_ref()
    }

    /// After a token named a key the set does not have (`lacks` tells):
    /// gets a newer set if one can be had now. Returns whether the keys
    /// changed (then check the token again with [`Remote::keys`]).
    pub fn refresh_for_unknown_key(&mut self, now: u64, lacks: impl Fn(&KeySet) -> bool) -> bool {
        self.refresh(Need::UnknownKey, now, lacks)
    }

    /// The keys the instance holds.
    pub fn keys(&self) -> Option<&KeySet> {
        self.keys.as_ref()
    }

    fn is_stale(&self, now: u64) -> bool {
        cache::elapsed(now, self.fetched_at) >= self.settings.ttl_s.saturating_mul(NANOS_PER_S)
    }

    /// Adopts a newer shared set, then fetches if still needed and allowed.
    /// Returns whether the keys changed.
    fn refresh(&mut self, need: Need, now: u64, lacks: impl Fn(&KeySet) -> bool) -> bool {
        let stored = shared::get(&self.shared_key);
        let (entry, cas) = match &stored {
            Some(stored) => (Entry::decode(&stored.value), stored.cas),
            None => (None, 0),
        };
        let mut changed = false;
        if let Some(entry) = &entry
            && cache::has_newer(entry, self.fetched_at)
            && let Some(set) = entry.jwks.as_deref().and_then(|body| parse(body).ok())
        {
            self.keys = Some(set.0);
            self.fetched_at = entry.fetched_at;
            changed = true;
        }
        let still_needed = match need {
            Need::First => self.keys.is_none(),
            Need::Stale => self.is_stale(now),
            Need::UnknownKey => self.keys.as_ref().is_none_or(&lacks),
        };
        if !still_needed {
            return changed;
        }
        let min_refresh_ns = self.settings.min_refresh_s.saturating_mul(NANOS_PER_S);
        if !cache::may_fetch(need, entry.as_ref(), now, min_refresh_ns) {
            weft_sdk::debug!(
                "not fetching {} again yet ({need:?}): the last fetch started less than {} s ago",
                self.settings.url,
                self.settings.min_refresh_s
            );
            return changed;
        }
        // Claim the fetch: no other instance starts one until
        // `jwks_min_refresh_s` has passed.
        let claim = Entry {
            attempt_at: now,
            failed: false,
            ..entry.clone().unwrap_or_default()
        };
        if let Err(SharedError::CasMismatch) = shared::set(&self.shared_key, claim.encode(), cas)
            && need != Need::First
        {
            // Another instance changed the entry just now: it is fetching.
            return changed;
        }
        match fetch(&self.settings) {
            Ok(Fetched {
                keys,
                body,
                skipped,
            }) => {
                metrics::counter_add(FETCHES_METRIC, &[("result", "ok")], 1);
                for why in &skipped {
                    weft_sdk::warn!("{}: skipped {why}", self.settings.url);
                }
                weft_sdk::info!(
                    "fetched the JWK Set from {}: {} usable keys",
                    self.settings.url,
                    keys.len()
                );
                let fetched_at = time::now_unix_nanos().max(now);
                self.keys = Some(keys);
                self.fetched_at = fetched_at;
                self.publish_success(now, fetched_at, body);
                true
            }
            Err(why) => {
                metrics::counter_add(FETCHES_METRIC, &[("result", "failed")], 1);
                if self.keys.is_some() {
                    weft_sdk::warn!(
                        "fetching the JWK Set from {} failed, keeping the keys fetched before: {why}",
                        self.settings.url
                    );
                } else {
                    weft_sdk::error!(
                        "fetching the JWK Set from {} failed: {why}",
                        self.settings.url
                    );
                }
                self.publish_failure(now);
                changed
            }
        }
    }

    /// Shares a fetched set, unless another instance shared a newer one.
    fn publish_success(&self, attempt_at: u64, fetched_at: u64, body: Vec<u8>) {
        let entry = Entry {
            fetched_at,
            attempt_at,
            failed: false,
            jwks: Some(body),
        };
        for _ in 0..PUBLISH_TRIES {
            let current = shared::get(&self.shared_key);
            let cas = current.as_ref().map_or(0, |c| c.cas);
            let current = current.and_then(|c| Entry::decode(&c.value));
            let mut entry = entry.clone();
            if let Some(current) = &current {
                if current.fetched_at >= fetched_at {
                    return;
                }
                entry.attempt_at = entry.attempt_at.max(current.attempt_at);
            }
            match shared::set(&self.shared_key, entry.encode(), cas) {
                Ok(_) => return,
                Err(SharedError::CasMismatch) => continue,
                Err(_) => {
                    weft_sdk::warn!(
                        "the JWK Set from {} is too large to share between instances: each \
                         instance keeps its own copy",
                        self.settings.url
                    );
                    let _ = shared::set(&self.shared_key, entry.without_jwks().encode(), cas);
                    return;
                }
            }
        }
    }

    /// Marks the fetch started at `attempt_at` as failed, unless another
    /// fetch started since.
    fn publish_failure(&self, attempt_at: u64) {
        for _ in 0..PUBLISH_TRIES {
            let Some(current) = shared::get(&self.shared_key) else {
                let failed = Entry {
                    attempt_at,
                    failed: true,
                    ..Entry::default()
                };
                match shared::set(&self.shared_key, failed.encode(), 0) {
                    Err(SharedError::CasMismatch) => continue,
                    _ => return,
                }
            };
            let Some(mut entry) = Entry::decode(&current.value) else {
                return;
            };
            if entry.attempt_at > attempt_at {
                return;
            }
            entry.attempt_at = attempt_at;
            entry.failed = true;
            match shared::set(&self.shared_key, entry.encode(), current.cas) {
                Err(SharedError::CasMismatch) => continue,
                _ => return,
            }
        }
    }
}

/// A fetched JWK Set.
struct Fetched {
    keys: KeySet,
    body: Vec<u8>,
    skipped: Vec<String>,
}

/// GETs the JWK Set.
fn fetch(settings: &RemoteSettings) -> Result<Fetched, String> {
    let mut request = HttpRequest::get(&settings.url).header("accept", "application/json");
    request.timeout_ms = settings.timeout_ms;
    let response = http::call(&request)?;
    if response.status != 200 {
        return Err(format!("the key server answered {}", response.status));
    }
    if response.body.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "the JWK Set is larger than {MAX_JWKS_BYTES} bytes ({})",
            response.body.len()
        ));
    }
    let (keys, skipped) = parse(&response.body)?;
    Ok(Fetched {
        keys,
        body: response.body,
        skipped,
    })
}

/// Parses a fetched JWK Set, skipping the keys that cannot be used.
fn parse(body: &[u8]) -> Result<(KeySet, Vec<String>), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    jwk::parse_jwks_lenient(&value).map_err(|e| format!("not a JWK Set: {e}"))
}
