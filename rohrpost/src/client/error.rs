//! Why a client operation failed.

use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

/// Why a client operation failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ClientError {
    /// The server answered with an error reply.
    #[error("the server replied with an error: {error}")]
    Reply {
        /// The reply's `error`.
        error: Value,
        /// The reply's `data`, if any.
        data: Option<Value>,
    },
    /// No reply came within the call timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection dropped while the call waited for its reply.
    #[error("the connection dropped before the reply arrived")]
    Disconnected,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// The first connection could not be made.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The server refused the handshake (its authentication hook, an origin check): the
    /// HTTP status and body it answered with.
    #[error("{url} refused the connection with HTTP {status}: {body}")]
    Refused {
        /// The URL.
        url: String,
        /// The HTTP status (401, 403, 503…).
        status: u16,
        /// The response body (the refusal's reason).
        body: String,
    },
    /// A reply or update did not decode into the requested type.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was decoded.
        what: &'static str,
        /// serde's reason.
        reason: String,
    },
    /// A subscription may have missed updates while the connection was down and the server
    /// could not replay them (its group keeps no history, or too much was missed): refetch
    /// the state. Updates go on after it.
    #[error("updates of {group} may have been missed while reconnecting: refetch")]
    Missed {
        /// The subscription's group.
        group: String,
    },
    /// The data given to send could not be turned into JSON (a map with non-string keys,
    /// say, or a `Serialize` impl that fails).
    #[error("cannot encode the data to send as JSON: {reason}")]
    Encode {
        /// serde's reason.
        reason: String,
    },
}
