//! Counters of what the server did, for dashboards and for tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A cheap, cloneable handle to a server's counters ([`Server::metrics`](crate::Server::metrics)).
///
/// ```
/// # async fn start() -> Result<(), rohrpost::server::ServerError> {
/// let server = rohrpost::Server::bind("127.0.0.1:0").await?;
/// let metrics = server.metrics();
/// tokio::spawn(server.serve());
/// println!("{} connections open", metrics.snapshot().connections_open);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    connections_open: AtomicU64,
    /// One per [`Counter`], indexed by it.
    counts: [AtomicU64; Counter::ALL.len()],
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Connections open now, counted from the TCP accept (or the upgrade request, in axum)
    /// until the connection's task ends; handshakes in progress included.
    pub connections_open: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Handshakes refused with 503 because `max_connections` were open.
    pub refused_capacity: u64,
    /// Handshakes refused with 403 by the origin allow-list.
    pub refused_origin: u64,
    /// Handshakes refused by the authentication hook.
    pub refused_auth: u64,
    /// Handshakes answered 503 because the authentication hook outlasted the handshake
    /// timeout.
    pub auth_timeouts: u64,
    /// Text frames received.
    pub messages: u64,
    /// Messages refused by the per-connection rate limit.
    pub rate_limited: u64,
    /// Handler calls that ended in an internal error.
    pub handler_errors: u64,
    /// Handler calls that panicked.
    pub handler_panics: u64,
    /// Handler calls dropped at the handler timeout.
    pub handler_timeouts: u64,
    /// Connections closed with 1008 because the client did not read.
    pub slow_clients: u64,
    /// Connections closed because the client stopped answering pings.
    pub ping_timeouts: u64,
    /// Queued updates replaced by a newer update of the same object
    /// ([`Policy::Conflate`](crate::groups::Policy::Conflate)).
    pub pushes_conflated: u64,
    /// Volatile pushes dropped for a client whose queue was full
    /// ([`Policy::DropOldest`](crate::groups::Policy::DropOldest)).
    pub pushes_dropped_volatile: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    ConnectionsTotal,
    RefusedCapacity,
    RefusedOrigin,
    RefusedAuth,
    AuthTimeouts,
    Messages,
    RateLimited,
    HandlerErrors,
    HandlerPanics,
    HandlerTimeouts,
    SlowClients,
    PingTimeouts,
    PushesConflated,
    PushesDroppedVolatile,
}

impl Counter {
    const ALL: [Counter; 14] = [
        Counter::ConnectionsTotal,
        Counter::RefusedCapacity,
        Counter::RefusedOrigin,
        Counter::RefusedAuth,
        Counter::AuthTimeouts,
        Counter::Messages,
        Counter::RateLimited,
        Counter::HandlerErrors,
        Counter::HandlerPanics,
        Counter::HandlerTimeouts,
        Counter::SlowClients,
        Counter::PingTimeouts,
        Counter::PushesConflated,
        Counter::PushesDroppedVolatile,
    ];
}

impl Metrics {
    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let read = |counter: Counter| self.inner.counts[counter as usize].load(Ordering::Relaxed);
        MetricsSnapshot {
            connections_open: self.inner.connections_open.load(Ordering::Relaxed),
            connections_total: read(Counter::ConnectionsTotal),
            refused_capacity: read(Counter::RefusedCapacity),
            refused_origin: read(Counter::RefusedOrigin),
            refused_auth: read(Counter::RefusedAuth),
            auth_timeouts: read(Counter::AuthTimeouts),
            messages: read(Counter::Messages),
            rate_limited: read(Counter::RateLimited),
            handler_errors: read(Counter::HandlerErrors),
            handler_panics: read(Counter::HandlerPanics),
            handler_timeouts: read(Counter::HandlerTimeouts),
            slow_clients: read(Counter::SlowClients),
            ping_timeouts: read(Counter::PingTimeouts),
            pushes_conflated: read(Counter::PushesConflated),
            pushes_dropped_volatile: read(Counter::PushesDroppedVolatile),
        }
    }

    pub(crate) fn add(&self, counter: Counter) {
        self.add_n(counter, 1);
    }

    pub(crate) fn add_n(&self, counter: Counter, n: u64) {
        if n > 0 {
            self.inner.counts[counter as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts a connection in; returns how many are open now, this one included.
    pub(crate) fn open_connection(&self) -> u64 {
        self.inner.connections_open.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub(crate) fn close_connection(&self) {
        self.inner.connections_open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_its_own_slot() {
        let metrics = Metrics::default();
        for (n, counter) in Counter::ALL.into_iter().enumerate() {
            assert_eq!(counter as usize, n);
            for _ in 0..=n {
                metrics.add(counter);
            }
        }
        let s = metrics.snapshot();
        let seen = [
            s.connections_total,
            s.refused_capacity,
            s.refused_origin,
            s.refused_auth,
            s.auth_timeouts,
            s.messages,
            s.rate_limited,
            s.handler_errors,
            s.handler_panics,
            s.handler_timeouts,
            s.slow_clients,
            s.ping_timeouts,
            s.pushes_conflated,
            s.pushes_dropped_volatile,
        ];
        assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
    }
}
