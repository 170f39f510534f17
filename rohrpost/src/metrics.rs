//! Counters of what the server did, for dashboards and for tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A cheap, cloneable handle to a server's counters ([`Server::metrics`](crate::Server::metrics)).
///
/// ```
/// # async fn start() -> Result<(), rohrpost::ServerError> {
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
    connections_total: AtomicU64,
    refused_capacity: AtomicU64,
    refused_origin: AtomicU64,
    refused_auth: AtomicU64,
    messages: AtomicU64,
    rate_limited: AtomicU64,
    handler_errors: AtomicU64,
    handler_panics: AtomicU64,
    handler_timeouts: AtomicU64,
    slow_clients: AtomicU64,
    ping_timeouts: AtomicU64,
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
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    ConnectionsTotal,
    RefusedCapacity,
    RefusedOrigin,
    RefusedAuth,
    Messages,
    RateLimited,
    HandlerErrors,
    HandlerPanics,
    HandlerTimeouts,
    SlowClients,
    PingTimeouts,
}

impl Metrics {
    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let c = &self.inner;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MetricsSnapshot {
            connections_open: read(&c.connections_open),
            connections_total: read(&c.connections_total),
            refused_capacity: read(&c.refused_capacity),
            refused_origin: read(&c.refused_origin),
            refused_auth: read(&c.refused_auth),
            messages: read(&c.messages),
            rate_limited: read(&c.rate_limited),
            handler_errors: read(&c.handler_errors),
            handler_panics: read(&c.handler_panics),
            handler_timeouts: read(&c.handler_timeouts),
            slow_clients: read(&c.slow_clients),
            ping_timeouts: read(&c.ping_timeouts),
        }
    }

    pub(crate) fn add(&self, counter: Counter) {
        let c = &self.inner;
        let target = match counter {
            Counter::ConnectionsTotal => &c.connections_total,
            Counter::RefusedCapacity => &c.refused_capacity,
            Counter::RefusedOrigin => &c.refused_origin,
            Counter::RefusedAuth => &c.refused_auth,
            Counter::Messages => &c.messages,
            Counter::RateLimited => &c.rate_limited,
            Counter::HandlerErrors => &c.handler_errors,
            Counter::HandlerPanics => &c.handler_panics,
            Counter::HandlerTimeouts => &c.handler_timeouts,
            Counter::SlowClients => &c.slow_clients,
            Counter::PingTimeouts => &c.ping_timeouts,
        };
        target.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection in; returns how many are open now, this one included.
    pub(crate) fn open_connection(&self) -> u64 {
        self.inner.connections_open.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub(crate) fn close_connection(&self) {
        self.inner.connections_open.fetch_sub(1, Ordering::AcqRel);
    }
}
