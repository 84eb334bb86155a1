//! An endpoint's live state, shared by every worker: requests in flight and
//! totals, its health (active checks) and its ejection (outlier detection).
//!
//! The state is kept per cluster name and address in a process-wide
//! registry of weak references: a reload that keeps a cluster's endpoint
//! shares the state with the serving snapshot, so health, ejections and
//! in-flight counts carry over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::circuit::Counters;

/// What active health checks say of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not checked (yet, or no checks configured): counts healthy.
    Unknown = 0,
    /// The last checks passed.
    Healthy = 1,
    /// The last checks failed.
    Unhealthy = 2,
}

/// One endpoint's state.
pub struct EndpointState {
    /// `host:port`, as configured.
    pub address: Box<str>,
    /// The cluster's circuit-breaker counts.
    pub(crate) counters: Arc<Counters>,
    active: AtomicU32,
    requests: AtomicU64,
    responses_5xx: AtomicU64,
    connect_failures: AtomicU64,
    timeouts: AtomicU64,
    pub(crate) consecutive_5xx: AtomicU32,
    pub(crate) consecutive_gateway: AtomicU32,
    /// Process clock (ms) when the last ejection ends; 0: never ejected.
    pub(crate) ejected_until: AtomicU64,
    /// Ejected until a health check passes after `ejected_until`.
    pub(crate) await_check: AtomicBool,
    pub(crate) times_ejected: AtomicU32,
    health: AtomicU8,
    /// Checks in a row: positive passed, negative failed.
    streak: AtomicI32,
    /// Unix ms of the last change of health or ejection.
    since: AtomicU64,
}

/// Milliseconds on the process's monotonic clock (never 0).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type Registry = HashMap<(String, String), Weak<EndpointState>>;

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

fn counters_registry() -> &'static Mutex<HashMap<String, Weak<Counters>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Weak<Counters>>>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// Cluster `name`'s circuit-breaker counts: those of a live build of the
/// cluster, else new ones.
pub fn cluster_counters(name: &str) -> Arc<Counters> {
    let mut map = counters_registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.retain(|_, w| w.strong_count() > 0);
    if let Some(c) = map.get(name).and_then(Weak::upgrade) {
        return c;
    }
    let c = Arc::new(Counters::default());
    map.insert(name.to_string(), Arc::downgrade(&c));
    c
}

impl EndpointState {
    /// The state of `address` in cluster `cluster`: that of a live build of
    /// the cluster, else a new one.
    pub fn shared(cluster: &str, address: &str, counters: &Arc<Counters>) -> Arc<Self> {
        let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        let key = (cluster.to_string(), address.to_string());
        if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        let s = Arc::new(Self::new(address, counters.clone()));
        map.insert(key, Arc::downgrade(&s));
        s
    }

    /// A fresh state (healthy, never ejected).
    pub fn new(address: &str, counters: Arc<Counters>) -> Self {
        Self {
            address: address.into(),
            counters,
            active: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            responses_5xx: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            await_check: AtomicBool::new(false),
            times_ejected: AtomicU32::new(0),
            health: AtomicU8::new(Health::Unknown as u8),
            streak: AtomicI32::new(0),
            since: AtomicU64::new(unix_ms()),
        }
    }

    /// Requests in flight.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// (requests, 5xx responses, connect failures) so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.responses_5xx.load(Ordering::Relaxed),
            self.connect_failures.load(Ordering::Relaxed),
        )
    }

    /// Unix ms of the last change of health or ejection.
    pub fn since_unix_ms(&self) -> u64 {
        self.since.load(Ordering::Relaxed)
    }

    pub(crate) fn touch(&self) {
        self.since.store(unix_ms(), Ordering::Relaxed);
    }

    /// What the health checks say.
    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }

    /// Forgets the health checks' verdict (the cluster has none any more).
    pub(crate) fn reset_health(&self) {
        if self.health.swap(Health::Unknown as u8, Ordering::Relaxed) != Health::Unknown as u8 {
            self.touch();
        }
        self.streak.store(0, Ordering::Relaxed);
        self.await_check.store(false, Ordering::Relaxed);
    }

    /// Whether outlier detection keeps the endpoint out at `now` (ms).
    pub fn ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && (now < until || self.await_check.load(Ordering::Relaxed))
    }

    /// Whether requests may go to the endpoint. Reads the clock only when
    /// the endpoint was ever ejected.
    #[inline]
    pub fn usable(&self) -> bool {
        self.health.load(Ordering::Relaxed) != Health::Unhealthy as u8
            && (self.ejected_until.load(Ordering::Relaxed) == 0 || !self.ejected(now_ms()))
    }

    /// Records one health check; returns the new health when it changed.
    pub fn record_check(
        &self,
        passed: bool,
        healthy_after: u32,
        unhealthy_after: u32,
    ) -> Option<Health> {
        let streak = self.streak.load(Ordering::Relaxed);
        let streak = if passed {
            streak.max(0).saturating_add(1)
        } else {
            streak.min(0).saturating_sub(1)
        };
        self.streak.store(streak, Ordering::Relaxed);
        if passed
            && self.await_check.load(Ordering::Relaxed)
            && now_ms() >= self.ejected_until.load(Ordering::Relaxed)
        {
            self.await_check.store(false, Ordering::Relaxed);
            self.touch();
        }
        let now = self.health();
        let next = match (now, passed) {
            (Health::Unknown, true) => Health::Healthy,
            (Health::Unknown, false) => Health::Unhealthy,
            (Health::Healthy, false) if streak.unsigned_abs() >= unhealthy_after => {
                Health::Unhealthy
            }
            (Health::Unhealthy, true) if streak.unsigned_abs() >= healthy_after => Health::Healthy,
            _ => now,
        };
        if next == now {
            return None;
        }
        self.health.store(next as u8, Ordering::Relaxed);
        self.touch();
        Some(next)
    }

    /// Counts a request sent to the endpoint, in flight until the returned
    /// guard drops (the cluster's request count included: the caller
    /// took it with `Breakers::request`).
    pub fn start(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(self.clone())
    }

    pub(crate) fn count_5xx(&self) {
        self.responses_5xx.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_connect_failure(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests that got no response headers within the route's timeout.
    pub fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }
}

/// A request in flight to an endpoint, until its response body ends (the
/// guard rides on the body) or the request fails.
pub struct ActiveRequest(Arc<EndpointState>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.counters.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> EndpointState {
        EndpointState::new("a:1", Arc::default())
    }

    #[test]
    fn first_check_decides_then_thresholds() {
        let s = state();
        assert!(s.usable());
        assert_eq!(s.record_check(false, 2, 3), Some(Health::Unhealthy));
        assert!(!s.usable());
        assert_eq!(s.record_check(true, 2, 3), None);
        assert_eq!(s.record_check(true, 2, 3), Some(Health::Healthy));
        assert_eq!(s.record_check(false, 2, 3), None);
        assert_eq!(s.record_check(false, 2, 3), None);
        assert_eq!(s.record_check(true, 2, 3), None);
        assert_eq!(s.record_check(false, 2, 3), None);
        assert_eq!(s.record_check(false, 2, 3), None);
        assert_eq!(s.record_check(false, 2, 3), Some(Health::Unhealthy));
    }

    #[test]
    fn registry_shares_live_state_only() {
        let counters = cluster_counters("reg-test");
        let a = EndpointState::shared("reg-test", "a:1", &counters);
        let b = EndpointState::shared("reg-test", "a:1", &counters);
        assert!(Arc::ptr_eq(&a, &b));
        let other = EndpointState::shared("reg-test-2", "a:1", &counters);
        assert!(!Arc::ptr_eq(&a, &other));
        drop((a, b));
        let c = EndpointState::shared("reg-test", "a:1", &counters);
        assert_eq!(c.totals(), (0, 0, 0));
    }
}
