//! Passive outlier detection: an endpoint that answers 5xx, or fails
//! (connect failure, reset, timeout, 502/503/504), too many times in a row
//! is ejected for a while — longer each time — but never past the
//! cluster's share, and never the last usable endpoint.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use super::endpoint::{EndpointState, now_ms};

/// What became of a request sent to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500.
    Success,
    /// A 5xx response.
    Status(u16),
    /// No connection.
    ConnectFailure,
    /// The connection failed, or no answer in time.
    GatewayFailure,
}

/// A cluster's outlier detection, as configured.
#[derive(Debug, Clone)]
pub struct OutlierSettings {
    /// 5xx in a row that eject.
    pub consecutive_5xx: u32,
    /// Gateway failures in a row that eject.
    pub consecutive_gateway: u32,
    /// First ejection's length.
    pub base_ms: u64,
    /// Longest ejection.
    pub max_ms: u64,
    /// Most endpoints out at once, in percent.
    pub max_ejected_percent: u32,
    /// Health checks run: an ejected endpoint returns only once one passes.
    pub health_checked: bool,
}

/// The length of an endpoint's `times`-th ejection (1-based).
pub fn ejection_ms(times: u32, base: u64, max: u64) -> u64 {
    base.saturating_mul(u64::from(times.max(1))).min(max)
}

/// Whether one more of `n` endpoints may be ejected when `ejected` are.
pub fn may_eject(ejected: usize, n: usize, max_percent: u32) -> bool {
    ejected + 1 < n && (ejected + 1) * 100 <= max_percent as usize * n
}

/// Outlier detection of one cluster build.
pub struct Outlier {
    settings: OutlierSettings,
    /// Ejections are decided one at a time (rare; never on a success).
    deciding: Mutex<()>,
}

impl Outlier {
    /// Detection with `settings`.
    pub fn new(settings: OutlierSettings) -> Self {
        Self {
            settings,
            deciding: Mutex::new(()),
        }
    }

    /// Records `outcome` of endpoint `i`; ejects it when its failures in a
    /// row reach a threshold. Returns the ejection's length when it ejects.
    pub fn report(
        &self,
        cluster: &str,
        endpoints: &[Arc<EndpointState>],
        i: usize,
        outcome: Outcome,
    ) -> Option<u64> {
        let e = &endpoints[i];
        let s = &self.settings;
        let reset = |c: &std::sync::atomic::AtomicU32| {
            if c.load(Ordering::Relaxed) != 0 {
                c.store(0, Ordering::Relaxed);
            }
        };
        let trip = match outcome {
            Outcome::Success => {
                reset(&e.consecutive_5xx);
                reset(&e.consecutive_gateway);
                return None;
            }
            Outcome::Status(status) => {
                let n5 = e.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
                let gateway = if (502..=504).contains(&status) {
                    e.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
                } else {
                    reset(&e.consecutive_gateway);
                    0
                };
                n5 >= s.consecutive_5xx || gateway >= s.consecutive_gateway
            }
            Outcome::ConnectFailure | Outcome::GatewayFailure => {
                e.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1 >= s.consecutive_gateway
            }
        };
        if !trip {
            return None;
        }
        let _one = self.deciding.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        if e.ejected(now) {
            return None;
        }
        let ejected = endpoints.iter().filter(|o| o.ejected(now)).count();
        if !may_eject(ejected, endpoints.len(), s.max_ejected_percent) {
            tracing::debug!(
                cluster,
                endpoint = &*e.address,
                "not ejected: too many endpoints are"
            );
            return None;
        }
        // A new streak of ejections once the last ended long ago.
        let last_end = e.ejected_until.load(Ordering::Relaxed);
        let times = if last_end == 0 || now.saturating_sub(last_end) > s.max_ms {
            1
        } else {
            e.times_ejected.load(Ordering::Relaxed) + 1
        };
        let ms = ejection_ms(times, s.base_ms, s.max_ms);
        e.times_ejected.store(times, Ordering::Relaxed);
        e.await_check.store(s.health_checked, Ordering::Relaxed);
        e.ejected_until.store(now + ms, Ordering::Relaxed);
        e.consecutive_5xx.store(0, Ordering::Relaxed);
        e.consecutive_gateway.store(0, Ordering::Relaxed);
        e.touch();
        tracing::warn!(
            cluster,
            endpoint = &*e.address,
            times,
            "endpoint ejected for {ms} ms after failures in a row"
        );
        Some(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_grows_and_is_capped() {
        assert_eq!(ejection_ms(1, 1000, 5000), 1000);
        assert_eq!(ejection_ms(3, 1000, 5000), 3000);
        assert_eq!(ejection_ms(9, 1000, 5000), 5000);
        assert_eq!(ejection_ms(u32::MAX, u64::MAX / 2, u64::MAX), u64::MAX);
    }

    #[test]
    fn share_and_last_endpoint_are_kept() {
        assert!(may_eject(0, 3, 50));
        assert!(!may_eject(1, 3, 50));
        assert!(!may_eject(0, 1, 100));
        assert!(!may_eject(1, 2, 100));
        assert!(may_eject(2, 4, 100));
        assert!(!may_eject(0, 4, 10));
    }

    fn cluster(n: usize) -> Vec<Arc<EndpointState>> {
        (0..n)
            .map(|i| Arc::new(EndpointState::new(&format!("e{i}:1"), Arc::default())))
            .collect()
    }

    fn settings() -> OutlierSettings {
        OutlierSettings {
            consecutive_5xx: 3,
            consecutive_gateway: 2,
            base_ms: 60_000,
            max_ms: 120_000,
            max_ejected_percent: 50,
            health_checked: false,
        }
    }

    #[test]
    fn failures_in_a_row_eject_and_a_success_resets() {
        let eps = cluster(3);
        let o = Outlier::new(settings());
        assert_eq!(o.report("c", &eps, 0, Outcome::Status(500)), None);
        assert_eq!(o.report("c", &eps, 0, Outcome::Status(500)), None);
        assert_eq!(o.report("c", &eps, 0, Outcome::Success), None);
        assert_eq!(o.report("c", &eps, 0, Outcome::Status(500)), None);
        assert_eq!(o.report("c", &eps, 0, Outcome::Status(500)), None);
        assert_eq!(o.report("c", &eps, 0, Outcome::Status(500)), Some(60_000));
        assert!(!eps[0].usable());
        // Gateway failures count apart; the share (50% of 3) allows one.
        assert_eq!(o.report("c", &eps, 1, Outcome::ConnectFailure), None);
        assert_eq!(o.report("c", &eps, 1, Outcome::GatewayFailure), None);
        assert!(eps[1].usable());
    }

    #[test]
    fn health_checked_ejection_waits_for_a_pass() {
        let eps = cluster(2);
        let o = Outlier::new(OutlierSettings {
            base_ms: 1,
            max_ms: 1,
            max_ejected_percent: 100,
            health_checked: true,
            ..settings()
        });
        o.report("c", &eps, 0, Outcome::ConnectFailure);
        assert_eq!(o.report("c", &eps, 0, Outcome::ConnectFailure), Some(1));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(!eps[0].usable(), "still waits for a check");
        eps[0].record_check(true, 1, 1);
        assert!(eps[0].usable());
    }
}
