//! The WebSocket handshake as hooks see it: the origin allow-list and the authentication
//! hook, which accepts a connection with per-connection state or refuses it with 401/403.

use std::fmt;
use std::net::SocketAddr;

use tokio_tungstenite::tungstenite::http::{HeaderMap, StatusCode, Uri};

use crate::state::TypeMap;

/// The client's handshake request, as the authentication hook sees it.
///
/// ```
/// use rohrpost::handshake::{Accept, Handshake, Refusal};
///
/// struct User(String);
///
/// fn authenticate(handshake: &Handshake<'_>) -> Result<Accept, Refusal> {
///     let token = handshake
///         .cookie("session")
///         .or_else(|| handshake.query("token"))
///         .ok_or_else(|| Refusal::unauthorized("log in first"))?;
///     if token != "s3cret" {
///         return Err(Refusal::forbidden("unknown session"));
///     }
///     Ok(Accept::new().with(User("ada".into())))
/// }
/// ```
pub struct Handshake<'a> {
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) peer: SocketAddr,
}

impl<'a> Handshake<'a> {
    /// The request's URI (path and query).
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// Every header of the request.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// One header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// The `Origin` header (browsers always send it).
    pub fn origin(&self) -> Option<&'a str> {
        self.header("origin")
    }

    /// A query parameter's value, as written (not percent-decoded).
    pub fn query(&self, name: &str) -> Option<&'a str> {
        self.uri.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }

    /// A cookie's value, from the `Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.headers
            .get_all("cookie")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|header| header.split(';'))
            .find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key == name).then_some(value)
            })
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

impl fmt::Debug for Handshake<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("uri", &self.uri)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// An accepted handshake, with the per-connection state to start the connection with
/// (read it in handlers with [`Connection::get`](crate::Connection::get)).
#[derive(Debug, Default)]
pub struct Accept {
    pub(crate) state: TypeMap,
}

impl Accept {
    /// Accepts with no state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a per-connection value (one per type).
    pub fn with<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }
}

/// A refused handshake: the HTTP status and a short body for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: String,
}

impl Refusal {
    /// 401 Unauthorized: no or unreadable credentials.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            reason: reason.into(),
        }
    }

    /// 403 Forbidden: credentials that do not allow this.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }
}

/// The authentication hook: sees every handshake on the endpoint's path that passed the
/// origin check.
pub(crate) type Authenticate = dyn Fn(&Handshake<'_>) -> Result<Accept, Refusal> + Send + Sync;

/// The hook as the server stores it.
#[derive(Clone)]
pub(crate) struct AuthHook(pub(crate) std::sync::Arc<Authenticate>);

impl fmt::Debug for AuthHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthHook")
    }
}
