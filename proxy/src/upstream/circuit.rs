//! Circuit breakers: a cluster's process-wide limits of connections,
//! requests waiting for a connection, and requests in flight. The counts
//! are atomics shared by every worker (and carried across reloads with the
//! cluster's name); past a limit a request is refused at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// A limit of the circuit breakers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `max_connections`.
    MaxConnections,
    /// `max_pending_requests`.
    MaxPendingRequests,
    /// `max_requests`.
    MaxRequests,
}

impl Limit {
    /// The limit's config key, as the `x-weft-overloaded` header names it.
    pub fn name(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::MaxPendingRequests => "max_pending_requests",
            Limit::MaxRequests => "max_requests",
        }
    }
}

/// A cluster's counts, all workers together.
#[derive(Debug, Default)]
pub struct Counters {
    /// Open connections.
    pub connections: AtomicU32,
    /// Requests waiting for a connection.
    pub pending: AtomicU32,
    /// Requests in flight.
    pub requests: AtomicU32,
}

/// A cluster's limits and its counts.
pub struct Breakers {
    /// `max_connections`.
    pub max_connections: u32,
    /// `max_pending_requests`.
    pub max_pending: u32,
    /// `max_requests`.
    pub max_requests: u32,
    /// The counts (shared with the cluster's previous builds).
    pub counters: Arc<Counters>,
}

/// Takes one unit of `counter` unless it is at `max`.
fn take(counter: &AtomicU32, max: u32, limit: Limit) -> Result<(), Limit> {
    if counter.fetch_add(1, Ordering::Relaxed) >= max {
        counter.fetch_sub(1, Ordering::Relaxed);
        return Err(limit);
    }
    Ok(())
}

impl Breakers {
    /// Counts one more request in flight, or refuses it; the caller gives
    /// it back with [`Counters::requests`] (see `ActiveRequest`).
    pub fn request(&self) -> Result<(), Limit> {
        take(
            &self.counters.requests,
            self.max_requests,
            Limit::MaxRequests,
        )
    }

    /// Counts a request waiting for a connection until the guard drops.
    pub fn pending(&self) -> Result<Pending<'_>, Limit> {
        take(
            &self.counters.pending,
            self.max_pending,
            Limit::MaxPendingRequests,
        )?;
        Ok(Pending(&self.counters))
    }

    /// Counts one more open connection until the slot drops.
    pub fn connection(&self) -> Result<ConnectionSlot, Limit> {
        take(
            &self.counters.connections,
            self.max_connections,
            Limit::MaxConnections,
        )?;
        Ok(ConnectionSlot(self.counters.clone()))
    }
}

/// A request waiting for a connection.
pub struct Pending<'a>(&'a Counters);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An open connection in its cluster's count.
pub struct ConnectionSlot(Arc<Counters>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_past_max_and_recover() {
        let b = Breakers {
            max_connections: 1,
            max_pending: 1,
            max_requests: 2,
            counters: Arc::default(),
        };
        assert!(b.request().is_ok());
        assert!(b.request().is_ok());
        assert_eq!(b.request(), Err(Limit::MaxRequests));
        b.counters.requests.fetch_sub(1, Ordering::Relaxed);
        assert!(b.request().is_ok());
        let slot = b.connection().unwrap();
        assert_eq!(b.connection().err(), Some(Limit::MaxConnections));
        drop(slot);
        assert!(b.connection().is_ok());
        let p = b.pending().unwrap();
        assert_eq!(b.pending().err(), Some(Limit::MaxPendingRequests));
        drop(p);
        assert_eq!(b.counters.pending.load(Ordering::Relaxed), 0);
    }
}
