//! The settings a [`ServerBuilder`](super::ServerBuilder) fills and every connection of the
//! server (or endpoint) shares: a new setting is a field here, its default and its setter.

use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::origin::{ForwardedHost, OriginPattern, OriginPolicy};

use super::{
    RateLimit, ServerError, DEFAULT_CLOSE_TIMEOUT, DEFAULT_HANDLER_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_OUTBOUND_QUEUE, DEFAULT_PATH, DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT,
    DEFAULT_REPLY_BACKLOG, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_WRITE_TIMEOUT,
};

/// Small, since most connections are idle; tungstenite grows its message buffer as needed.
const READ_BUFFER_SIZE: usize = 1024;

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) path: String,
    pub(crate) max_message_size: usize,
    pub(crate) outbound_queue: usize,
    pub(crate) reply_backlog: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) max_connections: usize,
    /// Origins allowed besides the server's own, as given.
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) any_origin: bool,
    pub(crate) forwarded_host: Option<ForwardedHost>,
    pub(crate) handler_timeout: Duration,
    pub(crate) handlers_per_connection: usize,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) ping_interval: Duration,
    pub(crate) ping_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            path: DEFAULT_PATH.to_owned(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            reply_backlog: DEFAULT_REPLY_BACKLOG,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            allowed_origins: Vec::new(),
            any_origin: false,
            forwarded_host: None,
            handler_timeout: DEFAULT_HANDLER_TIMEOUT,
            handlers_per_connection: 1,
            rate_limit: None,
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
        }
    }
}

impl Config {
    /// Checks every setting; the error names the one out of range.
    pub(crate) fn validate(&self) -> Result<(), ServerError> {
        let invalid = |reason: String| Err(ServerError::InvalidConfig(reason));
        if !self.path.starts_with('/') {
            return invalid(format!("the path must start with '/', got {:?}", self.path));
        }
        if let Some(limit) = self.rate_limit {
            let valid = limit.per_second.is_finite() && limit.per_second > 0.0 && limit.burst > 0;
            if !valid {
                return invalid(format!(
                    "a rate limit needs a positive rate and a burst of at least 1, got {} per second and {}",
                    limit.per_second, limit.burst
                ));
            }
        }
        if self.ping_interval.is_zero() || self.ping_timeout.is_zero() {
            return invalid("the ping interval and timeout must be longer than zero".into());
        }
        let timeouts = [
            ("handshake_timeout", self.handshake_timeout),
            ("write_timeout", self.write_timeout),
            ("close_timeout", self.close_timeout),
            ("handler_timeout", self.handler_timeout),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, timeout)| timeout.is_zero()) {
            return invalid(format!("{name} must be longer than zero"));
        }
        if self.handlers_per_connection == 0 {
            return invalid("handlers_per_connection must be at least 1".into());
        }
        if self.outbound_queue == 0 || self.reply_backlog == 0 || self.max_message_size == 0 {
            return invalid(format!(
                "outbound_queue, reply_backlog and max_message_size must be at least 1, got {}, {} and {}",
                self.outbound_queue, self.reply_backlog, self.max_message_size
            ));
        }
        Ok(())
    }

    /// The origin check the settings ask for; an allowed origin that is not
    /// `scheme://host[:port]` or `scheme://*.domain[:port]` is an error.
    pub(crate) fn origin_policy(&self) -> Result<OriginPolicy, ServerError> {
        let allowed = self
            .allowed_origins
            .iter()
            .map(|origin| {
                OriginPattern::parse(origin).ok_or_else(|| {
                    ServerError::InvalidConfig(format!(
                        "allowed origin {origin:?} is not scheme://host[:port] or scheme://*.domain[:port] (http, https, ws or wss)"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(OriginPolicy {
            any: self.any_origin,
            allowed,
            forwarded_host: self.forwarded_host,
        })
    }

    /// tungstenite's settings for a connection.
    pub(crate) fn websocket(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_SIZE)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}
